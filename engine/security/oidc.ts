/**
 * OIDC: a JWT from an identity provider (Okta, Auth0, Cognito, Keycloak, ...) verified with jose
 * against the issuer's JWKS: signature, issuer, audience, expiry and not-before, and the
 * algorithms this engine accepts. Only asymmetric algorithms are accepted, so a token signed
 * with `none`, or with HS256 using the public key as the secret, never passes.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { z } from 'zod';
import { ErrorCode, fail } from '../errors.js';

import { IdentityError, IdentityReason, reject } from './identity-error.js';
import { safeClaims, type CheckedToken, type TokenCheck } from './verifier-base.js';
import type { Clock } from '../clock.js';

/** The JWS algorithms that can be listed: asymmetric ones only (see the module comment). */
export const OIDC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
export const DEFAULT_OIDC_ALGORITHMS = ['RS256', 'ES256', 'PS256', 'EdDSA'];

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

const JwksUrl = z.string().refine(
  (s) => {
    try {
      const u = new URL(s);
      return u.protocol === 'https:' || (u.protocol === 'http:' && LOOPBACK.has(u.hostname));
    } catch {
      return false;
    }
  },
  { message: 'jwks must be an https:// URL (http:// only on loopback, for tests) or { keys: [...] }' },
);

const Algorithm = z.string().refine((a) => (OIDC_ALGORITHMS as readonly string[]).includes(a), {
  message: `algorithms: use asymmetric JWS algorithms (${OIDC_ALGORITHMS.join(', ')}); 'none' and HS* cannot be verified against a JWKS of public keys`,
});

const B64URL = /^[A-Za-z0-9_-]+$/;
/** Members each key type needs; a private member (`d`, ...) means a private key was pasted by mistake. */
const JWK_MEMBERS: Record<string, string[]> = { RSA: ['n', 'e'], EC: ['crv', 'x', 'y'], OKP: ['crv', 'x'] };
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];

const PublicJwk = z.looseObject({ kty: z.string() }).superRefine((jwk, ctx) => {
  const members = JWK_MEMBERS[jwk.kty];
  const at = (m: string): unknown => (jwk as Record<string, unknown>)[m];
  if (!members) ctx.addIssue({ code: 'custom', message: `jwks: kty '${jwk.kty}' is not a public signing key type (RSA, EC, OKP)` });
  else if (members.some((m) => typeof at(m) !== 'string' || (m !== 'crv' && !B64URL.test(at(m) as string)))) {
    ctx.addIssue({ code: 'custom', message: `jwks: a ${jwk.kty} key needs ${members.join(', ')} (base64url)` });
  }
  if (PRIVATE_MEMBERS.some((m) => at(m) !== undefined))
    ctx.addIssue({ code: 'custom', message: 'jwks: inline keys must be public keys; this one has private members, so remove it and rotate it' });
});

export const OidcOptionsSchema = z
  .object({
    /** Exactly the `iss` of the provider's tokens, e.g. `https://dev-123.okta.com/oauth2/default`. */
    issuer: z.string().min(1),
    /** The `aud` this engine accepts (a token passes when its `aud` contains one of these). */
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
    /**
     * The claim that carries the audience: `aud` (the standard), or `client_id` for Cognito access
     * tokens, which have no `aud`.
     */
    audienceClaim: z.enum(['aud', 'client_id']).default('aud'),
    /** The provider's JWKS URL (`jwks_uri` of its discovery document), or the keys inline. */
    jwks: z.union([JwksUrl, z.object({ keys: z.array(PublicJwk).min(1) })]),
    algorithms: z.array(Algorithm).min(1).default(DEFAULT_OIDC_ALGORITHMS),
    /** Allowed clock skew for `exp`, `nbf` and `iat`. */
    clockToleranceSec: z.number().int().min(0).max(300).default(30),
    /** Claims that must be present besides `sub`, `iss`, `aud` and `exp`. */
    requiredClaims: z.array(z.string().min(1)).default([]),
    /** After a JWKS fetch, a token with an unknown `kid` refetches only after this long. */
    jwksCooldownMs: z.number().int().min(0).default(30_000),
    jwksTimeoutMs: z.number().int().min(1).max(60_000).default(5_000),
    /** A verified token is reused from the cache for at most this long (and never past `exp`). */
    cacheTtlMs: z.number().int().min(0).default(300_000),
  })
  .strict();

export type OidcOptions = z.input<typeof OidcOptionsSchema>;
export type ResolvedOidcOptions = z.output<typeof OidcOptionsSchema>;

