/**
 * AWS IAM identity against the loopback STS: tokens made with createAwsIamToken (real SigV4 from
 * @smithy/signature-v4) are replayed to an STS that checks every signature, and the attacks on
 * the replay (other audience, other host, changed action, old signature) are refused.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fromTemporaryCredentials } from '@aws-sdk/credential-providers';
import { startLocalSts, type LocalSts } from '../../adapters/local/aws/sts.js';
import { ErrorCode, JetstateError } from '../../engine/errors.js';
import { AUDIENCE_HEADER, createAwsIamToken } from '../../engine/security/aws-iam.js';
import { IdentityError, IdentityReason } from '../../engine/security/identity-error.js';
import { createIdentityVerifier, type IdentityVerifier } from '../../engine/security/identity.js';

const ACCOUNT = '123456789012';
const AUDIENCE = 'jetstate-test';
const ROOT = { accessKeyId: 'AKIAROOTROOTROOT0001', secretAccessKey: 'root-secret-0001', arn: `arn:aws:iam::${ACCOUNT}:root` };
const CI = { accessKeyId: 'AKIACICICICICICI0002', secretAccessKey: 'ci-secret-0002', arn: `arn:aws:iam::${ACCOUNT}:user/ci` };
const DEPLOYER = `arn:aws:iam::${ACCOUNT}:role/deployer`;
const creds = (c: { accessKeyId: string; secretAccessKey: string }) => ({ accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey });

interface Decoded {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}
const decode = (token: string): Decoded => JSON.parse(Buffer.from(token.slice('aws-iam:'.length), 'base64url').toString('utf8'));
const encode = (d: unknown): string => `aws-iam:${Buffer.from(JSON.stringify(d)).toString('base64url')}`;

async function refused(p: Promise<unknown>, reason: IdentityReason): Promise<IdentityError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof IdentityError, `expected an IdentityError, got ${String(e)}`);
    assert.equal(e.code, ErrorCode.Unauthenticated);
    assert.equal(e.reason, reason, e.message);
    return e;
  }
  assert.fail(`expected ${reason}, but the token was accepted`);
}

/** An HTTP server that counts requests and answers with `status` (or never, with `hang`). */
async function startCountingServer(status = 200, hang = false): Promise<{ url: string; hits: number; close(): Promise<void> }> {
  const state = { hits: 0 };
  const server: Server = createServer((req, res) => {
    state.hits++;
    if (!hang) res.writeHead(status, { 'content-type': 'text/xml' }).end('<Error><Code>InternalFailure</Code></Error>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  });
}

describe('AWS IAM identity', () => {
  let sts: LocalSts;
  let verifier: IdentityVerifier;
  const token = (o: Partial<Parameters<typeof createAwsIamToken>[0]> = {}): Promise<string> =>
    createAwsIamToken({ credentials: creds(ROOT), region: 'us-east-1', stsEndpoint: sts.endpoint, audience: AUDIENCE, ...o });
  /** Asserts that `fn` sends nothing to STS. */
  async function noStsRequest(fn: () => Promise<unknown>): Promise<void> {
    const before = sts.requests.length;
    await fn();
    assert.equal(sts.requests.length, before, 'no request may reach STS');
  }

  before(async () => {
    sts = await startLocalSts({ account: ACCOUNT, rootCredentials: [ROOT, CI] });
    sts.addRole(DEPLOYER);
    verifier = createIdentityVerifier({
      awsIam: { stsEndpoint: sts.endpoint, audience: AUDIENCE },
      roles: {
        principals: [
          { match: `arn:aws:sts::${ACCOUNT}:assumed-role/deployer/*`, roles: ['deploy'] },
          { match: `arn:aws:iam::${ACCOUNT}:role/deployer`, roles: ['role-arn-matched'] },
          { match: `arn:aws:iam::${ACCOUNT}:user/*`, roles: ['human-or-ci'] },
        ],
      },
    });
  });
  after(() => sts.close());

  it('verifies a presigned (GET) token of root credentials to the root ARN', async () => {
    const t = await token();
    assert.ok(t.startsWith('aws-iam:'));
    assert.equal(decode(t).method, 'GET');
    const who = await verifier.verify(t);
    assert.equal(who.method, 'aws-iam');
    assert.equal(who.issuer, 'aws-iam');
    assert.equal(who.subject, ROOT.arn);
    assert.deepEqual({ ...who.claims }, { arn: ROOT.arn, account: ACCOUNT, userId: ROOT.accessKeyId, principalType: 'root' });
    assert.deepEqual(who.roles, []);
    assert.ok(who.expiresAt! > Date.now() && who.expiresAt! <= Date.now() + 300_000);
    assert.equal(sts.requests.at(-1)?.action, 'GetCallerIdentity');
  });

  it('verifies a header-signed (POST) token of an IAM user', async () => {
    const t = await token({ credentials: creds(CI), method: 'POST' });
    const d = decode(t);
    assert.equal(d.method, 'POST');
    assert.equal(d.body, 'Action=GetCallerIdentity&Version=2011-06-15');
    const who = await verifier.verify(t);
    assert.equal(who.subject, CI.arn);
    assert.equal(who.claims.principalType, 'user');
    assert.deepEqual(who.roles, ['human-or-ci']);
  });

  it('verifies assumed-role credentials from a provider to the session ARN, with the role ARN in claims', async () => {
    const provider = fromTemporaryCredentials({
      masterCredentials: creds(ROOT),
      params: { RoleArn: DEPLOYER, RoleSessionName: 'alice' },
      clientConfig: { endpoint: sts.endpoint, region: 'us-east-1' },
    });
    for (const method of ['GET', 'POST'] as const) {
      const t = await token({ credentials: provider, method });
      const who = await verifier.verify(t);
      assert.equal(who.subject, `arn:aws:sts::${ACCOUNT}:assumed-role/deployer/alice`);
      assert.equal(who.claims.roleArn, DEPLOYER);
      assert.equal(who.claims.roleName, 'deployer');
      assert.equal(who.claims.sessionName, 'alice');
      assert.equal(who.claims.principalType, 'assumed-role');
      assert.match(String(who.claims.userId), /^AROA[A-Z2-7]+:alice$/);
      assert.deepEqual(who.roles, ['deploy', 'role-arn-matched']);
    }
    assert.ok(sts.issued.length >= 1);
  });

  it('answers a repeated token from the cache, without asking STS again', async () => {
    const t = await token({ credentials: creds(CI) });
    const first = await verifier.verify(t);
    await noStsRequest(async () => {
      const [a, b] = await Promise.all([verifier.verify(t), verifier.verify(t)]);
      assert.equal(a, first);
      assert.equal(b, first);
    });
  });

  it('refuses a token made for another audience, without asking STS', async () => {
    const other = await token({ audience: 'another-engine' });
    await noStsRequest(() => refused(verifier.verify(other), IdentityReason.WrongAudience));
    // The audience a call asks for is checked instead of the configured one.
    assert.equal((await verifier.verify(other, { audience: 'another-engine' })).subject, ROOT.arn);
  });

  it('refuses a token whose audience header was rewritten: STS sees the signature break', async () => {
    const d = decode(await token({ audience: 'another-engine' }));
    d.headers[AUDIENCE_HEADER] = AUDIENCE;
    const e = await refused(verifier.verify(encode(d)), IdentityReason.StsRejected);
    assert.equal(e.stsCode, 'SignatureDoesNotMatch');
    assert.equal(e.retryable, false);
  });

  it('refuses a token whose audience header is not signed', async () => {
    const d = decode(await token());
    const url = new URL(d.url);
    url.searchParams.set('X-Amz-SignedHeaders', 'host');
    await noStsRequest(() => refused(verifier.verify(encode({ ...d, url: url.toString() })), IdentityReason.WrongAudience));
  });

  it('never sends a token to a host it names: only to the configured STS endpoint', async () => {
    const decoy = await startCountingServer();
    try {
      const elsewhere = await token({ stsEndpoint: decoy.url });
      await noStsRequest(() => refused(verifier.verify(elsewhere), IdentityReason.WrongIssuer));
      // Same origin in the URL, but a host header naming the decoy.
      const d = decode(await token());
      d.headers.host = new URL(decoy.url).host;
      await noStsRequest(() => refused(verifier.verify(encode(d)), IdentityReason.WrongIssuer));
      // A URL with credentials or another scheme to the same host.
      const u = new URL(decode(await token()).url);
      u.username = 'x';
      await noStsRequest(() => refused(verifier.verify(encode({ ...d, url: u.toString() })), IdentityReason.WrongIssuer));
      assert.equal(decoy.hits, 0);
    } finally {
      await decoy.close();
    }
  });

  it('refuses a request that is not exactly GetCallerIdentity, without asking STS', async () => {
    const post = decode(await token({ method: 'POST' }));
    const bodies = [
      'Action=AssumeRole&Version=2011-06-15',
      'Action=GetCallerIdentity&Version=2011-06-15&RoleArn=x',
      'Action=GetCallerIdentity&Action=AssumeRole&Version=2011-06-15',
      'Action=GetCallerIdentity&Version=2010-01-01',
      'Version=2011-06-15',
      'Action=GetCallerIdentity&Version=2011-06-15;Action=AssumeRole',
    ];
    for (const body of bodies) await noStsRequest(() => refused(verifier.verify(encode({ ...post, body })), IdentityReason.Malformed));
    await noStsRequest(() => refused(verifier.verify(encode({ ...post, url: `${post.url}?Action=AssumeRole` })), IdentityReason.Malformed));
    await noStsRequest(() => refused(verifier.verify(encode({ ...post, method: 'PUT' })), IdentityReason.Malformed));
    await noStsRequest(() =>
      refused(verifier.verify(encode({ ...post, headers: { ...post.headers, 'content-type': 'application/json' } })), IdentityReason.Malformed),
    );

    const get = decode(await token());
    const u = new URL(get.url);
    u.searchParams.set('Action', 'AssumeRole');
    await noStsRequest(() => refused(verifier.verify(encode({ ...get, url: u.toString() })), IdentityReason.Malformed));
    const extra = new URL(get.url);
    extra.searchParams.set('RoleArn', DEPLOYER);
    await noStsRequest(() => refused(verifier.verify(encode({ ...get, url: extra.toString() })), IdentityReason.Malformed));
    await noStsRequest(() => refused(verifier.verify(encode({ ...get, url: new URL('/other', get.url).toString() })), IdentityReason.Malformed));
    await noStsRequest(() => refused(verifier.verify(encode({ ...get, body: 'Action=AssumeRole' })), IdentityReason.Malformed));
  });

  it('refuses a changed signature through STS', async () => {
    const d = decode(await token({ method: 'POST' }));
    d.headers.authorization = d.headers.authorization!.replace(/Signature=([0-9a-f])/, (_, c: string) => `Signature=${c === '0' ? '1' : '0'}`);
    const e = await refused(verifier.verify(encode(d)), IdentityReason.StsRejected);
    assert.equal(e.stsCode, 'SignatureDoesNotMatch');
  });

  it('refuses an unknown access key through STS, with STS code', async () => {
    const e = await refused(
      verifier.verify(await token({ credentials: { accessKeyId: 'AKIANOBODYNOBODY0003', secretAccessKey: 'x' } })),
      IdentityReason.StsRejected,
    );
    assert.equal(e.stsCode, 'InvalidClientTokenId');
  });

  it('refuses a token signed more than 15 minutes ago, or too far ahead, without asking STS', async () => {
    const old = await token({ method: 'POST', signingDate: new Date(Date.now() - 16 * 60_000) });
    await noStsRequest(() => refused(verifier.verify(old), IdentityReason.Expired));
    const ahead = await token({ signingDate: new Date(Date.now() + 20 * 60_000) });
    await noStsRequest(() => refused(verifier.verify(ahead), IdentityReason.NotYetValid));

    // The same checks on a verifier whose clock has moved on.
    let nowMs = Date.now();
    const clocked = createIdentityVerifier({ awsIam: { stsEndpoint: sts.endpoint, audience: AUDIENCE } }, { clock: { now: () => nowMs } });
    const fresh = await token({ method: 'POST' });
    const short = await token({ expiresInSec: 60 });
    await clocked.verify(fresh);
    await clocked.verify(short);
    nowMs += 2 * 60_000;
    await noStsRequest(() => refused(clocked.verify(short), IdentityReason.Expired));
    nowMs += 14 * 60_000;
    await noStsRequest(() => refused(clocked.verify(fresh), IdentityReason.Expired));
  });

  it('says STS is unreachable (retryable) when it is down, slow or failing', async () => {
    const closed = await startCountingServer();
    const closedUrl = closed.url;
    await closed.close();
    const down = createIdentityVerifier({ awsIam: { stsEndpoint: closedUrl, audience: AUDIENCE } });
    const e = await refused(down.verify(await token({ stsEndpoint: closedUrl })), IdentityReason.StsUnreachable);
    assert.equal(e.retryable, true);

    const slow = await startCountingServer(200, true);
    const failing = await startCountingServer(500);
    try {
      const v = createIdentityVerifier({ awsIam: { stsEndpoint: slow.url, audience: AUDIENCE, timeoutMs: 200 } });
      await refused(v.verify(await token({ stsEndpoint: slow.url })), IdentityReason.StsUnreachable);
      const w = createIdentityVerifier({ awsIam: { stsEndpoint: failing.url, audience: AUDIENCE } });
      await refused(w.verify(await token({ stsEndpoint: failing.url })), IdentityReason.StsUnreachable);
      assert.equal(slow.hits, 1);
      assert.equal(failing.hits, 1);
    } finally {
      await Promise.all([slow.close(), failing.close()]);
    }
  });

  it('refuses malformed AWS IAM tokens early', async () => {
    await noStsRequest(async () => {
      for (const t of ['aws-iam:', 'aws-iam:!!!', `aws-iam:${Buffer.from('not json').toString('base64url')}`, encode({ method: 'GET' }), encode([1, 2])]) {
        await refused(verifier.verify(t), IdentityReason.Malformed);
      }
      await refused(verifier.verify(`aws-iam:${'A'.repeat(20_000)}`), IdentityReason.TooLarge);
      const d = decode(await token());
      await refused(verifier.verify(encode({ ...d, headers: { ...d.headers, 'x-evil': 'a\r\nb' } })), IdentityReason.Malformed);
      await refused(verifier.verify(encode({ ...d, headers: { ...d.headers, Host: d.headers.host } })), IdentityReason.Malformed);
    });
  });

  it('refuses a JWT when only AWS IAM is configured', async () => {
    await refused(verifier.verify('eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln'), IdentityReason.MethodNotConfigured);
  });

  it('checks the options of the token maker and of the verifier', async () => {
    const bad = async (p: Promise<unknown>, pattern: RegExp): Promise<void> => {
      await assert.rejects(p, (e: JetstateError) => e instanceof JetstateError && e.code === ErrorCode.InvalidOptions && pattern.test(e.message));
    };
    await bad(token({ region: 'moon' }), /region/);
    await bad(token({ method: 'POST', expiresInSec: 60 }), /expiresInSec applies to GET/);
    await bad(token({ expiresInSec: 3600 }), /1 to 900/);
    await bad(token({ audience: ' padded ' }), /audience/);
    await bad(token({ stsEndpoint: 'http://sts.example.test' }), /https/);
    assert.throws(() => createIdentityVerifier({ awsIam: { audience: AUDIENCE, stsEndpoint: 'http://sts.amazonaws.com' } }), /https/);
    assert.throws(
      () => createIdentityVerifier({ awsIam: { audience: '' } }),
      (e: JetstateError) => e.code === ErrorCode.InvalidOptions,
    );
  });
});
