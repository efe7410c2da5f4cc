// NATS credentials against real nats-servers: token, user/password, an nkey seed file and a JWT
// creds file rotated on disk while the client stays connected, and TLS with a private CA.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect, nkeys, type NatsConnection, type Status } from '@nats-io/transport-node';
import { ErrorCode, JetstateError } from '../../engine/errors.js';
import { describeNatsAuthError, NatsAuthSchema, natsConnectionAuth, type NatsAuthOptions } from '../../engine/security/credentials.js';
import { eventually, memoryLogger, startNats } from '../helpers.js';

type Server = Awaited<ReturnType<typeof startNats>>;

let dir: string;
before(async () => (dir = await mkdtemp(join(tmpdir(), 'jetstate-creds-'))));
after(async () => rm(dir, { recursive: true, force: true }));

/** A server whose auth lives in `<storeDir>/auth.conf`, so a test can rewrite it and reload. */
async function startWithAuth(authConf: string, extra = ''): Promise<Server & { reload(authConf: string): Promise<void> }> {
  const storeDir = await mkdtemp(join(tmpdir(), 'jetstate-nats-auth-'));
  await writeFile(join(storeDir, 'auth.conf'), authConf);
  const server = await startNats({ storeDir, extraConfig: `include "auth.conf"\n${extra}` }).catch(async (e: unknown) => {
    await rm(storeDir, { recursive: true, force: true });
    throw e;
  });
  return Object.assign(server, {
    async reload(conf: string) {
      const before = server.log().length;
      await writeFile(join(storeDir, 'auth.conf'), conf);
      process.kill(server.pid!, 'SIGHUP');
      await eventually(() => assert.match(server.log().slice(before), /Reloaded server configuration/), 5_000, 20);
    },
    async dispose() {
      await server.stop();
      await rm(storeDir, { recursive: true, force: true });
    },
  });
}

/** Connects with `auth`, reconnecting quickly and for ever, and records status events. */
async function connectWith(
  server: { url: string },
  auth: NatsAuthOptions,
  logger?: ReturnType<typeof memoryLogger>,
): Promise<{ nc: NatsConnection; events: Status[] }> {
  const nc = await connect({ servers: server.url, reconnectTimeWait: 100, reconnectJitter: 0, maxReconnectAttempts: -1, ...natsConnectionAuth(auth, logger) });
  const events: Status[] = [];
  void (async () => {
    for await (const s of nc.status()) events.push(s);
  })();
  return { nc, events };
}

/** Connecting fails, and the hint says why. */
async function rejects(server: { url: string }, auth: NatsAuthOptions | undefined, hint: RegExp, servers?: string): Promise<void> {
  try {
    const nc = await connect({ servers: servers ?? server.url, maxReconnectAttempts: 0, timeout: 3_000, ...natsConnectionAuth(auth) });
    await nc.close();
  } catch (e) {
    assert.match(describeNatsAuthError(e, auth) ?? `(no hint for: ${(e as Error).message})`, hint);
    return;
  }
  assert.fail('connected, but should not have');
}

/** A request/reply round trip on `nc`: it is connected and its subscriptions survived. */
async function roundTrip(nc: NatsConnection, subject: string): Promise<void> {
  const reply = await nc.request(subject, 'ping', { timeout: 2_000 });
  assert.equal(reply.string(), 'pong');
}

function echo(nc: NatsConnection, subject: string): void {
  nc.subscribe(subject, {
    callback: (_e, m) => {
      m.respond('pong');
    },
  });
}

