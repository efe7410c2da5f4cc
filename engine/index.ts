/** jetstate: durable XState v5 workflows on NATS JetStream. The public API. */
export { defineWorkflow, isWorkflowDefinition } from './definition.js';
export type { WorkflowDefinition, WorkflowOptions, WorkflowEvent, WorkflowInput, SchemaLike } from './definition.js';
export { createClient, Client } from './client.js';
export type { StartOptions, SendOptions, SendResult, ListFilter, WaitForOptions } from './client.js';
export { createEngine, Engine } from './engine.js';
export type { EngineStatus } from './engine.js';
export { ErrorCode, JetstateError } from './errors.js';
export { InstanceStatus, HistoryKind } from './record.js';
export type { Instance, HistoryEntry, InstanceRecord } from './record.js';
export type { ClientOptions, EngineOptions, Logger } from './options.js';
export type { VerifyReport } from './verify.js';
export { partitionOf } from './names.js';
export { systemClock } from './timers.js';
export { activity, TerminalError } from './activity.js';
export { sendToInstance } from './messages.js';
export type { InstanceAddress } from './messages.js';
export type { ActivityOptions, ActivityContext, ActivityFunction, RetryPolicy } from './activity.js';
export type { Clock } from './timers.js';
