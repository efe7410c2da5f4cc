/**
 * Property: publishes a sender is allowed to make, made with hostile intent, never change an
 * instance, and each one is refused.
 *
 * The sender is a real NATS user with the documented sender permissions for the workflow
 * (publish `<ns>.evt.*.tally.*`, replies on its own inbox prefix). fast-check generates sequences
 * of its publishes, interleaved with legitimate traffic (`send()` and `start()` with a writer's
 * token) on a handful of instances of `tally`, a counter whose starts and events need the `writer`
 * role and whose start runs a task (so the streams also hold engine-signed events to capture):
 *
 * - subjects: the instances' own, other instances' (started or not), other in-range partitions,
 *   partition tokens no stream takes, ids that are not valid names;
 * - headers: forged `Jetstate-Sig`, `Jetstate-Signed-At` from the past and the future,
 *   `Nats-Msg-Id` values taken from legitimate traffic and guessed ones, `Jetstate-Token` that is
 *   garbage or not a writer's (unsigned, wrong key, expired, another audience, tampered, a
 *   reader's own), `Jetstate-Reply`;
 * - payloads: valid events, engine event types, starts with other inputs (with a parent, inherited
 *   secret paths, other versions), junk, and replays of captured legitimate messages read from the
 *   streams, exactly (headers and all) or with the sender's own headers.
 *
 * Out of the model: a captured writer's token reused under a new message id or on another
 * subject. A token is a bearer credential (docs/SECURITY.md): whoever holds it is its owner until
 * it expires. The generator never pairs a captured token with anything but its exact replay.
 *
 * After each sequence: every instance equals its model (its legitimate events, each applied once,
 * in stream order); every hostile publish the streams stored is refused (a dead-letter copy, and a
 * `rejected` history entry when it was addressed to an instance); the others were refused by the
 * server (a duplicate message id, no stream for the subject); no instance was created by the
 * sender; nothing is blocked; the sender never needed a permission it does not have; and at the
 * end the engine still serves.
 *
 * The seed is fixed and printed. Replay a failure with PROPERTY_SEED=<seed> (and
 * PROPERTY_PATH=<path>, as fast-check prints it):
 * PROPERTY_SEED=<seed> node --import tsx --test test/security/event-layer-property.test.ts
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager, type PubAck } from '@nats-io/jetstream';
import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow, type Client, type Engine, type IdentityOptions } from '../../engine/index.js';
import { layout, NAME_PATTERN, partitionOf } from '../../engine/protocol/names.js';
import { expectedContext, type CounterContext } from '../recovery/counter-workflow.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';
import { jwt, nowSec, oidcSigner, tampered, unsignedJwt, type Signer } from './engine-fixtures.js';

const SEED = Number(process.env['PROPERTY_SEED'] ?? 20_250_317);
const PATH = process.env['PROPERTY_PATH'];
const RUNS = 8;
const OPS = { min: 60, max: 140 };
const INSTANCES = 4;
/** Ids nobody starts, per run: the sender aims at them too. */
const UNKNOWN = 2;
const ISSUER = { iss: 'https://idp.property.example', aud: 'jetstate-property' };

const warm = activity(async () => ({ warmed: true }), { retry: { maxAttempts: 1 } });

/** A counter that only writers may start and add to; its start runs a task (an engine-signed outcome). */
const tally = defineWorkflow({
  name: 'tally',
  version: 1,
  input: z.object({ label: z.string() }),
  events: { ADD: z.object({ k: z.number().int() }) },
  permissions: { start: ['writer'], events: { ADD: ['writer'] } },
  requireIdentity: true,
  machine: setup({
    types: { input: {} as { label: string }, context: {} as CounterContext, events: {} as { type: 'ADD'; k: number } },
    actors: { warm },
  }).createMachine({
    id: 'tally',
    initial: 'warming',
    context: ({ input }) => ({ label: input.label, n: 0, log: [] }),
    on: { ADD: { actions: assign(({ context, event }) => ({ n: context.n + event.k, log: [...context.log, event.k] })) } },
    states: { warming: { invoke: { id: 'warm', src: 'warm', onDone: 'counting' } }, counting: {} },
  }),
});