/** The verifier of one issuer: its check, and the issuer it answers for. */
export interface OidcIssuer {
  issuer: string;
  audience: string | string[];
  check: TokenCheck;
}

/**
 * The check of one OIDC issuer. Remote JWKS are fetched lazily on the first token; a fetch that
 * failed is not retried for a second, so a provider outage does not turn every event into a
 * request to it.
 */
export function createOidcIssuer(options: ResolvedOidcOptions, clock: Clock): OidcIssuer {
  const keys = keySet(options);
  let reloadedAtMs = Number.NEGATIVE_INFINITY;
  /** Fetches a remote JWKS again while jose's cooldown would not: true when it did. */
  const reloadForUnknownKid = async (): Promise<boolean> => {
    const remote = keys as Partial<{ coolingDown: boolean; reload(): Promise<void> }>;
    if (typeof remote.reload !== 'function' || !remote.coolingDown || Date.now() - reloadedAtMs < UNKNOWN_KID_RELOAD_MS) return false;
    reloadedAtMs = Date.now();
    await remote.reload();
    return true;
  };
  const requiredClaims = [...new Set(['sub', 'iss', options.audienceClaim, 'exp', ...options.requiredClaims])];
  const algorithms = new Set(options.algorithms);
  const check: TokenCheck = async (token, audience, nowMs) => {
    const header = headerOf(token);
    if (typeof header.alg !== 'string' || !algorithms.has(header.alg)) {
      reject(
        IdentityReason.AlgNotAllowed,
        `alg ${JSON.stringify(header.alg)} is not accepted for issuer '${options.issuer}'; accepted: ${options.algorithms.join(', ')}`,
      );
    }
    let payload: JWTPayload;
    const verify = () =>
      jwtVerify(token, keys, {
        issuer: options.issuer,
        ...(options.audienceClaim === 'aud' ? { audience: audience ?? options.audience } : {}),
        algorithms: options.algorithms,
        clockTolerance: options.clockToleranceSec,
        requiredClaims,
        currentDate: new Date(nowMs),
      });
    try {
      try {
        ({ payload } = await verify());
      } catch (e) {
        // A kid the JWKS fetched within the cooldown does not have: the provider may have just
        // rotated its key. Fetched again, at most once a second (a flood of made-up kids costs
        // one fetch a second), and checked once more.
        if (!(e instanceof errors.JWKSNoMatchingKey) || !(await reloadForUnknownKid())) throw e;
        ({ payload } = await verify());
      }
    } catch (e) {
      throw fromJose(e, options.issuer);
    }
    if (options.audienceClaim === 'client_id') {
      const wanted = [audience ?? options.audience].flat();
      if (typeof payload.client_id !== 'string' || !wanted.includes(payload.client_id)) {
        reject(IdentityReason.WrongAudience, `the token's client_id ${JSON.stringify(payload.client_id)} is not this engine's audience`);
      }
    }
    if (typeof payload.sub !== 'string' || payload.sub.length === 0)
      reject(IdentityReason.InvalidClaim, `the token of issuer '${options.issuer}' has no string 'sub'`);
    const expiresAt = payload.exp! * 1000;
    const result: CheckedToken = {
      identity: { method: 'oidc', subject: payload.sub, issuer: options.issuer, claims: safeClaims(payload), expiresAt },
      cacheUntilMs: Math.min(expiresAt, clock.now() + options.cacheTtlMs),
    };
    return result;
  };
  return { issuer: options.issuer, audience: options.audience, check };
}

/**
 * Picks the issuer of a token by its (not yet verified) `iss`; the chosen issuer's check then
 * verifies everything, `iss` included.
 */
export function oidcCheck(issuers: OidcIssuer[]): TokenCheck {
  const byIssuer = new Map(issuers.map((i) => [i.issuer, i]));
  return async (token, audience, nowMs) => {
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch (e) {
      reject(IdentityReason.Malformed, 'the JWT does not decode (expected base64url header.payload.signature with JSON inside)', { cause: e });
    }
    const issuer = typeof iss === 'string' ? byIssuer.get(iss) : undefined;
    if (!issuer) {
      reject(IdentityReason.WrongIssuer, `issuer ${JSON.stringify(iss)} is not configured; configured: ${[...byIssuer.keys()].join(', ')}`);
    }
    return issuer.check(token, audience, nowMs);
  };
}

function headerOf(token: string): Record<string, unknown> {
  try {
    return decodeProtectedHeader(token) as Record<string, unknown>;
  } catch (e) {
    reject(IdentityReason.Malformed, 'the JWT header does not decode', { cause: e });
  }
}

