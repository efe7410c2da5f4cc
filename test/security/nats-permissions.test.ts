/**
 * The NATS permissions of docs/SECURITY.md ("NATS permissions: only engines write the engine's
 * state") on a real nats-server: one user per role (engine, sender, reader) with exactly the
 * table's permissions for this test's namespace, each connected through `auth: { user, pass }` and
 * its own inbox prefix (`_INBOX.<role>`). The library works within them (the server logs no
 * refusal the test did not provoke), and what a role may not do fails at the server: a sender
 * starts and sends but cannot write a record, read the signing key, forge an engine event or read
 * another user's replies; a reader cannot publish an event. Every entry of the sender's and the
 * reader's sets is shown to be needed by taking it away.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { headers as natsHeaders, type NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import {
  activity,
  createClient,
  createEngine,
  defineWorkflow,
  ErrorCode,
  JetstateError,
  partitionOf,
  type Client,
  type Engine,
  type Instance,
} from '../../engine/index.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';
import { layout, shardOf } from '../../engine/protocol/names.js';
import { PARTITIONS, refusalsIn, rolePermissions as rolesFor, SHARDS, userConf, violationOf, type Permissions, type Role } from './nats-roles.js';

/** The workflows of this test, whose subjects the sets name. */
const WORKFLOWS = ['ledger', 'intake'] as const;
const rolePermissions = (ns: string): Record<Role, Permissions> => rolesFor(ns, WORKFLOWS);

/** The bucket of one ledger instance's record. */
const recordBucket = (ns: string, id: string): string => layout(ns).instancesShard(shardOf('ledger', id, PARTITIONS, SHARDS));

/**
 * Entries a role should have although its calls work without them: a reader deletes its history
 * consumer when done (else the server removes it once idle), and nats.js asks for the consumer's
 * info to recover a read after a reconnect or missed heartbeats; a sender reads the lease of an
 * instance's partition before a start to know whether to wait for the engine's answer (without
 * it, start() waits up to its timeout when no engine runs), and the secret paths the namespace
 * publishes for a workflow before it seals an event (without it, it seals with its definition's
 * paths only, and warns once).
 */
const OPTIONAL =
  /^\$JS\.API\.(CONSUMER\.(DELETE|INFO)\.|DIRECT\.GET\.KV_[^.]+_control\.\$KV\.[^.]+_control\.(lease|parked|checkpoint|secrets)\.|STREAM\.MSG\.GET\.[^.]+_evt_)/;

/** The entries taken away one at a time, each from its own user: all of the sender's and the reader's. */
function sweptEntries(ns: string): Array<{ user: string; role: Exclude<Role, 'engine'>; entry: string; permissions: Permissions }> {
  const perms = rolePermissions(ns);
  // Of the per-partition reads, one stands for the rest; of the record reads, the one of the
  // bucket that holds the instances both roles read ('l-1').
  const sampled = (entry: string): boolean =>
    /_evt_/.test(entry)
      ? entry.endsWith('_evt_ledger_0')
      : /DIRECT\.GET\.KV_[^.]+_instances/.test(entry)
        ? entry.includes(`KV_${recordBucket(ns, 'l-1')}.`)
        : true;
  return (['sender', 'reader'] as const).flatMap((role) =>
    perms[role].publish.flatMap((entry, i) =>
      sampled(entry)
        ? [{ user: `${role}-minus-${i}`, role, entry, permissions: { ...perms[role], publish: perms[role].publish.filter((_, j) => j !== i) } }]
        : [],
    ),
  );
}

/** Each user's own inbox prefix: a swept user has its role's (its permissions allow only that). */
const inboxOf = (user: string): string => `_INBOX.${user.split('-')[0]}`;

/** A user per role, and one per swept entry. */
function usersFor(ns: string, passwords: Map<string, string>): string {
  const users: Array<[string, Permissions]> = [
    ...(Object.entries(rolePermissions(ns)) as Array<[Role, Permissions]>),
    ...sweptEntries(ns).map((s) => [s.user, s.permissions] as [string, Permissions]),
  ];
  for (const [user] of users) passwords.set(user, randomBytes(9).toString('base64url'));
  return `authorization { users: [\n${users.map(([u, p]) => userConf(u, passwords.get(u)!, p)).join(',\n')}\n] }`;
}

