/**
 * NATS outcomes the engine decides on, by JetStream API error code (never by error text):
 * compare-and-set conflicts, missing streams and messages, names already taken, and requests
 * nobody answered.
 */
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { errors as coreErrors, PermissionViolationError, RequestError } from '@nats-io/nats-core';

/** JetStream API error codes the engine decides on (see nats-server's errors.json). */
export const ApiCode = {
  ...JetStreamApiCodes,
  /** Stream name already in use with a different configuration. */
  StreamNameExist: 10058,
  /** Consumer name already in use. */
  ConsumerNameExist: 10148,
  ConsumerAlreadyExists: 10105,
  /** Stream subjects overlap with another stream. */
  StreamSubjectOverlap: 10065,
  /** The stream or consumer has no leader right now (an election is under way). */
  ClusterNotAvailable: 10008,
  ClusterNoPeers: 10005,
  StreamNotMatch: 10060,
  /** The stream could not store a message (full at its limits, a message too large for it, ...). */
  StreamStoreFailed: 10077,
} as const;

function apiCode(e: unknown): number | undefined {
  for (let c = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) {
    if (c instanceof JetStreamApiError) return c.code;
  }
  return undefined;
}

/**
 * A stream full at its limits with `discard: new` ("maximum messages exceeded", "maximum bytes
 * exceeded"): room may come back. Not the other failures nats-server reports under the same code
 * (a message too large, too many messages for one subject).
 */
export function isStreamFull(e: unknown): boolean {
  for (let c = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) {
    if (c instanceof JetStreamApiError) return c.code === ApiCode.StreamStoreFailed && /maximum (messages|bytes) exceeded/.test(c.message);
  }
  return false;
}

/** A failure that waiting may end (an election, a restart, a stream full for now): a store worth asking again. */
export function mayStoreLater(e: unknown): boolean {
  return isTransient(e) || isStreamFull(e);
}

/** A compare-and-set write that lost: someone else wrote first (or created the key). */
export function isCasConflict(e: unknown): boolean {
  const code = apiCode(e);
  return code === ApiCode.StreamWrongLastSequence || code === ApiCode.StreamWrongLastSequenceUnknown;
}

export function isStreamNotFound(e: unknown): boolean {
  return apiCode(e) === ApiCode.StreamNotFound;
}

export function isConsumerNotFound(e: unknown): boolean {
  return apiCode(e) === ApiCode.ConsumerNotFound;
}

export function isMessageNotFound(e: unknown): boolean {
  return apiCode(e) === ApiCode.NoMessageFound;
}

/** Creating something that another process created first. */
export function isAlreadyExists(e: unknown): boolean {
  const code = apiCode(e);
  return code === ApiCode.StreamNameExist || code === ApiCode.ConsumerNameExist || code === ApiCode.ConsumerAlreadyExists;
}

/**
 * Nobody answered: no stream takes the subject (or JetStream is not there), or a cluster is
 * between leaders. nats.js reports a publish nobody answered as "jetstream is not enabled".
 */
export function isNoResponders(e: unknown): boolean {
  for (let c = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) {
    if (c instanceof coreErrors.NoRespondersError) return true;
    if (c instanceof RequestError && c.isNoResponders()) return true;
    if (c.name === 'JetStreamNotEnabled') return true;
  }
  return false;
}

/** A request that got no answer in time (itself or a cause). */
export function isTimeout(e: unknown): boolean {
  for (let c = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) if (c instanceof coreErrors.TimeoutError) return true;
  return false;
}

/** A request that timed out, or failed because the connection is down or reconnecting. */
export function isTransient(e: unknown): boolean {
  if (isNoResponders(e)) return true;
  for (let c = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) {
    if (c instanceof coreErrors.TimeoutError || c instanceof coreErrors.ConnectionError || c instanceof coreErrors.ClosedConnectionError) return true;
    const code = apiCode(c);
    if (code === ApiCode.ClusterNotAvailable || code === ApiCode.ClusterNoPeers) return true;
  }
  return false;
}

/** The NATS permission violation behind `e` (itself or a cause), if there is one. */
export function permissionViolation(e: unknown): PermissionViolationError | undefined {
  for (let c = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) {
    if (c instanceof PermissionViolationError) return c;
  }
  return undefined;
}
