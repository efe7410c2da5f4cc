/**
 * Identity and permissions end to end: a real nats-server, a live engine and a separate client,
 * OIDC tokens signed with jose keys (one issuer with an inline JWKS, one with a JWKS URL on
 * loopback), AWS IAM tokens replayed to the loopback STS. What send()/start() refuse never reaches
 * the stream; what a raw client publishes around send() is refused by the engine, recorded with
 * its reason, copied to the dead-letter stream, and leaves the instance as it was.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { fromTemporaryCredentials } from '@aws-sdk/credential-providers';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { startLocalSts, type LocalSts } from '../../adapters/local/aws/sts.js';
import { createClient, type Client } from '../../engine/client.js';
import { defineWorkflow } from '../../engine/define/definition.js';
import { createEngine, type Engine } from '../../engine/engine.js';
import { ErrorCode } from '../../engine/errors.js';
import { sendToInstance } from '../../engine/define/messages.js';
import type { HistoryEntry } from '../../engine/protocol/record.js';
import { identityOf } from '../../engine/protocol/identity.js';
import { createAwsIamToken } from '../../engine/security/aws-iam.js';
import type { IdentityOptions } from '../../engine/security/identity.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';
import { startJwksServer, type JwksServer } from './jwks-server.js';
import { jwt, nowSec, oidcSigner, Outside, rejects, tampered, unsignedJwt, type Signer } from './engine-fixtures.js';

const REALM = { iss: 'https://auth.example.test/realms/shop', aud: 'jetstate-approvals' };
const OKTA = { iss: 'https://login.example.test/oauth2/default', aud: 'jetstate-approvals' };
const ACCOUNT = '123456789012';
const APPROVER_ROLE = `arn:aws:iam::${ACCOUNT}:role/approver`;
const AWS_AUDIENCE = 'jetstate-approvals-aws';
const ROOT = { accessKeyId: 'AKIAROOTROOTROOT0001', secretAccessKey: 'root-secret-0001', arn: `arn:aws:iam::${ACCOUNT}:root` };

type Approver = { subject: string; issuer: string; method: string; roles: string[] };
type Ctx = { requestId: string; submittedBy: string | null; approver: Approver | null; comments: Array<{ by: string | null; text: string }> };

/** Four eyes: whoever submitted may not approve; the guard reads the verified sender. */
const approval = defineWorkflow({
  name: 'approval',
  version: 1,
  input: z.object({ requestId: z.string() }),
  events: { SUBMIT: z.object({}), APPROVE: z.object({}), COMMENT: z.object({ text: z.string() }) },
  permissions: { start: ['clerk'], events: { APPROVE: ['approver'] }, default: ['clerk'] },
  machine: setup({
    types: { context: {} as Ctx, input: {} as { requestId: string } },
    guards: { notTheSubmitter: ({ context, event }) => identityOf(event) !== undefined && identityOf(event)!.subject !== context.submittedBy },
  }).createMachine({
    context: ({ input }) => ({ requestId: input.requestId, submittedBy: null, approver: null, comments: [] }),
    initial: 'draft',
    on: {
      COMMENT: {
        actions: assign({
          comments: ({ context, event }) => [
            ...context.comments,
            { by: identityOf(event)?.subject ?? null, text: (event as unknown as { text: string }).text },
          ],
        }),
      },
    },
    states: {
      draft: { on: { SUBMIT: { target: 'submitted', actions: assign({ submittedBy: ({ event }) => identityOf(event)?.subject ?? null }) } } },
      submitted: {
        on: {
          APPROVE: {
            guard: 'notTheSubmitter',
            target: 'approved',
            actions: assign({
              approver: ({ event }) => {
                const i = identityOf(event)!;
                return { subject: i.subject, issuer: i.issuer, method: i.method, roles: [...i.roles] };
              },
            }),
          },
        },
      },
      approved: {},
    },
  }),
});

