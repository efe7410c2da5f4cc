/**
 * Error codes of jetstate. Every error thrown by the library is a {@link JetstateError} whose
 * `code` is one of these, so callers can branch on it without parsing messages.
 */
export const ErrorCode = {
  InvalidDefinition: 'INVALID_DEFINITION',
  InvalidOptions: 'INVALID_OPTIONS',
  InvalidInput: 'INVALID_INPUT',
  InvalidEvent: 'INVALID_EVENT',
  InvalidId: 'INVALID_ID',
  InstanceNotFound: 'INSTANCE_NOT_FOUND',
  InstanceConflict: 'INSTANCE_CONFLICT',
  WorkflowNotRegistered: 'WORKFLOW_NOT_REGISTERED',
  RecordUnreadable: 'RECORD_UNREADABLE',
  LayoutMismatch: 'LAYOUT_MISMATCH',
  /** A client named a JetStream domain in which the namespace does not exist (nothing was created). */
  NamespaceNotFound: 'NAMESPACE_NOT_FOUND',
  Timeout: 'TIMEOUT',
  Closed: 'CLOSED',
  /** A token was missing, malformed, expired or not trusted; `reason` on the error says which. */
  Unauthenticated: 'UNAUTHENTICATED',
  /** A verified sender lacks the role or passes no predicate the workflow's `permissions` require. */
  PermissionDenied: 'PERMISSION_DENIED',
  /** An event, a record or a rate is over a configured limit; nothing was written. */
  LimitExceeded: 'LIMIT_EXCEEDED',
  /** No engine serves the workflow in this namespace (its events streams do not exist). */
  NotServed: 'NOT_SERVED',
  /** An idempotency key is already taken by a different message. */
  DuplicateConflict: 'DUPLICATE_CONFLICT',
  /** An activity gave up: a `TerminalError`, no retries. */
  TaskFailed: 'TASK_FAILED',
  /** A compare-and-set write lost to another writer (the engine reloads and recomputes). */
  Conflict: 'CONFLICT',
  /** Something the engine waits for is not there yet (retried, logged at debug). */
  NotYet: 'NOT_YET',
  /** The operation was cancelled (its state was exited, or the engine is closing). */
  Cancelled: 'CANCELLED',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * The one error class of jetstate. `message` names the thing and says the fix; `code` is stable.
 *
 * @example
 * ```ts
 * try { await client.send(order, 'o-1', { type: 'PAY', amount: 'x' }); }
 * catch (e) { if (e instanceof JetstateError && e.code === ErrorCode.InvalidEvent) { ... } }
 * ```
 */
export class JetstateError extends Error {
  override name = 'JetstateError';
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** Throws a {@link JetstateError}; a one-liner for guard clauses. */
export function fail(code: ErrorCode, message: string, options?: ErrorOptions): never {
  throw new JetstateError(code, message, options);
}

/** A compare-and-set write lost: someone else wrote the key first. */
export class ConflictError extends JetstateError {
  constructor(key: string, options?: ErrorOptions) {
    super(ErrorCode.Conflict, `'${key}' was written by someone else first; reload and recompute`, options);
  }
}

/**
 * A key ring that lacks the key a value was sealed with (`keyId`; the value itself may be fine):
 * an engine with that key can open it.
 */
export class MissingKeyError extends JetstateError {
  constructor(
    message: string,
    readonly keyId: string,
  ) {
    super(ErrorCode.RecordUnreadable, message);
  }
}

/**
 * A value at a secret path to seal, and no key ring in this process (a workflow's secrets reach
 * it through a send to another service's workflow, or inherited from a parent): an engine holds
 * what needs it, warned, until it is restarted with the ring.
 */
export class KeyRingMissingError extends JetstateError {
  constructor(message: string) {
    super(ErrorCode.InvalidOptions, message);
  }
}

/**
 * An instance that this engine cannot move now and that must not be retried in a loop: its events
 * wait in the stream (the instance is parked, with this message) until an engine that can apply
 * them owns its partition.
 */
export class BlockedError extends JetstateError {
  constructor(message: string) {
    super(ErrorCode.NotYet, message);
  }
}

/** An expected, short wait (e.g. a record not written yet); the caller retries. */
export class NotYetError extends JetstateError {
  constructor(message: string) {
    super(ErrorCode.NotYet, message);
  }
}

/** Aborts work whose reason went away: the invoking state was exited, or the engine is closing. */
export class CancelledError extends JetstateError {
  constructor(message: string) {
    super(ErrorCode.Cancelled, message);
  }
}
