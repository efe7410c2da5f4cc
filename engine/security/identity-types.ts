/** What a verified sender is and what verifies one (kept apart so the verifiers import no verifier). */

/** A verified sender. Frozen; `claims` is plain JSON data that guards and permissions may read. */
export interface Identity {
  method: 'oidc' | 'aws-iam';
  /** OIDC `sub`, or the AWS principal ARN (`arn:aws:sts::<acct>:assumed-role/<role>/<session>`). */
  subject: string;
  /** OIDC `iss`, or `'aws-iam'`. */
  issuer: string;
  /** From the role mapping (roles.ts). */
  roles: string[];
  /** OIDC: the token's claims. AWS IAM: `arn`, `account`, `userId`, `principalType`, and for an assumed role `roleArn`, `roleName`, `sessionName`. */
  claims: Record<string, unknown>;
  /** Epoch ms when the token stops being valid. */
  expiresAt?: number;
}

export interface VerifyContext {
  /** The audience this call requires instead of the configured one (e.g. one per workflow). */
  audience?: string;
  /**
   * The time (epoch ms) to judge expiry and not-before at, instead of now. The engine passes the
   * time the stream accepted the event, so an event that waited in a backlog (no engine running,
   * a slow partition) is judged as it was when it was sent, and judged the same when it is read
   * again. The stream sets that time, not the sender. An AWS IAM token is still replayed to STS,
   * which checks its signature's age itself (at most 15 minutes).
   */
  atMs?: number;
}

/**
 * Checks a token and says who sent it. `verify` rejects only with an `IdentityError` (a
 * `JetstateError` with code `UNAUTHENTICATED` and a `reason`); it never throws synchronously.
 */
export interface IdentityVerifier {
  verify(token: string, context?: VerifyContext): Promise<Identity>;
}
