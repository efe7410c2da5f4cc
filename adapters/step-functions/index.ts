/** jetstate/adapters/step-functions: AWS Step Functions for jetstate. Needs `@aws-sdk/client-sfn` (and `@aws-sdk/credential-providers` for roles). */
export * from './payload.js';
export * from './clients.js';
export * from './nats-service.js';
export * from './callback.js';
export * from './activity-bridge.js';
export * from './trigger.js';
export * from './execution.js';
export * from './workflow-answer.js';
