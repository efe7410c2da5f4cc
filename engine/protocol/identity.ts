/**
 * Who sent an event, as the history records it and guards see it (`event.$identity`): never
 * the token, never the claims. Only the engine sets it, from a verified token (or 'engine' for
 * an event another instance sent); a `$identity` in a sender's payload is removed.
 */

export interface IdentitySummary {
  method: string;
  subject: string;
  issuer: string;
  roles: string[];
}

/** The key guards read the identity from; reserved in every payload. */
export const IDENTITY_FIELD = '$identity';

/** The identity of events that engines send themselves (sends between instances, child results). */
export const ENGINE_IDENTITY: IdentitySummary = Object.freeze({
  method: 'engine',
  subject: 'jetstate-engine',
  issuer: 'jetstate',
  roles: [] as string[],
}) as IdentitySummary;

/**
 * The verified sender of an event, as guards and actions see it (`event.$identity`): method,
 * subject, issuer and roles; undefined for an anonymous event. An event sent by another instance
 * of the namespace has method 'engine'.
 *
 * @example
 * ```ts
 * guard: ({ event }) => identityOf(event)?.roles.includes('approver') === true
 * ```
 */
export function identityOf(event: unknown): IdentitySummary | undefined {
  const i = (event as { $identity?: IdentitySummary } | null)?.$identity;
  return i && typeof i.subject === 'string' ? i : undefined;
}
