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
  Timeout: 'TIMEOUT',
  Closed: 'CLOSED',
  /** A token was missing, malformed, expired or not trusted; `reason` on the error says which. */
  Unauthenticated: 'UNAUTHENTICATED',
  /** A verified sender lacks the role or passes no predicate the workflow's `permissions` require. */
  PermissionDenied: 'PERMISSION_DENIED',
  /** An event, a record or a rate is over a configured limit; nothing was written. */
  LimitExceeded: 'LIMIT_EXCEEDED',
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
  override readonly name = 'JetstateError';
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
