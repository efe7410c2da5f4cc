/**
 * An identity provider rotates its signing key (publishes k2 in its JWKS and signs with it) within
 * the JWKS cooldown of the verifier's last fetch. The token is legitimate: it is accepted (the
 * verifier fetches the JWKS again for an unknown kid, at most once a second), where it was refused
 * as identity.unknown_key, for good, and the engine dead-lettered its event.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createIdentityVerifier } from '../../engine/security/identity.js';
import { IdentityError } from '../../engine/security/identity-error.js';
import { startJwksServer, type JwksServer } from './jwks-server.js';
import { jwt, nowSec, oidcSigner } from './engine-fixtures.js';

describe('OIDC key rotation inside the JWKS cooldown', { timeout: 30_000 }, () => {
  let server: JwksServer | undefined;
  after(async () => server?.close());

  it('accepts a token signed with a key the provider just published', async () => {
    const k1 = await oidcSigner('k1');
    const k2 = await oidcSigner('k2');
    server = await startJwksServer([k1.jwk]);
    const base = { iss: 'https://idp.test', aud: 'jetstate' };
    const verifier = createIdentityVerifier({ oidc: { issuer: base.iss, audience: base.aud, jwks: server.url } });
    await verifier.verify(await jwt(k1, base, { sub: 'alice', exp: nowSec() + 300 }));
    // The IdP rotates: both keys published, new tokens signed with k2.
    server.keys = [k1.jwk, k2.jwk];
    const token = await jwt(k2, base, { sub: 'alice', exp: nowSec() + 300 });
    let outcome: string;
    try {
      await verifier.verify(token);
      outcome = 'accepted';
    } catch (e) {
      assert.ok(e instanceof IdentityError);
      outcome = `${e.reason} retryable=${e.retryable}`;
    }
    assert.equal(outcome, 'accepted', `JWKS fetches: ${server.fetches}`);
    // A flood of unknown kids fetches the JWKS at most once a second.
    const k3 = await oidcSigner('k3');
    const floods = await Promise.all(Array.from({ length: 5 }, () => jwt(k3, base, { sub: 'mallory', exp: nowSec() + 300 })));
    const before = server.fetches;
    const startedAt = Date.now();
    for (const t of floods) await verifier.verify(t).catch(() => {});
    const seconds = Math.floor((Date.now() - startedAt) / 1000);
    assert.ok(server.fetches - before <= seconds + 1, `${server.fetches - before} fetches for 5 tokens with an unknown kid in ${seconds + 1} s at most`);
  });
});
