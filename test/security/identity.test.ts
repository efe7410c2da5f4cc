/**
 * OIDC identity with real crypto: keys from jose, a JWKS served over HTTP on loopback, tokens
 * shaped like Keycloak's, Cognito's, Okta's and Auth0's, and the attacks a verifier must refuse.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { ErrorCode, JetstateError } from '../../engine/errors.js';
import { IdentityError, IdentityReason } from '../../engine/security/identity-error.js';
import { createIdentityVerifier, type IdentityOptions, type IdentityVerifier } from '../../engine/security/identity.js';
import { startJwksServer, type JwksServer } from './jwks-server.js';

const ISSUER = 'https://auth.example.test/realms/shop';
const AUDIENCE = 'jetstate-orders';

interface Signer {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  jwk: JWK;
}

async function signer(kid: string, alg = 'RS256'): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicKey, jwk };
}

const nowSec = (): number => Math.floor(Date.now() / 1000);

async function token(s: Signer, claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub: 'user-1', iat: nowSec(), exp: nowSec() + 600, ...claims })
    .setProtectedHeader({ alg: s.alg, kid: s.kid, typ: 'JWT', ...header })
    .sign(s.privateKey);
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

async function refused(p: Promise<unknown>, reason: IdentityReason): Promise<IdentityError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof IdentityError, `expected an IdentityError, got ${String(e)}`);
    assert.ok(e instanceof JetstateError);
    assert.equal(e.code, ErrorCode.Unauthenticated);
    assert.equal(e.reason, reason, e.message);
    assert.ok(e.message.startsWith(`${reason}: `));
    return e;
  }
  assert.fail(`expected ${reason}, but the token was accepted`);
}

describe('OIDC identity', () => {
  let jwks: JwksServer;
  let rsa: Signer;
  let ec: Signer;
  let ed: Signer;
  let verifier: IdentityVerifier;
  const options = (extra: Partial<Exclude<IdentityOptions['oidc'], unknown[] | undefined>> = {}): IdentityOptions => ({
    oidc: { issuer: ISSUER, audience: AUDIENCE, jwks: jwks.url, ...extra },
    roles: {
      claims: [
        { claim: 'realm_access.roles', prefix: 'role:' },
        { claim: 'resource_access.jetstate-orders.roles', prefix: 'orders:' },
        { claim: 'cognito:groups', values: { admins: ['role:admin'], billing: ['role:billing'] } },
        { claim: 'https://jetstate.example/roles', prefix: 'role:' },
        { claim: 'groups', values: { 'Everyone-Billing': ['role:billing'] } },
      ],
      subjects: { 'auth0|42': ['role:owner'] },
    },
  });

  before(async () => {
    [rsa, ec, ed] = await Promise.all([signer('rsa-1'), signer('ec-1', 'ES256'), signer('ed-1', 'EdDSA')]);
    jwks = await startJwksServer([rsa.jwk, ec.jwk, ed.jwk]);
    verifier = createIdentityVerifier(options());
  });
  after(() => jwks.close());

  it('maps Keycloak realm and client roles', async () => {
    const t = await token(rsa, { realm_access: { roles: ['billing', 'offline_access'] }, resource_access: { 'jetstate-orders': { roles: ['refund'] } } });
    const who = await verifier.verify(t);
    assert.equal(who.method, 'oidc');
    assert.equal(who.subject, 'user-1');
    assert.equal(who.issuer, ISSUER);
    assert.deepEqual(who.roles, ['role:billing', 'role:offline_access', 'orders:refund']);
    assert.equal(who.expiresAt! % 1000, 0);
    assert.ok(Object.isFrozen(who) && Object.isFrozen(who.claims) && Object.isFrozen(who.roles));
  });

  it('maps Cognito groups through a value table (unlisted groups give no role)', async () => {
    const t = await token(ec, { 'cognito:groups': ['admins', 'interns'], token_use: 'access' });
    assert.deepEqual((await verifier.verify(t)).roles, ['role:admin']);
  });

  it('checks the client_id of Cognito access tokens, which have no aud', async () => {
    const cognito = createIdentityVerifier({
      oidc: { issuer: ISSUER, audience: '7abc1client', audienceClaim: 'client_id', jwks: { keys: [rsa.jwk as { kty: string }] } },
      roles: { claims: [{ claim: 'cognito:groups', prefix: 'role:' }] },
    });
    const access = { aud: undefined, client_id: '7abc1client', token_use: 'access', 'cognito:groups': ['billing'] };
    assert.deepEqual((await cognito.verify(await token(rsa, access))).roles, ['role:billing']);
    await refused(cognito.verify(await token(rsa, { ...access, client_id: 'other-client' })), IdentityReason.WrongAudience);
    await refused(cognito.verify(await token(rsa, { aud: '7abc1client' })), IdentityReason.MissingClaim);
  });

  it('maps Auth0 custom-claim roles, Okta groups and a subject', async () => {
    const auth0 = await token(ed, { sub: 'auth0|42', 'https://jetstate.example/roles': ['ops'] });
    assert.deepEqual((await verifier.verify(auth0)).roles, ['role:ops', 'role:owner']);
    const okta = await token(rsa, { sub: '00u1abcd', groups: ['Everyone-Billing', 'Everyone'] });
    assert.deepEqual((await verifier.verify(okta)).roles, ['role:billing']);
  });

  it('keeps claims as plain data without prototype keys', async () => {
    const t = await token(rsa, JSON.parse('{"__proto__": {"polluted": true}, "email": "a@b.c", "nested": {"constructor": 1, "x": [1, "y"]}}'));
    const who = await verifier.verify(t);
    assert.equal(who.claims.email, 'a@b.c');
    assert.equal(Object.hasOwn(who.claims, '__proto__'), false);
    assert.deepEqual(who.claims.nested, { x: [1, 'y'] });
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it('refuses an expired token and one not yet valid (beyond the clock tolerance)', async () => {
    await refused(verifier.verify(await token(rsa, { iat: nowSec() - 3600, exp: nowSec() - 60 })), IdentityReason.Expired);
    await refused(verifier.verify(await token(rsa, { nbf: nowSec() + 120 })), IdentityReason.NotYetValid);
    // Within the 30 s tolerance both pass.
    await verifier.verify(await token(rsa, { exp: nowSec() - 10 }));
    await verifier.verify(await token(rsa, { nbf: nowSec() + 10 }));
  });

  it('refuses a wrong audience and a wrong issuer', async () => {
    await refused(verifier.verify(await token(rsa, { aud: 'another-service' })), IdentityReason.WrongAudience);
    await refused(verifier.verify(await token(rsa, { iss: 'https://evil.example.test' })), IdentityReason.WrongIssuer);
    await refused(verifier.verify(await token(rsa, { iss: undefined })), IdentityReason.WrongIssuer);
  });

  it('checks the audience a call asks for instead of the configured one', async () => {
    const t = await token(rsa, { aud: ['jetstate-orders', 'billing-api'] });
    await verifier.verify(t, { audience: 'billing-api' });
    await refused(verifier.verify(t, { audience: 'payments' }), IdentityReason.WrongAudience);
  });

  it('refuses a token signed by another key under a known kid', async () => {
    const impostor = { ...(await signer('rsa-1')) };
    await refused(verifier.verify(await token(impostor)), IdentityReason.BadSignature);
    // A valid token with its signature changed in one character.
    const good = await token(rsa);
    const last = good.at(-2) === 'A' ? 'B' : 'A';
    await refused(verifier.verify(`${good.slice(0, -2)}${last}${good.at(-1)}`), IdentityReason.BadSignature);
  });

  it("refuses a hand-crafted alg 'none' token, even when 'none' appears in any casing", async () => {
    const payload = { iss: ISSUER, aud: AUDIENCE, sub: 'admin', exp: nowSec() + 600 };
    for (const alg of ['none', 'None', 'NONE']) {
      await refused(verifier.verify(`${b64({ alg, typ: 'JWT' })}.${b64(payload)}.`), IdentityReason.AlgNotAllowed);
      await refused(verifier.verify(`${b64({ alg, kid: 'rsa-1' })}.${b64(payload)}.c2ln`), IdentityReason.AlgNotAllowed);
    }
    await refused(verifier.verify(`${b64({ kid: 'rsa-1' })}.${b64(payload)}.c2ln`), IdentityReason.AlgNotAllowed);
  });

  it('refuses HS256 signed with the public key as the secret (algorithm confusion)', async () => {
    const pem = await exportSPKI(rsa.publicKey);
    for (const secret of [new TextEncoder().encode(pem), new TextEncoder().encode(JSON.stringify(rsa.jwk))]) {
      const forged = await new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub: 'admin', exp: nowSec() + 600 })
        .setProtectedHeader({ alg: 'HS256', kid: 'rsa-1' })
        .sign(secret);
      await refused(verifier.verify(forged), IdentityReason.AlgNotAllowed);
    }
  });

  it('refuses malformed strings early, without fetching keys', async () => {
    const fresh = createIdentityVerifier(options());
    const before = jwks.fetches;
    await refused(fresh.verify(''), IdentityReason.Malformed);
    await refused(fresh.verify(undefined as unknown as string), IdentityReason.Malformed);
    await refused(fresh.verify(42 as unknown as string), IdentityReason.Malformed);
    await refused(fresh.verify('garbage'), IdentityReason.Malformed);
    await refused(fresh.verify('Bearer abc.def.ghi'), IdentityReason.Malformed);
    await refused(fresh.verify('abc.def.ghi'), IdentityReason.Malformed);
    await refused(fresh.verify(`${b64({ alg: 'RS256' })}.bm90IGpzb24.c2ln`), IdentityReason.Malformed);
    await refused(fresh.verify(`${b64({ alg: 'RS256', kid: 'rsa-1' })}.${b64({ iss: ISSUER })}.c2ln.extra`), IdentityReason.Malformed);
    const huge = `${b64({ alg: 'RS256' })}.${'A'.repeat(1024 * 1024)}.c2ln`;
    const tooLarge = await refused(fresh.verify(huge), IdentityReason.TooLarge);
    assert.match(tooLarge.message, /maxTokenBytes/);
    assert.equal(jwks.fetches, before);
  });

  it('refuses a token without a required claim', async () => {
    const strict = createIdentityVerifier(options({ requiredClaims: ['email'] }));
    await refused(strict.verify(await token(rsa)), IdentityReason.MissingClaim);
    await strict.verify(await token(rsa, { email: 'a@b.c' }));
    await refused(verifier.verify(await token(rsa, { exp: undefined })), IdentityReason.MissingClaim);
    await refused(verifier.verify(await token(rsa, { sub: undefined })), IdentityReason.MissingClaim);
  });

  it('reuses a verified token from the cache and drops it when it expires', async () => {
    let nowMs = Date.now();
    const cached = createIdentityVerifier(options(), { clock: { now: () => nowMs } });
    const t = await token(rsa, { exp: nowSec() + 60 });
    const first = await cached.verify(t);
    const [a, b] = await Promise.all([cached.verify(t), cached.verify(t)]);
    assert.equal(a, first);
    assert.equal(b, first);
    nowMs += 61_000 + 30_000; // past exp and the clock tolerance
    await refused(cached.verify(t), IdentityReason.Expired);
  });

  it('verifies against inline keys without any fetch', async () => {
    const before = jwks.fetches;
    const inline = createIdentityVerifier({ oidc: { issuer: ISSUER, audience: AUDIENCE, jwks: { keys: [ec.jwk as { kty: string }] } } });
    const who = await inline.verify(await token(ec));
    assert.equal(who.subject, 'user-1');
    assert.deepEqual(who.roles, []);
    await refused(inline.verify(await token(rsa)), IdentityReason.UnknownKey);
    assert.equal(jwks.fetches, before);
  });

  it('sends each token to the issuer named by its iss when several are configured', async () => {
    const other = await signer('other-1', 'ES256');
    const issuer2 = 'https://tenant.auth0.example.test/';
    const multi = createIdentityVerifier({
      oidc: [
        { issuer: ISSUER, audience: AUDIENCE, jwks: { keys: [rsa.jwk as { kty: string }] } },
        { issuer: issuer2, audience: 'https://api.example.test', jwks: { keys: [other.jwk as { kty: string }] } },
      ],
    });
    assert.equal((await multi.verify(await token(rsa))).issuer, ISSUER);
    assert.equal((await multi.verify(await token(other, { iss: issuer2, aud: 'https://api.example.test' }))).issuer, issuer2);
    // A key of one issuer does not vouch for the other.
    await refused(multi.verify(await token(other, { iss: ISSUER })), IdentityReason.UnknownKey);
  });

  it('refetches the JWKS once when a rotated key appears', async () => {
    const server = await startJwksServer([rsa.jwk]);
    try {
      const v = createIdentityVerifier({ oidc: { issuer: ISSUER, audience: AUDIENCE, jwks: server.url, jwksCooldownMs: 0 } });
      await v.verify(await token(rsa));
      assert.equal(server.fetches, 1);
      await v.verify(await token(rsa, { sub: 'user-2' }));
      assert.equal(server.fetches, 1, 'a known kid needs no fetch');
      const rotated = await signer('rsa-2');
      server.keys = [rsa.jwk, rotated.jwk];
      const who = await v.verify(await token(rotated));
      assert.equal(who.subject, 'user-1');
      assert.equal(server.fetches, 2);
      await v.verify(await token(rotated, { sub: 'user-3' }));
      assert.equal(server.fetches, 2);
    } finally {
      await server.close();
    }
  });

  it('fetches at most once a second for a storm of unknown kids within the cooldown', async () => {
    const server = await startJwksServer([rsa.jwk]);
    try {
      const v = createIdentityVerifier({ oidc: { issuer: ISSUER, audience: AUDIENCE, jwks: server.url, jwksCooldownMs: 60_000 } });
      await v.verify(await token(rsa));
      const strangers = await Promise.all(Array.from({ length: 3 }, (_, i) => signer(`unknown-${i}`)));
      const tokens = await Promise.all(Array.from({ length: 60 }, (_, i) => token(strangers[i % 3]!, { sub: `s-${i}` }, { kid: `unknown-${i}` })));
      const startedAt = Date.now();
      const results = await Promise.allSettled(tokens.map((t) => v.verify(t)));
      const seconds = Math.floor((Date.now() - startedAt) / 1000) + 1;
      for (const r of results) {
        assert.equal(r.status, 'rejected');
        assert.equal((r as PromiseRejectedResult).reason.reason, IdentityReason.UnknownKey);
      }
      // The first fetch, then one a second at most (a key the provider may have just published).
      assert.ok(server.fetches >= 1 && server.fetches <= 1 + seconds, `${server.fetches} fetches in ${seconds} s`);
    } finally {
      await server.close();
    }
  });

  it('says the JWKS is unreachable (retryable) when the issuer is down, and recovers', async () => {
    const server = await startJwksServer([rsa.jwk]);
    server.failWith = 503;
    const v = createIdentityVerifier({ oidc: { issuer: ISSUER, audience: AUDIENCE, jwks: server.url, jwksCooldownMs: 0 } });
    const down = await refused(v.verify(await token(rsa)), IdentityReason.JwksUnreachable);
    assert.equal(down.retryable, true);
    server.failWith = null;
    await v.verify(await token(rsa));
    const url = server.url;
    await server.close();
    const gone = createIdentityVerifier({ oidc: { issuer: ISSUER, audience: AUDIENCE, jwks: url, jwksTimeoutMs: 2_000 } });
    assert.equal((await refused(gone.verify(await token(rsa)), IdentityReason.JwksUnreachable)).retryable, true);
  });

  it('refuses an AWS IAM token when only OIDC is configured', async () => {
    await refused(verifier.verify(`aws-iam:${b64({ method: 'GET' })}`), IdentityReason.MethodNotConfigured);
  });

  it('rejects unsafe options when the verifier is created', () => {
    const bad = (o: unknown, pattern: RegExp): void =>
      assert.throws(
        () => createIdentityVerifier(o as IdentityOptions),
        (e: JetstateError) => e instanceof JetstateError && e.code === ErrorCode.InvalidOptions && pattern.test(e.message),
      );
    const base = { issuer: ISSUER, audience: AUDIENCE, jwks: 'https://auth.example.test/jwks' };
    bad({ oidc: { ...base, algorithms: ['none'] } }, /asymmetric/);
    bad({ oidc: { ...base, algorithms: ['RS256', 'HS256'] } }, /HS\*/);
    bad({ oidc: { ...base, jwks: 'http://auth.example.test/jwks' } }, /https/);
    bad({ oidc: { ...base, jwks: { keys: [{ kty: 'RSA', n: 'x' }] } } }, /needs n, e/);
    bad({ oidc: { ...base, jwks: { keys: [{ kty: 'oct', k: 'c2VjcmV0' }] } } }, /not a public signing key type/);
    bad({ oidc: { ...base, jwks: { keys: [{ ...rsa.jwk, d: 'AQAB' }] } } }, /private members/);
    bad({ oidc: [base, base] }, /each issuer may appear once/);
    bad({}, /configure 'oidc', 'awsIam'/);
    bad({ oidc: { ...base, audiance: 'x' } }, /audiance/);
    bad({ oidc: base, roles: { claims: [{ claim: 'groups', prefx: 'r:' }] } }, /prefx/);
  });
});
