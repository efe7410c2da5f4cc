/**
 * Identity at the event layer: who sent an event, proven by a token that came with it. An engine
 * builds one {@link IdentityVerifier} from its `identity` option and calls it for each event
 * that carries a token. The token's shape picks the method: a JWT (three base64url parts) is
 * checked as OIDC against the issuer's JWKS, an `aws-iam:` token by replaying the presigned STS
 * GetCallerIdentity request inside it. Verified identities are cached by token hash until they
 * expire, so the hot path is a hash and a map lookup.
 */
import { z } from 'zod';
import { ErrorCode, fail } from '../errors.js';

import { AWS_IAM_TOKEN_PREFIX, AwsIamOptionsSchema, awsIamCheck } from './aws-iam.js';
import { IdentityReason, reject } from './identity-error.js';
import { createOidcIssuer, oidcCheck, OidcOptionsSchema } from './oidc.js';
import { RoleMappingSchema } from './roles.js';
import { IdentityCache, verifierFrom, type TokenCheck } from './verifier-base.js';
import { systemClock, type Clock } from '../clock.js';

export type { Identity, IdentityVerifier, VerifyContext } from './identity-types.js';
import type { Identity, IdentityVerifier } from './identity-types.js';

export const IdentityOptionsSchema = z
  .object({
    /** One OIDC issuer, or several (a token goes to the one named by its `iss`). */
    oidc: z.union([OidcOptionsSchema, z.array(OidcOptionsSchema).min(1)]).optional(),
    awsIam: AwsIamOptionsSchema.optional(),
    roles: RoleMappingSchema.optional(),
    /** Verified identities kept in memory, least recently used dropped first; 0 disables the cache. */
    cacheMaxEntries: z.number().int().min(0).max(1_000_000).default(10_000),
    /** Longer tokens are refused before any parsing. */
    maxTokenBytes: z.number().int().min(256).max(1_048_576).default(16_384),
  })
  .strict()
  .refine((o) => o.oidc !== undefined || o.awsIam !== undefined, { message: "identity: configure 'oidc', 'awsIam' or both" })
  .refine(
    (o) => {
      const issuers = o.oidc === undefined ? [] : Array.isArray(o.oidc) ? o.oidc.map((i) => i.issuer) : [o.oidc.issuer];
      return new Set(issuers).size === issuers.length;
    },
    { message: 'identity.oidc: each issuer may appear once; put several audiences in one entry instead' },
  );

export type IdentityOptions = z.input<typeof IdentityOptionsSchema>;
export type ResolvedIdentityOptions = z.output<typeof IdentityOptionsSchema>;

/** Three base64url parts (the third empty only in an unsigned token, which OIDC then refuses). */
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Which method a token's shape says it is for, or null when it is neither. */
export function tokenMethod(token: string): Identity['method'] | null {
  if (token.startsWith(AWS_IAM_TOKEN_PREFIX)) return 'aws-iam';
  if (JWT_SHAPE.test(token)) return 'oidc';
  return null;
}

/**
 * Builds the verifier of an engine from its `identity` option. Invalid options throw a
 * `JetstateError` with code `INVALID_OPTIONS` here, once; remote JWKS are fetched on first use.
 *
 * @example
 * ```ts
 * const verifier = createIdentityVerifier({
 *   oidc: { issuer: 'https://auth.example.com/realms/shop', audience: 'jetstate',
 *           jwks: 'https://auth.example.com/realms/shop/protocol/openid-connect/certs' },
 *   roles: { claims: [{ claim: 'realm_access.roles', prefix: 'role:' }] },
 * });
 * const who = await verifier.verify(token); // { method: 'oidc', subject, roles: ['role:billing'], ... }
 * ```
 */
export function createIdentityVerifier(options: IdentityOptions, deps: { clock?: Clock } = {}): IdentityVerifier {
  const parsed = IdentityOptionsSchema.safeParse(options ?? {});
  if (!parsed.success) fail(ErrorCode.InvalidOptions, `identity options are not valid:\n${z.prettifyError(parsed.error)}`);
  const resolved = parsed.data;
  const clock = deps.clock ?? systemClock;
  const cache = new IdentityCache(resolved.cacheMaxEntries);
  const base = { roles: resolved.roles, cache, clock, maxTokenBytes: resolved.maxTokenBytes };

  const oidcOptions = resolved.oidc === undefined ? [] : Array.isArray(resolved.oidc) ? resolved.oidc : [resolved.oidc];
  const oidc = oidcOptions.length > 0 ? verifierFrom(oidcCheck(oidcOptions.map((o) => createOidcIssuer(o, clock))), { ...base, cacheScope: 'oidc' }) : null;
  const aws = resolved.awsIam
    ? verifierFrom(awsIamCheck(resolved.awsIam, clock) satisfies TokenCheck, { ...base, cacheScope: 'aws-iam', defaultAudience: resolved.awsIam.audience })
    : null;

  return {
    async verify(token, context) {
      if (typeof token !== 'string' || token.length === 0) reject(IdentityReason.Malformed, 'no token: send the token string itself');
      if (token.length > resolved.maxTokenBytes) {
        reject(IdentityReason.TooLarge, `the token has ${token.length} characters, more than maxTokenBytes (${resolved.maxTokenBytes})`);
      }
      const method = tokenMethod(token);
      if (method === null) reject(IdentityReason.Malformed, `the token is neither a JWT (header.payload.signature) nor an '${AWS_IAM_TOKEN_PREFIX}' token`);
      const verifier = method === 'oidc' ? oidc : aws;
      if (!verifier)
        reject(
          IdentityReason.MethodNotConfigured,
          `this engine does not accept ${method === 'oidc' ? 'OIDC' : 'AWS IAM'} tokens; configure identity.${method === 'oidc' ? 'oidc' : 'awsIam'}`,
        );
      return verifier.verify(token, context);
    },
  };
}