/** Least time between two fetches of a JWKS for tokens whose kid it did not have. */
const UNKNOWN_KID_RELOAD_MS = 1_000;

function keySet(options: ResolvedOidcOptions): JWTVerifyGetKey {
  if (typeof options.jwks !== 'string') {
    try {
      return createLocalJWKSet(options.jwks as Parameters<typeof createLocalJWKSet>[0]);
    } catch (e) {
      fail(ErrorCode.InvalidOptions, `identity.oidc: the inline jwks of issuer '${options.issuer}' is not a valid JWKS: ${(e as Error).message}`, { cause: e });
    }
  }
  let failedAtMs = Number.NEGATIVE_INFINITY;
  const backoffMs = Math.min(1_000, options.jwksCooldownMs);
  return createRemoteJWKSet(new URL(options.jwks), {
    cooldownDuration: options.jwksCooldownMs,
    timeoutDuration: options.jwksTimeoutMs,
    [customFetch]: async (url, init) => {
      if (Date.now() - failedAtMs < backoffMs) throw new Error(`the last fetch of ${url} failed less than ${backoffMs} ms ago`);
      try {
        const res = await fetch(url, init);
        if (res.status !== 200) failedAtMs = Date.now();
        return res;
      } catch (e) {
        failedAtMs = Date.now();
        throw e;
      }
    },
  });
}

/** Maps a jose failure to a reason; anything that is not jose's came from fetching the JWKS. */
function fromJose(e: unknown, issuer: string): IdentityError {
  if (e instanceof IdentityError) return e;
  const cause = { cause: e };
  if (e instanceof errors.JWTExpired)
    return new IdentityError(IdentityReason.Expired, `the token expired (exp ${claim(e.payload.exp)}); get a fresh one`, cause);
  if (e instanceof errors.JWTClaimValidationFailed) {
    if (e.claim === 'nbf')
      return new IdentityError(IdentityReason.NotYetValid, `the token is not valid before ${claim(e.payload.nbf)}; check the clocks`, cause);
    if (e.claim === 'aud')
      return new IdentityError(IdentityReason.WrongAudience, `the token's aud ${JSON.stringify(e.payload.aud)} is not this engine's audience`, cause);
    if (e.claim === 'iss') return new IdentityError(IdentityReason.WrongIssuer, `the token's iss ${JSON.stringify(e.payload.iss)} is not '${issuer}'`, cause);
    if (e.reason === 'missing') return new IdentityError(IdentityReason.MissingClaim, `the token has no '${e.claim}' claim, which is required`, cause);
    return new IdentityError(IdentityReason.InvalidClaim, `the token's '${e.claim}' claim is not valid: ${e.message}`, cause);
  }
  if (e instanceof errors.JOSEAlgNotAllowed)
    return new IdentityError(IdentityReason.AlgNotAllowed, `the token's alg is not accepted for issuer '${issuer}'`, cause);
  if (e instanceof errors.JWSSignatureVerificationFailed)
    return new IdentityError(IdentityReason.BadSignature, `the signature does not verify with the key of issuer '${issuer}'`, cause);
  if (e instanceof errors.JWKSNoMatchingKey || e instanceof errors.JWKSMultipleMatchingKeys) {
    return new IdentityError(IdentityReason.UnknownKey, `no single key of issuer '${issuer}' matches the token's kid and alg`, cause);
  }
  if (e instanceof errors.JWKSTimeout) return new IdentityError(IdentityReason.JwksUnreachable, `fetching the JWKS of issuer '${issuer}' timed out`, cause);
  if (e instanceof errors.JWKSInvalid || e instanceof errors.JWKInvalid) {
    return new IdentityError(IdentityReason.JwksUnreachable, `the JWKS of issuer '${issuer}' is not valid: ${(e as Error).message}`, cause);
  }
  if (e instanceof errors.JWSInvalid || e instanceof errors.JWTInvalid || e instanceof errors.JOSENotSupported) {
    return new IdentityError(IdentityReason.Malformed, `the JWT is not valid: ${(e as Error).message}`, cause);
  }
  // jose's generic error is a non-200 JWKS response; anything else is fetch failing.
  return new IdentityError(
    IdentityReason.JwksUnreachable,
    `the JWKS of issuer '${issuer}' could not be fetched: ${e instanceof Error ? e.message : String(e)}`,
    cause,
  );
}

function claim(v: unknown): string {
  return typeof v === 'number' ? new Date(v * 1000).toISOString() : JSON.stringify(v);
}