/** Every start and event needs a token, with no roles required. */
const vault = defineWorkflow({
  name: 'vault',
  version: 1,
  input: z.object({}),
  events: { KNOCK: z.object({}), PING: z.object({ n: z.number() }) },
  requireIdentity: true,
  machine: setup({ types: { context: {} as { senders: Array<{ method: string | null; subject: string | null }> } } }).createMachine({
    context: { senders: [] },
    on: {
      '*': {
        actions: assign({
          senders: ({ context, event }) => [...context.senders, { method: identityOf(event)?.method ?? null, subject: identityOf(event)?.subject ?? null }],
        }),
      },
    },
  }),
});

/** Sends PING to a vault instance from inside the engine (sendToInstance). */
const notifier = defineWorkflow({
  name: 'notifier',
  version: 1,
  input: z.object({ vaultId: z.string() }),
  events: { NOTIFY: z.object({ n: z.number() }) },
  machine: setup({ types: { context: {} as { vaultId: string }, input: {} as { vaultId: string } } }).createMachine({
    context: ({ input }) => ({ vaultId: input.vaultId }),
    on: {
      NOTIFY: {
        actions: sendToInstance(
          ({ context }) => ({ workflow: 'vault', id: context.vaultId }),
          ({ event }) => ({ type: 'PING', n: (event as unknown as { n: number }).n }),
        ),
      },
    },
  }),
});

const ctx = (i: { context: unknown }): Ctx => i.context as Ctx;