// ---------------------------------------------------------------------------------------------
// What the generator chooses

type SubjectChoice =
  | { kind: 'instance'; i: number }
  | { kind: 'unknown'; j: number }
  | { kind: 'otherPartition'; i: number; shift: number }
  | { kind: 'outOfRange'; i: number; token: string }
  | { kind: 'invalidId'; p: number; id: string };

type PayloadChoice =
  | { kind: 'valid'; k: number }
  | { kind: 'engine'; type: string; invokeId: string; token: number; ok: boolean }
  | { kind: 'start'; label: string; version: unknown; parent: boolean; secrets: boolean }
  | { kind: 'junk'; data: string }
  | { kind: 'replay'; pick: number; exact: boolean };

interface HeaderChoice {
  sig?: string;
  signedAt?: 'past' | 'future' | 'now' | 'garbage';
  msgId?: { legit: number } | { guess: string };
  token?: number | string;
  reply?: string;
}

type Op =
  | { kind: 'send'; i: number; k: number }
  | { kind: 'restart'; i: number }
  | { kind: 'hostile'; subject: SubjectChoice; payload: PayloadChoice; headers: HeaderChoice };

const instanceIx = fc.integer({ min: 0, max: INSTANCES - 1 });
const k = fc.integer({ min: -1_000, max: 1_000 });
const base64url = fc.stringMatching(/^[A-Za-z0-9_-]{43}$/);
const printable = fc.stringMatching(/^[\x21-\x7e]{1,40}$/);

