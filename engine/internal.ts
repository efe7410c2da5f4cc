/**
 * The internal barrel: what the adapters, the CLI and the tests use of the engine beyond the
 * public API. Not part of the package's exports; nothing here is promised to users.
 */
export * from './index.js';
export { fail } from './errors.js';
export { consoleLogger } from './logger.js';
export { parseOptions } from './options.js';
export { canonicalJson, decodeJson, digest, encodeJson, shortHash } from './protocol/json.js';
export { layout, parseEventSubject, partitionOf, LAYOUT_VERSION, type Layout } from './protocol/names.js';
export { isCasConflict, isMessageNotFound, isStreamNotFound, isAlreadyExists, isNoResponders, permissionViolation } from './store/nats-errors.js';
export { ensureRelayStream } from './store/runtime.js';
export { EngineEvent, type ParentRef } from './protocol/events.js';
export { TOKEN_HEADER, SIGNATURE_HEADER, SIGNED_AT_HEADER, MSG_ID_HEADER } from './protocol/headers.js';
export { taskRefKey } from './effects/extension-host.js';
export { carrierFromHeaders, contextOf, failSpan } from './telemetry/telemetry.js';
export { redactPaths, redactEnvelopes } from './security/redact.js';
export { readSubject } from './store/read.js';
export { MachineRunner } from './step/runner.js';
export { applyEvents, startInstance } from './step/step.js';
export { verifyInstance } from './step/verify.js';
export { checkEvent, checkInput } from './gate/validate.js';
export { closeConnection } from './store/runtime.js';
export { BornSchema } from './protocol/record.js';