describe('engine identity and permissions', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let jwks: JwksServer;
  let sts: LocalSts;
  let realmKey: Signer;
  let oktaKey: Signer;
  let strangerKey: Signer;
  let engine: Engine;
  let client: Client;
  let outside: Outside;
  const logger = memoryLogger();
  const namespace = uniqueNamespace('engidentity');

  const realmToken = (sub: string, roles: string[], claims: Record<string, unknown> = {}): Promise<string> =>
    jwt(realmKey, REALM, { sub, realm_access: { roles }, ...claims });
  const oktaToken = (sub: string, roles: string[]): Promise<string> => jwt(oktaKey, OKTA, { sub, realm_access: { roles } });
  const approverProvider = () =>
    fromTemporaryCredentials({
      masterCredentials: { accessKeyId: ROOT.accessKeyId, secretAccessKey: ROOT.secretAccessKey },
      params: { RoleArn: APPROVER_ROLE, RoleSessionName: 'dana' },
      clientConfig: { endpoint: sts.endpoint, region: 'us-east-1' },
    });
  const awsToken = (audience = AWS_AUDIENCE): Promise<string> =>
    createAwsIamToken({ credentials: approverProvider(), region: 'us-east-1', stsEndpoint: sts.endpoint, audience });

  /** A submitted request, ready for APPROVE. */
  async function submitted(id: string): Promise<void> {
    await client.start(approval, { id, input: { requestId: id }, token: await realmToken('carol', ['clerk']) });
    await client.send(approval, id, { type: 'SUBMIT' }, { token: await realmToken('carol', ['clerk']) });
    await client.waitFor(approval, id, (s) => s.matches('submitted'), { timeoutMs: 5_000 });
  }

  /** The rejected history entries of an instance, once there are `n` of them. */
  async function rejections(id: string, n: number): Promise<HistoryEntry[]> {
    return eventually(async () => {
      const r = (await client.history(approval, id)).filter((h) => h.kind === 'rejected');
      assert.equal(r.length, n, `expected ${n} rejections, got ${JSON.stringify(r.map((x) => x.reason))}`);
      return r;
    });
  }

  before(async () => {
    [realmKey, oktaKey, strangerKey] = await Promise.all([oidcSigner('realm-1'), oidcSigner('okta-1', 'ES256'), oidcSigner('realm-1')]);
    [nats, jwks, sts] = await Promise.all([startNats(), startJwksServer([oktaKey.jwk]), startLocalSts({ account: ACCOUNT, rootCredentials: [ROOT] })]);
    sts.addRole(APPROVER_ROLE);
    const identity: IdentityOptions = {
      oidc: [
        { issuer: REALM.iss, audience: REALM.aud, jwks: { keys: [realmKey.jwk as { kty: string }] } },
        { issuer: OKTA.iss, audience: OKTA.aud, jwks: jwks.url },
      ],
      awsIam: { stsEndpoint: sts.endpoint, audience: AWS_AUDIENCE },
      roles: {
        claims: [{ claim: 'realm_access.roles' }],
        principals: [{ match: `arn:aws:sts::${ACCOUNT}:assumed-role/approver/*`, roles: ['approver'] }],
      },
    };
    engine = await createEngine({ servers: nats.url, namespace, workflows: [approval, vault, notifier], identity, leaseTtlMs: 1_000, logger });
    client = await createClient({ servers: nats.url, namespace, identity });
    outside = await Outside.open(nats.url, namespace);
  });
  after(async () => {
    await outside?.close();
    await client?.close();
    await engine?.close();
    await Promise.all([jwks?.close(), sts?.close()]);
    await nats?.dispose();
  });

  it('applies a permitted event and records who sent it; the guard sees the sender', async () => {
    await submitted('a-1');
    // Carol submitted; as an approver too she is still refused by the four-eyes guard.
    await client.send(approval, 'a-1', { type: 'APPROVE' }, { token: await realmToken('carol', ['clerk', 'approver']) });
    await client.send(approval, 'a-1', { type: 'APPROVE' }, { token: await oktaToken('olga', ['approver']) });
    const done = await client.waitFor(approval, 'a-1', (s) => s.matches('approved'), { timeoutMs: 5_000 });
    assert.equal(ctx(done).submittedBy, 'carol');
    assert.deepEqual(ctx(done).approver, { subject: 'olga', issuer: OKTA.iss, method: 'oidc', roles: ['approver'] });
    assert.ok(jwks.fetches >= 1, 'the JWKS URL was fetched');

    const history = await client.history(approval, 'a-1');
    assert.deepEqual(
      history.map((h) => [h.kind, (h.event as { type: string }).type, h.from, h.to, h.identity]),
      [
        ['start', 'jetstate.start', null, 'draft', { method: 'oidc', subject: 'carol', issuer: REALM.iss, roles: ['clerk'] }],
        ['event', 'SUBMIT', 'draft', 'submitted', { method: 'oidc', subject: 'carol', issuer: REALM.iss, roles: ['clerk'] }],
        ['event', 'APPROVE', 'submitted', 'submitted', { method: 'oidc', subject: 'carol', issuer: REALM.iss, roles: ['clerk', 'approver'] }],
        ['event', 'APPROVE', 'submitted', 'approved', { method: 'oidc', subject: 'olga', issuer: OKTA.iss, roles: ['approver'] }],
      ],
    );
    // Neither the token nor the claims are in the history.
    assert.doesNotMatch(JSON.stringify(history), /eyJ|realm_access/);
    // Replay gives the guard the same identities and reaches the same state.
    assert.equal((await client.verify(approval, 'a-1')).ok, true);
  });

  it('send() refuses a missing role or a bad token before anything is written', async () => {
    await submitted('a-2');
    const before = await outside.eventsLastSeq();
    const send = (token: string | undefined) => client.send(approval, 'a-2', { type: 'APPROVE' }, token === undefined ? {} : { token });
    const denied = await rejects(send(await realmToken('carol', ['clerk'])), ErrorCode.PermissionDenied, 'permission.denied');
    assert.match(denied.message, /'carol' \(roles: clerk\) may not send 'APPROVE' to workflow 'approval'; it needs one of the roles 'approver'/);
    await rejects(send(undefined), ErrorCode.Unauthenticated, 'identity.missing');
    await rejects(send(await realmToken('olga', ['approver'], { exp: nowSec() - 3_600 })), ErrorCode.Unauthenticated, 'identity.expired');
    await rejects(send(await realmToken('olga', ['approver'], { aud: 'another-app' })), ErrorCode.Unauthenticated, 'identity.wrong_audience');
    await rejects(
      send(await jwt(realmKey, { ...REALM, iss: 'https://evil.example.test' }, { sub: 'olga', realm_access: { roles: ['approver'] } })),
      ErrorCode.Unauthenticated,
      'identity.wrong_issuer',
    );
    await rejects(send(unsignedJwt(REALM, { sub: 'olga', realm_access: { roles: ['approver'] } })), ErrorCode.Unauthenticated, 'identity.alg_not_allowed');
    // Same kid, another key; and a real clerk token with 'approver' added to its payload.
    await rejects(
      send(await jwt(strangerKey, REALM, { sub: 'olga', realm_access: { roles: ['approver'] } })),
      ErrorCode.Unauthenticated,
      'identity.bad_signature',
    );
    const escalated = tampered(await realmToken('carol', ['clerk']), (c) => ({ ...c, realm_access: { roles: ['clerk', 'approver'] } }));
    await rejects(send(escalated), ErrorCode.Unauthenticated, 'identity.bad_signature');
    // A default rule applies to events without their own rule.
    await rejects(
      client.send(approval, 'a-2', { type: 'COMMENT', text: 'hi' }, { token: await realmToken('olga', ['approver']) }),
      ErrorCode.PermissionDenied,
      'permission.denied',
    );

    assert.equal(await outside.eventsLastSeq(), before, 'nothing reached the events stream');
    const inst = await client.get(approval, 'a-2');
    assert.equal(inst!.revision, 2);
    assert.ok(inst!.matches('submitted'));
  });

  it('start needs the start role and a valid token', async () => {
    await rejects(client.start(approval, { id: 'a-3', input: { requestId: 'a-3' } }), ErrorCode.Unauthenticated, 'identity.missing');
    await rejects(
      client.start(approval, { id: 'a-3', input: { requestId: 'a-3' }, token: await realmToken('olga', ['approver']) }),
      ErrorCode.PermissionDenied,
      'permission.denied',
    );
    await rejects(
      client.start(approval, { id: 'a-3', input: { requestId: 'a-3' }, token: await realmToken('carol', ['clerk'], { exp: nowSec() - 3_600 }) }),
      ErrorCode.Unauthenticated,
      'identity.expired',
    );
    assert.equal(await client.get(approval, 'a-3'), null, 'nothing was started');
    const started = await client.start(approval, { id: 'a-3', input: { requestId: 'a-3' }, token: await realmToken('carol', ['clerk']) });
    assert.equal(started.revision, 1);
  });

  it('refuses the same tokens published straight to the stream: recorded, dead-lettered, instance unchanged', async () => {
    await submitted('a-4');
    const before = await client.get(approval, 'a-4');
    const approve = { type: 'APPROVE' };
    const cases: Array<[string, Record<string, string>]> = [
      ['identity.bad_signature', { 'Jetstate-Token': await jwt(strangerKey, REALM, { sub: 'mallory', realm_access: { roles: ['approver'] } }) }],
      [
        'identity.bad_signature',
        { 'Jetstate-Token': tampered(await realmToken('carol', ['clerk']), (c) => ({ ...c, sub: 'olga', realm_access: { roles: ['approver'] } })) },
      ],
      ['identity.expired', { 'Jetstate-Token': await realmToken('olga', ['approver'], { exp: nowSec() - 3_600 }) }],
      ['identity.wrong_audience', { 'Jetstate-Token': await realmToken('olga', ['approver'], { aud: 'another-app' }) }],
      ['identity.alg_not_allowed', { 'Jetstate-Token': unsignedJwt(REALM, { sub: 'olga', realm_access: { roles: ['approver'] } }) }],
      ['identity.missing', {}],
      ['permission.denied', { 'Jetstate-Token': await realmToken('carol', ['clerk']) }],
    ];
    const seqs: number[] = [];
    for (const [, hdrs] of cases) seqs.push(await outside.publishRaw('approval', 'a-4', approve, hdrs));
    // An engine-only event type without the engine's signature is a forgery.
    seqs.push(await outside.publishRaw('approval', 'a-4', { type: 'jetstate.timer', timerId: 'x', token: 1 }));

    const rejected = await rejections('a-4', cases.length + 1);
    assert.deepEqual(
      rejected.map((r) => r.seq),
      seqs,
    );
    cases.forEach(([reason], i) => assert.ok(rejected[i]!.reason!.startsWith(`[${reason}]`), `case ${i}: ${rejected[i]!.reason}`));
    assert.ok(rejected.at(-1)!.reason!.startsWith('[forged]'), rejected.at(-1)!.reason);
    for (const r of rejected) assert.equal(r.identity, undefined, 'a refused sender is not recorded as an identity');

    const after = await client.get(approval, 'a-4');
    assert.equal(after!.revision, before!.revision);
    assert.deepEqual(after!.value, before!.value);
    assert.deepEqual(after!.context, before!.context);

    const letters = await eventually(async () => {
      const mine = (await outside.deadLetters()).filter((d) => d.subject === outside.names.deadLetterSubject('approval', 'a-4'));
      assert.equal(mine.length, seqs.length);
      return mine;
    });
    assert.deepEqual(
      letters.map((d) => d.originalSeq),
      seqs,
    );
    letters.forEach((d, i) => {
      assert.equal(d.originalSubject, outside.subject('approval', 'a-4'));
      assert.equal(d.reason, rejected[i]!.reason!.slice(0, 1_000));
    });
    assert.deepEqual(JSON.parse(letters[0]!.data), approve, 'the copy is the event as it came');
    // What an operator sees through the client: the same events and reasons, without payloads.
    const listed = (await client.deadLetters({ limit: 1_000 })).filter((d) => d.workflow === 'approval' && d.id === 'a-4');
    assert.deepEqual(
      listed.map((d) => [d.seq, d.reason]),
      letters.map((d) => [d.originalSeq, d.reason]),
    );

    // The engine keeps serving: a valid event afterwards is applied.
    await outside.publishRaw('approval', 'a-4', approve, { 'Jetstate-Token': await oktaToken('olga', ['approver']) });
    const done = await client.waitFor(approval, 'a-4', (s) => s.matches('approved'), { timeoutMs: 5_000 });
    assert.equal(ctx(done).approver!.subject, 'olga');
  });

  it('a client without identity options passes the token on; the engine decides', async () => {
    await submitted('a-6');
    await using plain = await createClient({ servers: nats.url, namespace });
    await plain.send(approval, 'a-6', { type: 'APPROVE' }, { token: await realmToken('olga', ['approver'], { exp: nowSec() - 3_600 }) });
    await plain.send(approval, 'a-6', { type: 'APPROVE' }, { token: await oktaToken('olga', ['approver']) });
    const done = await client.waitFor(approval, 'a-6', (s) => s.matches('approved'), { timeoutMs: 5_000 });
    assert.equal(ctx(done).approver!.subject, 'olga');
    const [r] = await rejections('a-6', 1);
    assert.ok(r!.reason!.startsWith('[identity.expired]'), r!.reason);
  });

  it('accepts an AWS IAM token mapped to a role by principal ARN, and refuses one for another audience', async () => {
    await submitted('a-5');
    const before = await outside.eventsLastSeq();
    await rejects(
      client.send(approval, 'a-5', { type: 'APPROVE' }, { token: await awsToken('another-engine') }),
      ErrorCode.Unauthenticated,
      'identity.wrong_audience',
    );
    assert.equal(await outside.eventsLastSeq(), before);
    // The same wrong-audience token around send() is refused by the engine.
    await outside.publishRaw('approval', 'a-5', { type: 'APPROVE' }, { 'Jetstate-Token': await awsToken('another-engine') });
    const [r] = await rejections('a-5', 1);
    assert.ok(r!.reason!.startsWith('[identity.wrong_audience]'), r!.reason);
    assert.ok((await client.get(approval, 'a-5'))!.matches('submitted'));

    await client.send(approval, 'a-5', { type: 'APPROVE' }, { token: await awsToken() });
    const done = await client.waitFor(approval, 'a-5', (s) => s.matches('approved'), { timeoutMs: 5_000 });
    const dana = { subject: `arn:aws:sts::${ACCOUNT}:assumed-role/approver/dana`, issuer: 'aws-iam', method: 'aws-iam', roles: ['approver'] };
    assert.deepEqual(ctx(done).approver, dana);
    const last = (await client.history(approval, 'a-5')).at(-1)!;
    assert.deepEqual(last.identity, { method: dana.method, subject: dana.subject, issuer: dana.issuer, roles: dana.roles });
    assert.ok(sts.requests.some((q) => q.action === 'GetCallerIdentity'));
  });

  it('requireIdentity: no token, no start or event; an event from another instance is trusted as the engine', async () => {
    await rejects(client.start(vault, { id: 'v-1', input: {} }), ErrorCode.Unauthenticated, 'identity.missing');
    await client.start(vault, { id: 'v-1', input: {}, token: await realmToken('erin', []) });
    await rejects(client.send(vault, 'v-1', { type: 'KNOCK' }), ErrorCode.Unauthenticated, 'identity.missing');
    await outside.publishRaw('vault', 'v-1', { type: 'KNOCK' });
    await client.send(vault, 'v-1', { type: 'KNOCK' }, { token: await realmToken('erin', []) });

    await client.start(notifier, { id: 'n-1', input: { vaultId: 'v-1' } });
    await client.send(notifier, 'n-1', { type: 'NOTIFY', n: 7 });
    const v = await client.waitFor(vault, 'v-1', (s) => (s.context as { senders: unknown[] }).senders.length === 2, { timeoutMs: 5_000 });
    assert.deepEqual((v.context as { senders: unknown[] }).senders, [
      { method: 'oidc', subject: 'erin' },
      { method: 'engine', subject: 'jetstate-engine' },
    ]);
    const history = await eventually(async () => {
      const h = await client.history(vault, 'v-1');
      assert.equal(h.length, 4);
      return h;
    });
    assert.deepEqual(
      history.map((h) => [h.kind, (h.event as { type: string }).type, h.identity?.method, h.reason?.slice(0, 18)]),
      [
        ['start', 'jetstate.start', 'oidc', undefined],
        ['rejected', 'KNOCK', undefined, '[identity.missing]'],
        ['event', 'KNOCK', 'oidc', undefined],
        ['event', 'PING', 'engine', undefined],
      ],
    );
    assert.deepEqual(history[3]!.identity, { method: 'engine', subject: 'jetstate-engine', issuer: 'jetstate', roles: [] });
    assert.equal((await client.verify(vault, 'v-1')).ok, true);
  });
});