const subjectChoice: fc.Arbitrary<SubjectChoice> = fc.oneof(
  { weight: 50, arbitrary: instanceIx.map((i) => ({ kind: 'instance' as const, i })) },
  { weight: 10, arbitrary: fc.integer({ min: 0, max: UNKNOWN - 1 }).map((j) => ({ kind: 'unknown' as const, j })) },
  { weight: 10, arbitrary: fc.tuple(instanceIx, fc.nat()).map(([i, shift]) => ({ kind: 'otherPartition' as const, i, shift })) },
  {
    weight: 5,
    arbitrary: fc
      .tuple(instanceIx, fc.oneof(fc.integer({ min: 0, max: 200 }).map(String), fc.constantFrom('01', '-1', 'x', '1e1', '00', '+1')))
      .map(([i, token]) => ({ kind: 'outOfRange' as const, i, token })),
  },
  {
    weight: 5,
    arbitrary: fc
      .tuple(fc.nat(), fc.oneof(fc.stringMatching(/^[A-Za-z0-9_$:+#@!%-]{1,20}$/), fc.constantFrom('x'.repeat(129), 'Ünïcödé', 'a~b')))
      .filter(([, id]) => !NAME_PATTERN.test(id))
      .map(([p, id]) => ({ kind: 'invalidId' as const, p, id })),
  },
);

const ENGINE_TYPES = ['jetstate.timer', 'jetstate.task', 'jetstate.child', 'jetstate.stop', 'jetstate.kick', 'xstate.init', 'xstate.done.actor.warm'];

const payloadChoice: fc.Arbitrary<PayloadChoice> = fc.oneof(
  { weight: 25, arbitrary: k.map((k) => ({ kind: 'valid' as const, k })) },
  {
    weight: 15,
    arbitrary: fc
      .record({ type: fc.constantFrom(...ENGINE_TYPES), invokeId: fc.constantFrom('warm', 'x', ''), token: fc.integer({ min: 0, max: 5 }), ok: fc.boolean() })
      .map((e) => ({ kind: 'engine' as const, ...e })),
  },
  {
    weight: 12,
    arbitrary: fc
      .record({ label: fc.string({ maxLength: 12 }), version: fc.constantFrom(undefined, 1, 'x', 0), parent: fc.boolean(), secrets: fc.boolean() })
      .map((s) => ({ kind: 'start' as const, ...s })),
  },
  { weight: 8, arbitrary: fc.oneof(fc.json({ maxDepth: 2 }), fc.string({ maxLength: 40 })).map((data) => ({ kind: 'junk' as const, data })) },
  { weight: 30, arbitrary: fc.record({ pick: fc.nat(), exact: fc.boolean() }).map((r) => ({ kind: 'replay' as const, ...r })) },
);

const headerChoice: fc.Arbitrary<HeaderChoice> = fc.record(
  {
    sig: fc.oneof(base64url, printable),
    signedAt: fc.constantFrom('past', 'future', 'now', 'garbage'),
    msgId: fc.oneof(
      fc.nat().map((legit) => ({ legit })),
      fc
        .oneof(
          printable,
          fc.uuid(),
          base64url.map((b) => `e.${b.slice(0, 32)}`),
        )
        .map((guess) => ({ guess })),
    ),
    token: fc.oneof(fc.nat(), printable),
    reply: fc.constantFrom('_INBOX.trusted.x', '_INBOX.hostile.y', 'tally.evt', '_INBOX.>'),
  },
  { requiredKeys: [] },
);

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 30, arbitrary: fc.tuple(instanceIx, k).map(([i, k]) => ({ kind: 'send' as const, i, k })) },
  { weight: 2, arbitrary: instanceIx.map((i) => ({ kind: 'restart' as const, i })) },
  {
    weight: 68,
    arbitrary: fc.record({ subject: subjectChoice, payload: payloadChoice, headers: headerChoice }).map((h) => ({ kind: 'hostile' as const, ...h })),
  },
);

// ---------------------------------------------------------------------------------------------
// The test

/** A message read from an events stream, headers and all. */
interface Captured {
  subject: string;
  data: Uint8Array;
  headers: Array<[string, string]>;
  msgId: string | undefined;
}

/** What became of one hostile publish. */
type Outcome =
  { kind: 'stored'; stream: string; seq: number; routedTo: string | undefined } | { kind: 'duplicate' } | { kind: 'refusedByServer'; error: string };

const enc = new TextEncoder();

describe('property: allowed-but-hostile publishes never change an instance and are each refused', () => {
  const ns = uniqueNamespace('evtprop');
  const passwords = { trusted: randomBytes(12).toString('base64url'), hostile: randomBytes(12).toString('base64url') };
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let client: Client;
  let admin: { nc: NatsConnection; js: JetStreamClient; jsm: JetStreamManager };
  let hostile: { nc: NatsConnection; js: JetStreamClient };
  let idp: Signer;
  let stranger: Signer;
  let writerToken: string;
  /** Tokens the sender may carry: none of them a valid writer's. */
  let hostileTokens: string[];
  /** Dead-letter copies seen so far, by `<stream>#<seq>` of the refused event. */
  const deadLetters = new Map<string, string>();
  let deadLetterNext = 1;
  const names = layout(ns);
  const partitions = (): number => engine.partitions;
  const streamOf = (p: number): string => names.eventStream(tally.name, p);

  before(async () => {
    [idp, stranger] = await Promise.all([oidcSigner('idp-1'), oidcSigner('idp-1')]);
    const users = [
      `{ user: "trusted", password: "${passwords.trusted}" }`,
      // The documented sender's rights on this workflow's events, and its own replies.
      `{ user: "hostile", password: "${passwords.hostile}", permissions: { publish: { allow: ["${ns}.evt.*.tally.*"] }, subscribe: { allow: ["_INBOX.hostile.>"] } } }`,
    ];
    nats = await startNats({ extraConfig: `authorization { users: [\n${users.join(',\n')}\n] }` });
    const identity: IdentityOptions = {
      oidc: { issuer: ISSUER.iss, audience: ISSUER.aud, jwks: { keys: [idp.jwk as { kty: string }] } },
      roles: { claims: [{ claim: 'roles' }] },
    };
    const trusted = { user: 'trusted', pass: passwords.trusted };
    engine = await createEngine({
      servers: nats.url,
      namespace: ns,
      auth: trusted,
      workflows: [tally],
      identity,
      leaseTtlMs: 1_000,
      drainTimeoutMs: 500,
      logger: memoryLogger(),
    });
    // No identity options: it passes tokens on, and the engine judges them.
    client = await createClient({ servers: nats.url, namespace: ns, auth: trusted, workflows: [tally] });
    const anc = await connect({ servers: nats.url, ...trusted, name: 'property-admin' });
    admin = { nc: anc, js: jetstream(anc), jsm: await jetstreamManager(anc) };
    const hnc = await connect({ servers: nats.url, user: 'hostile', pass: passwords.hostile, inboxPrefix: '_INBOX.hostile', name: 'property-hostile' });
    hostile = { nc: hnc, js: jetstream(hnc) };
    writerToken = await jwt(idp, ISSUER, { sub: 'writer-1', roles: ['writer'], exp: nowSec() + 3_600 });
    hostileTokens = [
      'garbage',
      'a.b.c',
      unsignedJwt(ISSUER, { sub: 'writer-1', roles: ['writer'] }),
      await jwt(stranger, ISSUER, { sub: 'writer-1', roles: ['writer'] }),
      await jwt(idp, ISSUER, { sub: 'reader-1', roles: ['reader'] }),
      await jwt(idp, ISSUER, { sub: 'writer-1', roles: ['writer'], iat: nowSec() - 7_200, exp: nowSec() - 3_600 }),
      await jwt(idp, { ...ISSUER, aud: 'another-service' }, { sub: 'writer-1', roles: ['writer'] }),
      tampered(await jwt(idp, ISSUER, { sub: 'reader-1', roles: ['reader'] }), (c) => ({ ...c, roles: ['writer'] })),
    ];
  });
  after(async () => {
    await client?.close();
    await engine?.close();
    await hostile?.nc.close();
    await admin?.nc.close();
    await nats?.dispose();
  });

  const headerPairs = (h: MsgHdrs | undefined): Array<[string, string]> => (h ? [...h.keys()].map((key) => [key, h.get(key)]) : []);

  /** Every message of one instance's subject so far, with headers. */
  async function captureSubject(subject: string, stream: string): Promise<Captured[]> {
    const consumer = await admin.js.consumers.get(stream, { filter_subjects: subject, deliver_policy: DeliverPolicy.All });
    const out: Captured[] = [];
    try {
      const pending = (await consumer.info(true)).num_pending;
      while (out.length < pending) {
        const batch = await consumer.fetch({ max_messages: pending - out.length, expires: 2_000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          out.push({ subject: m.subject, data: m.data, headers: headerPairs(m.headers), msgId: m.headers?.get('Nats-Msg-Id') || undefined });
        }
        if (got === 0) break;
      }
    } finally {
      await consumer.delete().catch(() => {});
    }
    return out;
  }

  async function captureSeq(stream: string, seq: number): Promise<Captured> {
    const m = await admin.jsm.streams.getMessage(stream, { seq });
    assert.ok(m, `message ${seq} of ${stream} is stored`);
    return { subject: m.subject, data: m.data, headers: headerPairs(m.header), msgId: m.header?.get('Nats-Msg-Id') || undefined };
  }

  /** Reads the dead-letter copies stored since the last call. */
  async function readDeadLetters(): Promise<void> {
    const info = await admin.jsm.streams.info(names.deadLetterStream);
    if (info.state.last_seq < deadLetterNext) return;
    const consumer = await admin.js.consumers.get(names.deadLetterStream, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: deadLetterNext });
    try {
      while (deadLetterNext <= info.state.last_seq) {
        const batch = await consumer.fetch({ max_messages: 512, expires: 2_000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          deadLetterNext = m.seq + 1;
          deadLetters.set(`${m.headers?.get('Jetstate-Stream')}#${m.headers?.get('Jetstate-Seq')}`, m.headers?.get('Jetstate-Reason') ?? '');
        }
        if (got === 0) break;
      }
    } finally {
      await consumer.delete().catch(() => {});
    }
  }

  it(`holds for ${RUNS} generated sequences (seed ${SEED})`, { timeout: 120_000 }, async () => {
    console.log(`property seed: ${SEED}${PATH ? `, path: ${PATH}` : ''} (replay: PROPERTY_SEED=${SEED} [PROPERTY_PATH=<path>])`);
    let run = 0;
    const counts = new Map<string, number>();
    const count = (key: string): void => void counts.set(key, (counts.get(key) ?? 0) + 1);

    const property = fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: OPS.min, maxLength: OPS.max }), async (ops) => {
        run++;
        const ids = Array.from({ length: INSTANCES }, (_, i) => `r${run}-${i}`);
        const unknown = Array.from({ length: UNKNOWN }, (_, j) => `u${run}-${j}`);
        const subjectOf = (id: string, p = partitionOf(tally.name, id, partitions())): string => names.eventSubject(p, tally.name, id);

        // Legitimate starts; each instance runs its task (an engine-signed event) before the sequence.
        await Promise.all(ids.map((id) => client.start(tally, { id, input: { label: id }, token: writerToken })));
        await Promise.all(ids.map((id) => engine.waitFor(tally, id, (s) => s.matches('counting'), { timeoutMs: 10_000 })));
        const captured: Captured[] = [];
        for (const id of ids) captured.push(...(await captureSubject(subjectOf(id), streamOf(partitionOf(tally.name, id, partitions())))));
        const engineSeqs = new Map<string, Set<number>>();
        for (const id of ids) {
          const h = await engine.history(tally, id);
          engineSeqs.set(id, new Set(h.filter((e) => e.kind === 'event').map((e) => e.seq)));
        }

        const legit = new Map<string, Array<{ seq: number; k: number }>>(ids.map((id) => [id, []]));
        const outcomes: Array<{ op: Op & { kind: 'hostile' }; outcome: Outcome }> = [];

        for (const o of ops) {
          if (o.kind === 'send') {
            const id = ids[o.i]!;
            const r = await client.send(tally, id, { type: 'ADD', k: o.k }, { token: writerToken });
            assert.equal(r.duplicate, false);
            legit.get(id)!.push({ seq: r.seq, k: o.k });
            captured.push(await captureSeq(streamOf(partitionOf(tally.name, id, partitions())), r.seq));
            count('legit send');
            continue;
          }
          if (o.kind === 'restart') {
            const id = ids[o.i]!;
            const again = await client.start(tally, { id, input: { label: id }, token: writerToken });
            assert.equal(again.id, id);
            count('legit restart');
            continue;
          }
          outcomes.push({ op: o, outcome: await publishHostile(o, ids, unknown, captured, subjectOf) });
        }

        // Every instance equals its model: its legitimate events, once each, in stream order.
        for (const id of ids) {
          const mine = legit.get(id)!.sort((a, b) => a.seq - b.seq);
          const done = await engine.waitFor(tally, id, (s) => s.revision === 2 + mine.length, { timeoutMs: 15_000 });
          assert.deepEqual(
            done.context,
            expectedContext(
              id,
              mine.map((m) => m.k),
            ),
            `instance ${id} equals its model`,
          );
          assert.equal(done.status, 'running');
        }

        // Every hostile message the streams stored is refused: a dead-letter copy, and a rejected
        // history entry when it was addressed to an instance; it is never applied.
        const stored = outcomes.flatMap((x) => (x.outcome.kind === 'stored' ? [x.outcome] : []));
        for (const x of outcomes) count(`hostile ${x.op.payload.kind}: ${x.outcome.kind}`);
        await eventually(async () => {
          await readDeadLetters();
          const missing = stored.filter((s) => !deadLetters.has(`${s.stream}#${s.seq}`));
          assert.deepEqual(missing, [], 'a dead-letter copy of every stored hostile message');
        }, 15_000);
        const routed = new Map<string, number[]>();
        for (const s of stored) if (s.routedTo) routed.set(s.routedTo, [...(routed.get(s.routedTo) ?? []), s.seq]);
        for (const id of [...ids, ...unknown]) {
          const seqs = routed.get(id) ?? [];
          const history = await eventually(async () => {
            const h = await engine.history(tally, id);
            const rejected = new Set(h.filter((e) => e.kind === 'rejected').map((e) => e.seq));
            const missing = seqs.filter((seq) => !rejected.has(seq));
            assert.deepEqual(missing, [], `instance ${id}: a rejected history entry for every hostile message addressed to it`);
            return h;
          }, 15_000);
          const allowed = new Set([...(engineSeqs.get(id) ?? []), ...(legit.get(id) ?? []).map((m) => m.seq)]);
          const applied = history.filter((e) => e.kind === 'event').map((e) => e.seq);
          assert.deepEqual(
            applied.filter((seq) => !allowed.has(seq)),
            [],
            `instance ${id}: only legitimate events applied`,
          );
        }
        // Not created (a refused start may show as pending until the partition's checkpoint passes it).
        for (const id of unknown) await eventually(async () => assert.equal(await engine.get(tally, id), null, `the sender did not create '${id}'`), 10_000);
        assert.deepEqual(engine.status().blocked, [], 'no instance is blocked');
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true, ...(PATH ? { path: PATH } : {}) },
    );
    // The test runner prints the property's failure without its cause: put the cause in the message.
    await property.catch((e: Error) => {
      const cause = e.cause instanceof Error ? e.cause.message : undefined;
      throw cause ? Object.assign(new Error(`${cause}\n\n${e.message.slice(0, 2_000)}`), { cause: e }) : e;
    });

    console.log(
      `ops: ${[...counts]
        .sort()
        .map(([key, n]) => `${key} ${n}`)
        .join(', ')}`,
    );
    assert.deepEqual(nats.log().match(/Publish Violation - User "hostile".*/g) ?? [], [], 'the sender stayed within its permissions');
    // The engine still serves: a new instance starts and takes an event.
    const id = `after-${randomBytes(3).toString('hex')}`;
    await client.start(tally, { id, input: { label: id }, token: writerToken });
    await client.send(tally, id, { type: 'ADD', k: 42 }, { token: writerToken });
    const last = await engine.waitFor(tally, id, (s) => s.revision === 3, { timeoutMs: 10_000 });
    assert.deepEqual(last.context, expectedContext(id, [42]));
  });

  // Found by this property (with versions other than 1 in generated starts): a start naming a
  // version no engine registered waits in the stream for an engine that has it. Only a sender the
  // newest version's start rules admit may make it wait (a wait holds the id and the partition's trim).
  it("a start for an unregistered version from a sender without a writer token is refused, not parked; a writer's waits", async () => {
    const id = `parked-${randomBytes(3).toString('hex')}`;
    const subject = names.eventSubject(partitionOf(tally.name, id, partitions()), tally.name, id);
    const ack = await hostile.js.publish(subject, JSON.stringify({ type: 'jetstate.start', input: { label: id }, version: 2 }));
    await eventually(async () => {
      await readDeadLetters();
      assert.ok(deadLetters.has(`${ack.stream}#${ack.seq}`), 'the start is dead-lettered');
    }, 10_000);
    assert.deepEqual(engine.status().blocked, [], 'no instance is blocked');

    const waiting = `waits-${randomBytes(3).toString('hex')}`;
    const h = natsHeaders();
    h.set('Jetstate-Token', writerToken);
    await hostile.js.publish(
      names.eventSubject(partitionOf(tally.name, waiting, partitions()), tally.name, waiting),
      JSON.stringify({ type: 'jetstate.start', input: { label: waiting }, version: 2 }),
      { headers: h },
    );
    await eventually(
      () =>
        assert.ok(
          engine.status().blocked.some((b) => b.key.endsWith(waiting) && /version 2/.test(b.reason)),
          "the writer's start waits for an engine with version 2",
        ),
      10_000,
    );
  });

  /** Publishes one hostile message as the sender and says what became of it. */
  async function publishHostile(
    o: Op & { kind: 'hostile' },
    ids: string[],
    unknown: string[],
    captured: Captured[],
    subjectOf: (id: string, p?: number) => string,
  ): Promise<Outcome> {
    const n = partitions();
    let subject: string;
    let routedTo: string | undefined;
    const s = o.subject;
    if (s.kind === 'instance') [subject, routedTo] = [subjectOf(ids[s.i]!), ids[s.i]!];
    else if (s.kind === 'unknown') [subject, routedTo] = [subjectOf(unknown[s.j]!), unknown[s.j]!];
    else if (s.kind === 'otherPartition') {
      const id = ids[s.i]!;
      subject = subjectOf(id, (partitionOf(tally.name, id, n) + 1 + (s.shift % Math.max(1, n - 1))) % n);
    } else if (s.kind === 'outOfRange') {
      const token = /^\d+$/.test(s.token) && s.token === String(Number(s.token)) ? String(n + Number(s.token)) : s.token;
      subject = `${ns}.evt.${token}.${tally.name}.${ids[s.i]!}`;
    } else subject = `${ns}.evt.${s.p % n}.${tally.name}.${s.id}`;

    let data: Uint8Array;
    const h = natsHeaders();
    let msgID: string | undefined;
    const p = o.payload;
    if (p.kind === 'replay' && p.exact) {
      // A captured message as it was stored: its subject, body and headers (token, signature, message id).
      const c = captured[p.pick % captured.length]!;
      subject = c.subject;
      routedTo = ids.find((id) => subjectOf(id) === c.subject);
      data = c.data;
      for (const [key, value] of c.headers) if (key !== 'Nats-Msg-Id') h.set(key, value);
      msgID = c.msgId;
    } else {
      if (p.kind === 'replay') data = captured[p.pick % captured.length]!.data;
      else if (p.kind === 'valid') data = enc.encode(JSON.stringify({ type: 'ADD', k: p.k }));
      else if (p.kind === 'engine')
        data = enc.encode(JSON.stringify({ type: p.type, invokeId: p.invokeId, timerId: p.invokeId, token: p.token, ok: p.ok, output: { forged: true } }));
      else if (p.kind === 'start') {
        const start: Record<string, unknown> = { type: 'jetstate.start', input: { label: p.label } };
        if (p.version !== undefined) start['version'] = p.version;
        if (p.parent) start['parent'] = { workflow: tally.name, id: ids[0], invokeId: 'warm', token: 1 };
        if (p.secrets) start['secrets'] = ['label'];
        data = enc.encode(JSON.stringify(start));
      } else data = enc.encode(p.data);
      // The sender's own headers: never a valid writer's token.
      const hd = o.headers;
      if (hd.sig !== undefined) h.set('Jetstate-Sig', hd.sig);
      if (hd.signedAt !== undefined) {
        const at = { past: Date.now() - 3_600_000, future: Date.now() + 3_600_000, now: Date.now() }[hd.signedAt as 'past'];
        h.set('Jetstate-Signed-At', hd.signedAt === 'garbage' ? 'soon' : String(at));
      }
      if (hd.token !== undefined) h.set('Jetstate-Token', typeof hd.token === 'number' ? hostileTokens[hd.token % hostileTokens.length]! : hd.token);
      if (hd.reply !== undefined) h.set('Jetstate-Reply', hd.reply);
      if (hd.msgId !== undefined) msgID = 'legit' in hd.msgId ? captured[hd.msgId.legit % captured.length]!.msgId : hd.msgId.guess;
    }
    let ack: PubAck;
    try {
      ack = await hostile.js.publish(subject, data, { headers: h, ...(msgID ? { msgID } : {}), timeout: 5_000 });
    } catch (e) {
      return { kind: 'refusedByServer', error: (e as Error).message };
    }
    if (ack.duplicate) return { kind: 'duplicate' };
    return { kind: 'stored', stream: ack.stream, seq: ack.seq, routedTo };
  }
});