/** Writes a file atomically, as a rotation should. */
async function replaceFile(path: string, content: string): Promise<void> {
  await writeFile(`${path}.tmp`, content, { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}

const seedOf = (kp: ReturnType<typeof nkeys.createUser>): string => new TextDecoder().decode(kp.getSeed());
const countType = (events: Status[], type: string): number => events.filter((e) => e.type === type).length;

describe('NATS auth options', () => {
  it('reject conflicting, incomplete and unusable settings with messages that name the fix', async () => {
    const seed = seedOf(nkeys.createUser());
    const seedFile = join(dir, 'ok.nk');
    await writeFile(seedFile, seed);
    const bad = (auth: unknown, pattern: RegExp): void => {
      const r = NatsAuthSchema.safeParse(auth);
      assert.ok(!r.success, 'should not parse');
      const text = r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n');
      assert.match(text, pattern);
      assert.ok(!text.includes(seed), 'message holds a seed');
      // natsConnectionAuth says the same, as a JetstateError.
      assert.throws(
        () => natsConnectionAuth(auth as NatsAuthOptions),
        (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.InvalidOptions && r.error.issues.every((i) => e.message.includes(i.message)),
      );
    };
    bad({ token: 't', user: 'u', pass: 'p' }, /give one way to authenticate, not token and user\/pass/);
    bad({ credsFile: seedFile, nkeySeedFile: seedFile }, /not nkeySeed\/nkeySeedFile and credsFile/);
    bad({ user: 'u' }, /pass: give 'pass' with 'user'/);
    bad({ nkeySeed: seed, nkeySeedFile: seedFile }, /'nkeySeed' or 'nkeySeedFile', not both/);
    bad({ credsFile: join(dir, 'missing.creds') }, /credsFile: credsFile '.*missing\.creds' cannot be read \(ENOENT\); check the path/);
    bad({ nkeySeedFile: dir }, /cannot be read \(EISDIR\); give a file, not a folder/);
    if (process.getuid?.() !== 0) {
      const locked = join(dir, 'locked.nk');
      await writeFile(locked, seed);
      await chmod(locked, 0o000);
      bad({ nkeySeedFile: locked }, /cannot be read \(EACCES\); let this process read it/);
    }
    const notSeed = join(dir, 'not-a-seed.nk');
    await writeFile(notSeed, 'hello');
    bad({ nkeySeedFile: notSeed }, /does not hold a valid nkey seed; it must hold one seed starting with 'SU'/);
    const accountSeed = join(dir, 'account.nk');
    await writeFile(accountSeed, seedOf(nkeys.createAccount()));
    bad({ nkeySeedFile: accountSeed }, /is not a user nkey seed/);
    bad({ nkeySeed: seed.slice(0, -2) }, /nkeySeed does not hold a valid nkey seed/);
    bad({ credsFile: seedFile }, /is not a creds file/);
    bad({ tls: { certFile: seedFile } }, /tls.certFile '.*' is not PEM[\s\S]*give 'tls.certFile' and 'tls.keyFile' together/);
    bad({ tokn: 'x' }, /tokn/);
    // Valid ones.
    assert.deepEqual(natsConnectionAuth(undefined), {});
    assert.equal(typeof natsConnectionAuth({ nkeySeedFile: seedFile }).authenticator, 'function');
    assert.equal(natsConnectionAuth({ nkeySeedFile: seedFile }).ignoreAuthErrorAbort, true);
    assert.equal(natsConnectionAuth({ token: 't' }).ignoreAuthErrorAbort, undefined);
  });
});

describe('token and user/password', () => {
  it('connects with a token; a wrong or missing one is rejected with a hint', async () => {
    const token = randomBytes(12).toString('hex');
    const server = await startWithAuth(`authorization { token: "${token}" }`);
    try {
      const { nc } = await connectWith(server, { token });
      echo(nc, 'tok');
      await roundTrip(nc, 'tok');
      await nc.close();
      await rejects(server, { token: 'wrong' }, /the server rejected auth\.token/);
      await rejects(server, undefined, /the server requires authentication; set auth/);
    } finally {
      await server.dispose();
    }
  });

  it('connects with user and password', async () => {
    const server = await startWithAuth(`authorization { users: [ { user: "engine", password: "pw-${'x'.repeat(8)}" } ] }`);
    try {
      const { nc } = await connectWith(server, { user: 'engine', pass: `pw-${'x'.repeat(8)}` });
      echo(nc, 'up');
      await roundTrip(nc, 'up');
      await nc.close();
      await rejects(server, { user: 'engine', pass: 'nope' }, /the server rejected auth\.user 'engine'/);
    } finally {
      await server.dispose();
    }
  });
});

describe('nkey seed file', () => {
  it('a seed rotated on disk is used at the next reconnect, by the same connection', async () => {
    const [a, b, c] = [nkeys.createUser(), nkeys.createUser(), nkeys.createUser()];
    const allow = (kp: typeof a): string => `authorization { users: [ { nkey: ${kp.getPublicKey()} } ] }`;
    const seedFile = join(dir, 'engine.nk');
    await replaceFile(seedFile, `${seedOf(a)}\n`);
    const server = await startWithAuth(allow(a));
    const logger = memoryLogger();
    const { nc, events } = await connectWith(server, { nkeySeedFile: seedFile }, logger);
    try {
      echo(nc, 'nk');
      await roundTrip(nc, 'nk');

      // 1. The file changes first, then the server accepts only B: the server drops the
      // connection (A is no longer allowed) and the client comes back with B.
      await replaceFile(seedFile, seedOf(b));
      await server.reload(allow(b));
      await eventually(() => assert.equal(countType(events, 'reconnect'), 1), 10_000, 20);
      await roundTrip(nc, 'nk');
      await rejects(server, { nkeySeed: seedOf(a) }, /the server rejected auth\.nkeySeed/);

      // 2. The server wants C before the file holds it: the client keeps trying (more than the
      // two authorization errors after which nats.js gives up by default), a half-written file
      // meanwhile does not end the connection, and once C is in the file it reconnects.
      const errorsBefore = countType(events, 'error');
      await server.reload(allow(c));
      await eventually(() => assert.ok(countType(events, 'error') - errorsBefore >= 3, 'three failed attempts'), 10_000, 20);
      await writeFile(seedFile, ''); // truncated, as a non-atomic write leaves it for a moment
      await eventually(() => assert.ok(logger.lines.some((l) => /nkeySeedFile '.*engine\.nk' cannot be used now .*last good content/.test(l))), 10_000, 20);
      assert.equal(nc.isClosed(), false);
      await replaceFile(seedFile, seedOf(c));
      // (nats.js reports 'reconnect' for every dial that reaches the server, rejected ones too.)
      await eventually(() => roundTrip(nc, 'nk'), 10_000, 20);
      assert.equal(nc.isClosed(), false);
      assert.ok(!logger.lines.join('\n').includes(seedOf(c).slice(2)), 'the log holds a seed');
    } finally {
      await nc.close();
      await server.dispose();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Decentralised auth: an operator, accounts and users as NATS JWTs (v2), signed here with nkeys.

const b64url = (data: Uint8Array | string): string => Buffer.from(data).toString('base64url');

function signJwt(issuer: ReturnType<typeof nkeys.createOperator>, subject: string, name: string, nats: Record<string, unknown>): string {
  const claims: Record<string, unknown> = { iat: Math.floor(Date.now() / 1000), iss: issuer.getPublicKey(), name, sub: subject, nats: { ...nats, version: 2 } };
  claims['jti'] = createHash('sha256').update(JSON.stringify(claims)).digest('base64url').toUpperCase();
  const body = `${b64url(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' }))}.${b64url(JSON.stringify(claims))}`;
  return `${body}.${b64url(issuer.sign(new TextEncoder().encode(body)))}`;
}

const unlimited = { subs: -1, data: -1, payload: -1 };

function account(operator: ReturnType<typeof nkeys.createOperator>, name: string): { kp: ReturnType<typeof nkeys.createAccount>; jwt: string } {
  const kp = nkeys.createAccount();
  const limits = { ...unlimited, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
  return { kp, jwt: signJwt(operator, kp.getPublicKey(), name, { type: 'account', limits }) };
}

function userCreds(acc: ReturnType<typeof nkeys.createAccount>, name: string): string {
  const user = nkeys.createUser();
  const jwt = signJwt(acc, user.getPublicKey(), name, { type: 'user', pub: {}, sub: {}, ...unlimited });
  return [
    '-----BEGIN NATS USER JWT-----',
    jwt,
    '------END NATS USER JWT------',
    '',
    '************************* IMPORTANT *************************',
    'NKEY Seed printed below can be used to sign and prove identity.',
    'NKEYs are sensitive and should be treated as secrets.',
    '',
    '-----BEGIN USER NKEY SEED-----',
    seedOf(user),
    '------END USER NKEY SEED------',
    '',
    '*************************************************************',
    '',
  ].join('\n');
}

describe('JWT creds file', () => {
  it('a creds file rotated on disk is used at the next reconnect, by the same connection', async () => {
    const operator = nkeys.createOperator();
    const operatorJwt = signJwt(operator, operator.getPublicKey(), 'jetstate_test', { type: 'operator' });
    const [sys, accA, accB, accC] = [account(operator, 'SYS'), account(operator, 'A'), account(operator, 'B'), account(operator, 'C')];
    // The server trusts the operator and knows only the accounts preloaded in auth.conf (and the
    // system account, which JetStream needs in operator mode).
    const trust = (acc: typeof accA): string =>
      `operator: ${operatorJwt}\nsystem_account: ${sys.kp.getPublicKey()}\nresolver: MEMORY\n` +
      `resolver_preload: {\n${[sys, acc].map((a) => `  ${a.kp.getPublicKey()}: ${a.jwt}`).join('\n')}\n}\n`;
    const credsFile = join(dir, 'engine.creds');
    await replaceFile(credsFile, userCreds(accA.kp, 'engine-a'));
    const server = await startWithAuth(trust(accA));
    const logger = memoryLogger();
    const { nc, events } = await connectWith(server, { credsFile }, logger);
    try {
      echo(nc, 'jwt');
      await roundTrip(nc, 'jwt');
      const firstId = nc.info?.client_id;

      // 1. New creds (a user of account B) on disk, then the server drops account A.
      await replaceFile(credsFile, userCreds(accB.kp, 'engine-b'));
      await server.reload(trust(accB));
      await eventually(() => assert.equal(countType(events, 'reconnect'), 1), 10_000, 20);
      await roundTrip(nc, 'jwt');
      assert.notEqual(nc.info?.client_id, firstId, 'a new server-side client: it reconnected');
      const oldCreds = join(dir, 'old.creds');
      await writeFile(oldCreds, userCreds(accA.kp, 'engine-a2'));
      await rejects(server, { credsFile: oldCreds }, /the server rejected auth\.credsFile '.*old\.creds'/);

      // 2. The server moves to account C before the file does.
      const errorsBefore = countType(events, 'error');
      await server.reload(trust(accC));
      await eventually(() => assert.ok(countType(events, 'error') - errorsBefore >= 3, 'three failed attempts'), 10_000, 20);
      await writeFile(credsFile, '-----BEGIN NATS USER JWT-----\neyJ0'); // half written
      await eventually(() => assert.ok(logger.lines.some((l) => /credsFile '.*engine\.creds' cannot be used now/.test(l))), 10_000, 20);
      assert.equal(nc.isClosed(), false);
      await replaceFile(credsFile, userCreds(accC.kp, 'engine-c'));
      await eventually(() => roundTrip(nc, 'jwt'), 10_000, 20);
      assert.equal(nc.isClosed(), false);
    } finally {
      await nc.close();
      await server.dispose();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// TLS with a private CA made by openssl.

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA, and a certificate for 127.0.0.1/localhost signed by it. */
function makeCa(name: string): { ca: string; key: string } {
  openssl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    `${name}-key.pem`,
    '-out',
    `${name}.pem`,
  );
  return { ca: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) };
}

function makeCert(ca: { ca: string; key: string }, name: string, ext: string): { cert: string; key: string } {
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}-key.pem`, '-out', `${name}.csr`);
  const extFile = join(dir, `${name}.ext`);
  execFileSync('sh', ['-c', `printf '%s\\n' "${ext}" > ${JSON.stringify(extFile)}`]);
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', ca.ca, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-extfile', extFile, '-out', `${name}.pem`);
  return { cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) };
}

describe('TLS', () => {
  it('connects with the CA that signed the server certificate; another CA fails with a hint; client certificates work', async () => {
    const ca = makeCa('ca');
    const otherCa = makeCa('other-ca');
    const serverCert = makeCert(ca, 'server', 'subjectAltName=IP:127.0.0.1,DNS:localhost');
    const clientCert = makeCert(ca, 'client', 'extendedKeyUsage=clientAuth');
    const tlsConf = (verify: boolean): string =>
      `tls { cert_file: ${JSON.stringify(serverCert.cert)}, key_file: ${JSON.stringify(serverCert.key)}, ca_file: ${JSON.stringify(ca.ca)}, verify: ${verify}, timeout: 2 }`;

    const server = await startWithAuth('', tlsConf(false));
    try {
      const { nc } = await connectWith(server, { tls: { caFile: ca.ca } });
      echo(nc, 'tls');
      await roundTrip(nc, 'tls');
      assert.equal(nc.info?.tls_required, true);
      await nc.close();
      await rejects(server, { tls: { caFile: otherCa.ca } }, /the server's TLS certificate is not signed by a CA in auth\.tls\.caFile '.*other-ca\.pem'/);
      await rejects(server, { tls: {} }, /not trusted by this system; give the CA that signed it as auth\.tls\.caFile/);
    } finally {
      await server.dispose();
    }

    const mutual = await startWithAuth('', tlsConf(true));
    try {
      const { nc } = await connectWith(mutual, { tls: { caFile: ca.ca, certFile: clientCert.cert, keyFile: clientCert.key } });
      await roundTrip((echo(nc, 'mtls'), nc), 'mtls');
      await nc.close();
      await assert.rejects(connect({ servers: mutual.url, maxReconnectAttempts: 0, timeout: 3_000, ...natsConnectionAuth({ tls: { caFile: ca.ca } }) }));
    } finally {
      await mutual.dispose();
    }
  });
});