describe('engine identity: a backlog', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let realmKey: Signer;
  let client: Client;
  let engine: Engine | undefined;
  const namespace = uniqueNamespace('engidbacklog');
  let identity: IdentityOptions;

  before(async () => {
    realmKey = await oidcSigner('realm-1');
    nats = await startNats();
    identity = {
      oidc: { issuer: REALM.iss, audience: REALM.aud, jwks: { keys: [realmKey.jwk as { kty: string }] }, clockToleranceSec: 0 },
      roles: { claims: [{ claim: 'realm_access.roles' }] },
    };
    client = await createClient({ servers: nats.url, namespace, identity });
  });
  after(async () => {
    await client?.close();
    await engine?.close();
    await nats?.dispose();
  });

  it('judges a token at the time the stream accepted the event, not when an engine gets to it', async () => {
    const exp = nowSec() + 2;
    const token = await jwt(realmKey, REALM, { sub: 'carol', realm_access: { roles: ['clerk'] }, exp });
    await client.start(approval, { id: 'b-1', input: { requestId: 'b-1' }, token });
    await client.send(approval, 'b-1', { type: 'SUBMIT' }, { token });
    // No engine ran while the token expired; the event waited in the stream.
    await new Promise((r) => setTimeout(r, exp * 1000 - Date.now() + 300));
    engine = await createEngine({ servers: nats.url, namespace, workflows: [approval], identity, leaseTtlMs: 1_000, logger: memoryLogger() });
    const inst = await eventually(async () => {
      const h = await client.history(approval, 'b-1');
      assert.equal(h.length, 2);
      return h[1]!;
    });
    assert.equal(inst.kind, 'event', inst.reason);
    assert.equal(inst.identity?.subject, 'carol');
  });
});