interface LedgerContext {
  owner: string;
  n: number;
}

/** Actions the engine ran at a start, by instance. */
const started: string[] = [];

const archive = activity(async () => ({ archived: true }), { retry: { maxAttempts: 1 } });

/**
 * Its start runs a custom action (the engine runs it after creating the record), `open` holds a long timer
 * (something real for a forged timer fire to aim at), CLOSE runs a task and a short timer: the
 * engine's own timers and tasks go through its permissions too.
 */
const ledger = defineWorkflow({
  name: 'ledger',
  version: 1,
  input: z.object({ owner: z.string() }),
  events: { ADD: z.object({ k: z.number().int() }), CLOSE: z.object({}) },
  machine: setup({
    types: { input: {} as { owner: string }, context: {} as LedgerContext, events: {} as { type: 'ADD'; k: number } | { type: 'CLOSE' } },
    actions: { announce: ({ context }: { context: LedgerContext }) => void started.push(context.owner) },
    actors: { archive },
  }).createMachine({
    id: 'ledger',
    initial: 'open',
    context: ({ input }) => ({ owner: input.owner, n: 0 }),
    entry: 'announce',
    states: {
      open: {
        after: { 600_000: 'expired' },
        on: { ADD: { actions: assign({ n: ({ context, event }) => context.n + event.k }) }, CLOSE: 'archiving' },
      },
      archiving: { invoke: { src: 'archive', onDone: 'cooling' } },
      cooling: { after: { 50: 'closed' } },
      closed: { type: 'final' },
      expired: { type: 'final' },
    },
  }),
});

/** Its start invokes a task: the engine publishes the task message when it creates the record. */
const intake = defineWorkflow({
  name: 'intake',
  version: 1,
  input: z.object({ owner: z.string() }),
  events: {},
  machine: setup({ types: { input: {} as { owner: string } }, actors: { archive } }).createMachine({
    id: 'intake',
    initial: 'filing',
    states: { filing: { invoke: { src: 'archive', onDone: 'filed' } }, filed: { type: 'final' } },
  }),
});

/** A call that neither finished nor failed within its time. */
class Hung extends Error {}

async function deniedPublish(work: Promise<unknown>, subject: string): Promise<void> {
  await assert.rejects(work, (e: unknown) => {
    const v = violationOf(e);
    assert.ok(v, `a permission violation, got: ${String(e)}`);
    assert.equal(v.operation, 'publish');
    assert.equal(v.subject, subject);
    return true;
  });
}

