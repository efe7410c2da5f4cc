/** jetstate: durable XState v5 workflows on NATS JetStream. The public API. */
export { defineWorkflow, isWorkflowDefinition } from './define/definition.js';
export type { WorkflowDefinition, WorkflowOptions, WorkflowEvent, WorkflowInput, SchemaLike } from './define/definition.js';
export { eventsOf, inputOf } from './define/event-types.js';
export type { EventsFrom, RecordedEventsFrom } from './define/event-types.js';
export type {
  ContextOf,
  StateValueOf,
  OutputOf,
  TagOf,
  EventOf,
  WorkflowInstance,
  WorkflowHistoryEntry,
  WorkflowHistoryEvent,
  StartEventOf,
  EngineHistoryEvent,
  StopEvent,
} from './define/instance-types.js';
export type { TimerFireEvent, TaskResultEvent, ChildResultEvent, SelfEvent, FailEvent } from './protocol/events.js';
export { createClient, Client } from './client.js';
export type { StartOptions, SendOptions, SendResult, ControlOptions, ListFilter, WaitForOptions, DeadLetter } from './client.js';
export type { ReencryptReport } from './store/reencrypt.js';
export { createEngine, Engine } from './engine.js';
export type { EngineStatus } from './engine.js';
export { ErrorCode, JetstateError } from './errors.js';
export { InstanceStatus, HistoryKind } from './protocol/record.js';
export type { Instance, HistoryEntry, TypedHistoryEntry, StateMatch, InstanceRecord } from './protocol/record.js';
export type { ClientOptions, EngineOptions } from './options.js';
export type { Logger } from './logger.js';
export type { VerifyReport } from './step/verify.js';
export { partitionOf } from './protocol/names.js';
export { systemClock } from './clock.js';
export { activity, TerminalError } from './define/activity.js';
export { sendToInstance } from './define/messages.js';
export { childWorkflow } from './define/child.js';
export type { InstanceAddress } from './define/messages.js';
export type { ActivityOptions, ActivityContext, ActivityFunction, RetryPolicy } from './define/activity.js';
export type { Clock } from './clock.js';
export { DEFER } from './define/extension.js';
export type { DeadLetterInput, EngineExtension, ExtensionHost, TaskRef, TaskOutcome } from './define/extension.js';
export type { TraceCarrier, TelemetryOptions } from './telemetry/telemetry.js';
export { createIdentityVerifier, IdentityOptionsSchema } from './security/identity.js';
export type { Identity, IdentityVerifier, IdentityOptions } from './security/identity.js';
export { IdentityError, IdentityReason } from './security/identity-error.js';
export { createAwsIamToken } from './security/aws-iam.js';
export { permits, rolesFor } from './security/roles.js';
export type { PermissionRule, RoleMapping } from './security/roles.js';
export { createKeyRing, keyRingFromEnv, KeyRing, isSealed } from './security/secrets.js';
export type { KeyRingOptions, SealedValue } from './security/secrets.js';
export { identityOf } from './protocol/identity.js';
export type { IdentitySummary } from './protocol/identity.js';
export type { NatsAuthOptions } from './security/credentials.js';
export type { Permissions, WorkflowLimits } from './define/definition.js';
