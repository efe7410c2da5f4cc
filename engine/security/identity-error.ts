/**
 * Why a token was refused. Every failure of an identity verifier is an {@link IdentityError}: a
 * {@link JetstateError} with code `UNAUTHENTICATED` and a stable `reason`, so the engine can
 * answer the sender and record the denial without parsing messages. Kept apart from identity.ts
 * so that oidc.ts and aws-iam.ts can use it without an import cycle.
 */
import { ErrorCode, JetstateError } from '../errors.js';

/** The reason codes of a refused token; the docs (SECURITY.md, "Identity") say what each means. */
export const IdentityReason = {
  /** Not a token of a known shape, or a part of it does not decode. */
  Malformed: 'identity.malformed',
  /** Longer than `maxTokenBytes`; refused before any parsing. */
  TooLarge: 'identity.too_large',
  /** The token is of a kind (OIDC or AWS IAM) this engine was not configured for. */
  MethodNotConfigured: 'identity.method_not_configured',
  Expired: 'identity.expired',
  NotYetValid: 'identity.not_yet_valid',
  BadSignature: 'identity.bad_signature',
  WrongAudience: 'identity.wrong_audience',
  WrongIssuer: 'identity.wrong_issuer',
  AlgNotAllowed: 'identity.alg_not_allowed',
  /** No key of the issuer's JWKS has the token's `kid` (after a refetch, when the cooldown allowed one). */
  UnknownKey: 'identity.unknown_key',
  MissingClaim: 'identity.missing_claim',
  InvalidClaim: 'identity.invalid_claim',
  /** The issuer's JWKS could not be fetched or parsed; retry later. */
  JwksUnreachable: 'identity.jwks_unreachable',
  /** STS answered the replayed GetCallerIdentity with an error; `stsCode` has its code. */
  StsRejected: 'identity.sts_rejected',
  /** STS could not be reached in time, or answered with a server error; retry later. */
  StsUnreachable: 'identity.sts_unreachable',
  /** An unexpected failure inside the verifier (a bug); `cause` has the original error. */
  Internal: 'identity.internal',
} as const;
export type IdentityReason = (typeof IdentityReason)[keyof typeof IdentityReason];

/** Reasons that say nothing about the token itself: the same token may pass later. */
const RETRYABLE: ReadonlySet<IdentityReason> = new Set([IdentityReason.JwksUnreachable, IdentityReason.StsUnreachable]);

/**
 * A refused token. `reason` is stable; `retryable` is true when the failure was the issuer's or
 * STS's (unreachable), not the token's; `stsCode` is STS's error code for `identity.sts_rejected`.
 *
 * @example
 * ```ts
 * try { await verifier.verify(token); }
 * catch (e) { if (e instanceof IdentityError && e.reason === IdentityReason.Expired) { ... } }
 * ```
 */
export class IdentityError extends JetstateError {
  readonly reason: IdentityReason;
  readonly retryable: boolean;
  readonly stsCode: string | undefined;
  constructor(reason: IdentityReason, message: string, options?: ErrorOptions & { stsCode?: string; retryable?: boolean }) {
    super(ErrorCode.Unauthenticated, `${reason}: ${message}`, options);
    this.reason = reason;
    this.retryable = options?.retryable ?? RETRYABLE.has(reason);
    this.stsCode = options?.stsCode;
  }
}

/** Throws an {@link IdentityError}; a one-liner for guard clauses. */
export function reject(reason: IdentityReason, message: string, options?: ErrorOptions & { stsCode?: string; retryable?: boolean }): never {
  throw new IdentityError(reason, message, options);
}

export function isIdentityError(e: unknown): e is IdentityError {
  return e instanceof IdentityError;
}