describe("NATS permissions: only engines write the engine's state", () => {
  const ns = uniqueNamespace('natsperm');
  const passwords = new Map<string, string>();
  const logger = memoryLogger();
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  const clients = new Map<Role, Client>();
  const raw = new Map<Role, { nc: NatsConnection; js: JetStreamClient; jsm: JetStreamManager }>();
  /** The violations this test provokes on purpose, by user: nothing else may show in the server's log. */
  const provoked: Array<{ user: string; subject: string }> = [];

  const auth = (user: string): { user: string; pass: string } => ({ user, pass: passwords.get(user)! });
  const as = (user: string): { auth: { user: string; pass: string }; inboxPrefix: string } => ({ auth: auth(user), inboxPrefix: inboxOf(user) });
  const client = (role: Role): Client => clients.get(role)!;
  const subjectOf = (id: string): string => `${ns}.evt.${partitionOf('ledger', id, engine.partitions)}.ledger.${id}`;
  const instanceSubject = (id: string): string => `$KV.${recordBucket(ns, id)}.ledger.${id}`;

  /** A plain NATS connection as `role`: what a process holding those credentials can do around the library. */
  async function rawAs(role: Role): Promise<{ nc: NatsConnection; js: JetStreamClient; jsm: JetStreamManager }> {
    const nc = await connect({ servers: nats.url, ...auth(role), inboxPrefix: inboxOf(role), name: `raw-${role}` });
    // No account-info check: the role may only make the calls the test names.
    const conn = { nc, js: jetstream(nc), jsm: await jetstreamManager(nc, { checkAPI: false }) };
    raw.set(role, conn);
    return conn;
  }

  async function snapshot(id: string): Promise<Pick<Instance, 'revision' | 'value' | 'context' | 'status'>> {
    const i = await engine.get(ledger, id);
    assert.ok(i, `instance ${id} exists`);
    return { revision: i.revision, value: i.value, context: i.context, status: i.status };
  }

  /** The refusals in the server's log. */
  const refusals = (): Array<{ op: string; user: string; subject: string }> => refusalsIn(nats.log());

  before(async () => {
    nats = await startNats({ extraConfig: usersFor(ns, passwords) });
  });
  after(async () => {
    for (const c of clients.values()) await c.close().catch(() => {});
    await engine?.close().catch(() => {});
    for (const r of raw.values()) await r.nc.close().catch(() => {});
    await nats?.dispose();
  });

  it('a sender cannot create the namespace: it waits for an engine, and says so', async () => {
    await assert.rejects(createClient({ servers: nats.url, namespace: ns, ...as('sender'), workflows: [ledger], logger }), (e: unknown) => {
      assert.ok(e instanceof JetstateError, String(e));
      assert.equal(e.code, ErrorCode.PermissionDenied);
      assert.match(
        e.message,
        new RegExp(
          `^\\[nats\\.permission\\] namespace '${ns}': this NATS user may not publish to '\\$JS\\.API\\.STREAM\\.CREATE\\.${ns}_history'.*start one first`,
        ),
      );
      return true;
    });
    provoked.push({ user: 'sender', subject: `$JS.API.STREAM.CREATE.${ns}_history` });
  });

  it('the engine creates the namespace and applies events', async () => {
    engine = await createEngine({
      servers: nats.url,
      namespace: ns,
      ...as('engine'),
      workflows: [ledger, intake],
      logger,
      leaseTtlMs: 2_000,
      drainTimeoutMs: 500,
    });
    await engine.start(ledger, { id: 'by-engine', input: { owner: 'by-engine' } });
    await engine.send(ledger, 'by-engine', { type: 'ADD', k: 2 });
    const done = await engine.waitFor(ledger, 'by-engine', (i) => (i.context as LedgerContext).n === 2, { timeoutMs: 10_000 });
    assert.equal(done.revision, 2);
    await eventually(() => assert.ok(started.includes('by-engine'), 'the start action ran'));
    for (const role of ['sender', 'reader'] as const) {
      clients.set(role, await createClient({ servers: nats.url, namespace: ns, ...as(role), workflows: [ledger, intake], logger }));
    }
  });

  it("the sender starts instances (the engine creates them and runs the start's action) and its events are applied", async () => {
    const first = await client('sender').start(ledger, { id: 'l-1', input: { owner: 'l-1' } });
    assert.equal(first.revision, 1);
    await eventually(() => assert.ok(started.includes('l-1'), "the engine ran the start's action"));
    const again = await client('sender').start(ledger, { id: 'l-1', input: { owner: 'l-1' } });
    assert.equal(again.revision, first.revision, 'a repeated start returns the instance');
    await assert.rejects(
      client('sender').start(ledger, { id: 'l-1', input: { owner: 'someone else' } }),
      (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.InstanceConflict,
    );

    await client('sender').send(ledger, 'l-1', { type: 'ADD', k: 5 });
    const added = await engine.waitFor(ledger, 'l-1', (i) => (i.context as LedgerContext).n === 5, { timeoutMs: 10_000 });
    assert.deepEqual(added.value, 'open');

    // A whole life under these permissions: the engine's task and timer, on their streams.
    await client('sender').start(ledger, { id: 'l-2', input: { owner: 'l-2' } });
    await client('sender').send(ledger, 'l-2', { type: 'CLOSE' });
    const closed = await engine.waitFor(ledger, 'l-2', (i) => i.status === 'done', { timeoutMs: 10_000 });
    assert.deepEqual(closed.value, 'closed');
    // A start that invokes a task: the engine publishes the task message.
    await client('sender').start(intake, { id: 'i-1', input: { owner: 'i-1' } });
    await engine.waitFor(intake, 'i-1', (i) => i.status === 'done', { timeoutMs: 10_000 });
  });

  it('the sender cannot write the instances bucket: the server refuses, the record is unchanged', async () => {
    const before = await snapshot('l-1');
    const { js } = await rawAs('sender');
    const forged = JSON.stringify({ forged: true });
    await deniedPublish(js.publish(instanceSubject('l-1'), forged), instanceSubject('l-1'));
    const kv = await new Kvm(js).open(recordBucket(ns, 'l-1'));
    await deniedPublish(kv.put('ledger.l-1', forged), instanceSubject('l-1'));
    await deniedPublish(kv.delete('ledger.l-1'), instanceSubject('l-1'));
    await deniedPublish(js.publish(instanceSubject('l-new'), forged, { expect: { lastSubjectSequence: 0 } }), instanceSubject('l-new'));
    provoked.push(...['l-1', 'l-1', 'l-1', 'l-new'].map((id) => ({ user: 'sender', subject: instanceSubject(id) })));
    assert.equal(await engine.get(ledger, 'l-new'), null);
    assert.deepEqual(await snapshot('l-1'), before);
  });

  it('the sender cannot read the control bucket, so it cannot learn the signing key', async () => {
    const { nc, jsm } = raw.get('sender')!;
    const stream = `KV_${ns}_control`;
    const keySubject = `$KV.${ns}_control.auth.engine-key`;
    await deniedPublish(jsm.direct.getMessage(stream, { last_by_subj: keySubject }), `$JS.API.DIRECT.GET.${stream}.${keySubject}`);
    await deniedPublish(jsm.direct.getMessage(stream, { seq: 1 }), `$JS.API.DIRECT.GET.${stream}`);
    await deniedPublish(jsm.streams.getMessage(stream, { last_by_subj: keySubject }), `$JS.API.STREAM.MSG.GET.${stream}`);
    await deniedPublish(
      nc.request(`$JS.API.CONSUMER.CREATE.${stream}`, JSON.stringify({ stream_name: stream, config: { filter_subject: keySubject } })),
      `$JS.API.CONSUMER.CREATE.${stream}`,
    );
    // The one control key a client reads is the namespace's layout.
    provoked.push(
      ...[
        `$JS.API.DIRECT.GET.${stream}.${keySubject}`,
        `$JS.API.DIRECT.GET.${stream}`,
        `$JS.API.STREAM.MSG.GET.${stream}`,
        `$JS.API.CONSUMER.CREATE.${stream}`,
      ].map((subject) => ({ user: 'sender', subject })),
    );
    const meta = await jsm.direct.getMessage(stream, { last_by_subj: `$KV.${ns}_control.meta` });
    assert.deepEqual(meta?.json(), { layoutVersion: 2, partitions: engine.partitions, shards: 4 });
  });

  it('an engine event the sender publishes is rejected as [forged] and changes nothing', async () => {
    const { js, jsm } = raw.get('sender')!;
    // The sender may read the record, so it aims at the real pending timer with its real token.
    const stored = await jsm.direct.getMessage(`KV_${recordBucket(ns, 'l-1')}`, { last_by_subj: instanceSubject('l-1') });
    const [timerId, timer] = Object.entries(stored!.json<{ timers: Record<string, { token: number }> }>().timers)[0]!;
    const before = await snapshot('l-1');
    const fire = JSON.stringify({ type: 'jetstate.timer', timerId, token: timer.token });
    const guessed = natsHeaders();
    guessed.set('Jetstate-Sig', randomBytes(32).toString('base64url'));
    const seqs = [
      (await js.publish(subjectOf('l-1'), fire)).seq,
      (await js.publish(subjectOf('l-1'), fire, { headers: guessed })).seq,
      (await js.publish(subjectOf('l-1'), JSON.stringify({ type: 'jetstate.stop' }))).seq,
    ];
    const rejected = await eventually(async () => {
      const entries = (await client('reader').history(ledger, 'l-1')).filter((h) => h.kind === 'rejected' && seqs.includes(h.seq!));
      assert.equal(entries.length, seqs.length, 'every forgery is in the history');
      return entries;
    });
    for (const r of rejected)
      assert.match(
        r.reason ?? '',
        /^\[forged\] (an engine event \('jetstate\.(timer|stop)'\) without a valid engine signature|event 'jetstate\.timer' carries an engine signature that does not match it)$/,
      );
    assert.deepEqual(await snapshot('l-1'), before, 'the instance is unchanged');
    // ...and still served: a valid event after the forgeries is applied.
    await client('sender').send(ledger, 'l-1', { type: 'ADD', k: 1 });
    const now = await engine.waitFor(ledger, 'l-1', (i) => (i.context as LedgerContext).n === 6, { timeoutMs: 10_000 });
    assert.equal(now.revision, before.revision + 1);
    assert.deepEqual(now.value, 'open');
  });

  it("a sender listening on every subject it may subscribe to learns nothing secret: no engine key, no other user's replies", async () => {
    const { nc } = raw.get('sender') ?? (await rawAs('sender'));
    // The shared inbox space is closed to it.
    for (const subject of ['_INBOX.>', '_INBOX.engine.>', '>']) {
      const refused = new Promise<Error>((resolve) => nc.subscribe(subject, { callback: (err) => void (err && resolve(err)) }));
      const err = await refused;
      assert.match(err.message, /Permissions Violation for Subscription/i, subject);
      provoked.push({ user: 'sender', subject });
    }
    // What it may subscribe to: its own inbox prefix. Meanwhile an engine opens the namespace
    // (reading the signing key) and the reader and the engine make requests of their own.
    const heard: Uint8Array[] = [];
    const sub = nc.subscribe('_INBOX.sender.>', { callback: (err, m) => void (!err && heard.push(m.data)) });
    const second = await createEngine({
      servers: nats.url,
      namespace: ns,
      ...as('engine'),
      workflows: [ledger, intake],
      logger,
      leaseTtlMs: 2_000,
      drainTimeoutMs: 500,
    });
    try {
      await client('reader').history(ledger, 'l-1');
      await second.start(ledger, { id: 'l-quiet', input: { owner: 'l-quiet' } });
    } finally {
      await second.close();
    }
    sub.unsubscribe();
    const control = await new Kvm(jetstream((await rawAs('engine')).nc)).open(`${ns}_control`);
    const key = Buffer.from((await control.get('auth.engine-key'))!.value);
    const all = Buffer.concat(heard.map((h) => Buffer.from(h)));
    for (const form of [key, Buffer.from(key.toString('base64')), Buffer.from(key.toString('base64url'))])
      assert.equal(all.indexOf(form), -1, 'the signing key never reached it');
    assert.equal(heard.length, 0, 'nothing addressed to other users reached its inbox');
  });

  it('the reader reads state and history but cannot publish events or write records', async () => {
    const reader = client('reader');
    const instance = await reader.get(ledger, 'l-1');
    assert.deepEqual(instance && { revision: instance.revision, context: instance.context }, { revision: 3, context: { owner: 'l-1', n: 6 } });
    assert.equal(await reader.get(ledger, 'missing'), null);
    const history = await reader.history(ledger, 'l-1');
    assert.deepEqual(
      history.map((h) => h.kind),
      // The conflicting start, the first ADD, the three forgeries, the last ADD.
      ['start', 'rejected', 'event', 'rejected', 'rejected', 'rejected', 'event'],
    );
    const before = await snapshot('l-1');
    await deniedPublish(reader.send(ledger, 'l-1', { type: 'ADD', k: 100 }), subjectOf('l-1'));
    const { js } = await rawAs('reader');
    await deniedPublish(js.publish(subjectOf('l-1'), JSON.stringify({ type: 'ADD', k: 100 })), subjectOf('l-1'));
    await deniedPublish(js.publish(instanceSubject('l-1'), '{}'), instanceSubject('l-1'));
    provoked.push(...[subjectOf('l-1'), subjectOf('l-1'), instanceSubject('l-1')].map((subject) => ({ user: 'reader', subject })));
    // The reader's send read the workflow's published secret paths first, refused too (warned).
    provoked.push({ user: 'reader', subject: `$JS.API.DIRECT.GET.KV_${ns}_control.$KV.${ns}_control.secrets.ledger` });
    assert.deepEqual(await snapshot('l-1'), before);
  });

  it("every entry of the sender's and the reader's sets is needed", async () => {
    const attempt = async (user: string, work: (c: Client) => Promise<unknown>): Promise<unknown> => {
      let c: Client | undefined;
      let timer: NodeJS.Timeout | undefined;
      try {
        c = await createClient({ servers: nats.url, namespace: ns, ...as(user), workflows: [ledger, intake], logger });
        const hung = new Promise<never>((_, ko) => (timer = setTimeout(() => ko(new Hung()), 3_000)));
        await Promise.race([work(c), hung]);
        return undefined;
      } catch (e) {
        return e;
      } finally {
        clearTimeout(timer);
        await c?.close();
      }
    };
    let n = 0;
    const work: Record<Exclude<Role, 'engine'>, (c: Client) => Promise<unknown>> = {
      sender: async (c) => {
        const id = `s-${++n}`;
        await c.start(ledger, { id, input: { owner: id } });
        await c.start(intake, { id, input: { owner: id } });
        await c.send(ledger, 'l-1', { type: 'ADD', k: 0 });
      },
      reader: async (c) => [await c.get(ledger, 'l-1'), await c.get(ledger, 'missing'), await c.history(ledger, 'l-1')],
    };
    for (const { user, role, entry } of sweptEntries(ns)) {
      const error = await attempt(user, work[role]);
      if (OPTIONAL.test(entry)) {
        assert.equal(error, undefined, `${user} (without ${entry}) still works`);
        provoked.push({ user, subject: entry.replace(/>$/, '') });
        continue;
      }
      assert.ok(error, `${user} (without ${entry}) should fail`);
      const pattern = new RegExp(`^${entry.replace(/[.$]/g, '\\$&').replace(/>$/, '.+').replace(/\*/g, '[^.]+')}$`);
      if (error instanceof Hung) {
        // A refused pull request is not an error nats.js reports: history() keeps waiting for messages.
        assert.match(entry, /CONSUMER\.MSG\.NEXT/, `only a refused pull request hangs, not ${user}`);
        const refused = await eventually(() => {
          const m = refusals().find((v) => v.user === user);
          assert.ok(m, `the server refused ${user}`);
          return m;
        });
        assert.match(refused.subject, pattern, `${user} is refused the entry taken away`);
        // Whatever nats.js tries next to recover the read (consumer info, new pulls) is refused too.
        provoked.push({ user, subject: '' });
        continue;
      }
      const v = violationOf(error);
      assert.ok(v, `${user} (without ${entry}): a permission violation, got ${String(error)}`);
      assert.match(v.subject, pattern, `${user} fails on the entry taken away`);
      provoked.push({ user, subject: v.subject });
    }
  });

  it('nothing else was refused: the library stays within these permissions', async () => {
    assert.match(nats.log(), /Starting nats-server/, "the server's whole log is at hand (it keeps the last 16 kB)");
    const violations = refusals();
    assert.deepEqual(
      violations.filter((v) => v.op !== 'Publish' && !provoked.some((p) => p.user === v.user && p.subject === v.subject)),
      [],
      'no subscription was refused but those provoked',
    );
    const unexpected = violations.filter((v) => !provoked.some((p) => p.user === v.user && v.subject.startsWith(p.subject)));
    assert.deepEqual(unexpected, [], 'only the refusals the test provoked');
    assert.deepEqual(
      violations.filter((v) => v.user === 'engine'),
      [],
      'engine: no refusal',
    );
    assert.deepEqual(
      logger.lines.filter((l) => /error/i.test(l)),
      [],
    );
  });
});
