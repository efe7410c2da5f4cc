/**
 * Hostile input against a live engine on a real nats-server. Every case is published straight to
 * the instance's event subject by a raw NATS client (what a client with publish rights can do
 * around `send()`), and through `send()` where that applies. For every rejected event the test
 * checks what guarantee 7 promises: a history entry `{ kind: 'rejected' }` with a clear reason,
 * the instance unchanged, a copy in the dead-letter stream with a `Jetstate-Reason` header, and
 * an engine that still serves: a later valid event is applied after it, nothing is blocked and
 * nothing is retried.
 */
import assert from 'node:assert/strict';
import { EngineSigner } from '../../engine/security/signer.js';
import { createHmac, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
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
  type Engine,
  type HistoryEntry,
  type WorkflowDefinition,
} from '../../engine/index.js';
import { layout } from '../../engine/protocol/names.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';

interface HostileContext {
  label: string;
  n: number;
  log: number[];
  blob: string;
  note: string;
}

/** Waits, without finishing, until its invoking state is exited or the engine closes: a task that stays pending. */
const hold = activity(
  ({ signal }) =>
    new Promise<never>((_, reject) => {
      signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
    }),
  { retry: { maxAttempts: 1 } },
);

/** What ADD does to the context (both machines). */
const add = ({ context, event }: { context: HostileContext; event: { type: 'ADD'; k: number } }): Partial<HostileContext> => ({
  n: context.n + event.k,
  log: [...context.log, event.k],
});

/**
 * A counter with a pending task (invoke id 'hold') and a pending timer (ten minutes), so that
 * forged task results and timer fires have something real to aim at; GROW makes the record
 * large on purpose, NOTE carries a declared payload that can exceed the event size limit.
 */
const hostile = defineWorkflow({
  name: 'hostile',
  version: 1,
  input: z.object({ label: z.string() }),
  events: {
    ADD: z.object({ k: z.number().int() }),
    GROW: z.object({ bytes: z.number().int().min(0).max(1_000_000) }),
    NOTE: z.object({ text: z.string() }),
  },
  limits: { maxEventBytes: 4_096, maxSnapshotBytes: 16_384 },
  machine: setup({
    types: {
      input: {} as { label: string },
      context: {} as HostileContext,
      events: {} as { type: 'ADD'; k: number } | { type: 'GROW'; bytes: number } | { type: 'NOTE'; text: string },
    },
    actors: { hold },
  }).createMachine({
    id: 'hostile',
    initial: 'counting',
    context: ({ input }) => ({ label: input.label, n: 0, log: [], blob: '', note: '' }),
    states: {
      counting: {
        invoke: { id: 'hold', src: 'hold' },
        after: { 600_000: 'expired' },
        on: {
          ADD: { actions: assign(add) },
          GROW: { actions: assign({ blob: ({ event }) => 'x'.repeat(event.bytes) }) },
          NOTE: { actions: assign({ note: ({ event }) => event.text }) },
        },
      },
      expired: { type: 'final' },
    },
  }),
});

/** A counter that takes at most 5 events per second per instance, with the default size limits. */
const burst = defineWorkflow({
  name: 'burst',
  version: 1,
  input: z.object({ label: z.string() }),
  events: { ADD: z.object({ k: z.number().int() }) },
  limits: { maxEventsPerSecond: 5 },
  machine: setup({
    types: { input: {} as { label: string }, context: {} as HostileContext, events: {} as { type: 'ADD'; k: number } },
  }).createMachine({
    id: 'burst',
    initial: 'counting',
    context: ({ input }) => ({ label: input.label, n: 0, log: [], blob: '', note: '' }),
    states: { counting: { on: { ADD: { actions: assign(add) } } } },
  }),
});

// Every assert.ok here has a message: without one, a failing assert.ok inside eventually() makes
// Node parse this file again to describe the failure, which takes seconds per retry.
const enc = new TextEncoder();
const bytes = (v: string | Uint8Array): Uint8Array => (typeof v === 'string' ? enc.encode(v) : v);

interface DeadLetterCopy {
  seq: number;
  reason: string;
  subject: string;
  /** Set when the event was too large to copy whole: its length. */
  truncated: number | undefined;
  data: Uint8Array;
}

describe('hostile input: the engine rejects, records, dead-letters and keeps serving', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let nc: NatsConnection;
  let js: JetStreamClient;
  let jsm: JetStreamManager;
  const logger = memoryLogger();
  const ns = uniqueNamespace('hostile');
  let nextK = 1_000;

  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace: ns, workflows: [hostile, burst], leaseTtlMs: 1_000, drainTimeoutMs: 500, logger });
    nc = await connect({ servers: nats.url, name: 'hostile-raw' });
    js = jetstream(nc);
    jsm = await jetstreamManager(nc);
  });
  after(async () => {
    await engine?.close();
    await nc?.close();
    await nats?.dispose();
  });

  /** The events stream of an instance's partition. */
  const streamOf = (wf: WorkflowDefinition, id: string): string => layout(ns).eventStream(wf.name, partitionOf(wf.name, id, engine.partitions));
  const subjectOf = (wf: WorkflowDefinition, id: string, namespace = ns, partitions = engine.partitions): string =>
    layout(namespace).eventSubject(partitionOf(wf.name, id, partitions), wf.name, id);

  /** Publishes around `send()`: any bytes, any headers. */
  async function raw(wf: WorkflowDefinition, id: string, data: string | Uint8Array, sig?: string, subject = subjectOf(wf, id)): Promise<number> {
    const h = natsHeaders();
    if (sig !== undefined) h.set('Jetstate-Sig', sig);
    const ack = await js.publish(subject, bytes(data), sig === undefined ? {} : { headers: h });
    return ack.seq;
  }

  /** The dead-letter copies of one instance, in order. */
  async function deadLetters(wf: WorkflowDefinition, id: string, namespace = ns): Promise<DeadLetterCopy[]> {
    const stream = `${namespace}_deadletter`;
    const subject = `${namespace}.dlq.${wf.name}.${id}`;
    const info = await jsm.streams.info(stream, { subjects_filter: subject });
    const total = info.state.subjects?.[subject] ?? 0;
    if (total === 0) return [];
    const consumer = await js.consumers.get(stream, { filter_subjects: subject, deliver_policy: DeliverPolicy.All });
    const out: DeadLetterCopy[] = [];
    try {
      while (out.length < total) {
        const batch = await consumer.fetch({ max_messages: total - out.length, expires: 2_000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          const h = m.headers;
          const truncated = h?.get('Jetstate-Truncated');
          out.push({
            seq: Number(h?.get('Jetstate-Seq')),
            reason: h?.get('Jetstate-Reason') ?? '',
            subject: h?.get('Jetstate-Subject') ?? '',
            truncated: truncated ? Number(truncated) : undefined,
            data: m.data,
          });
        }
        if (got === 0) break;
      }
    } finally {
      await consumer.delete().catch(() => {});
    }
    return out;
  }

  async function startInstance(wf: WorkflowDefinition, id: string): Promise<void> {
    await engine.start(wf, { id, input: { label: id } });
  }

  async function state(wf: WorkflowDefinition, id: string): Promise<{ revision: number; status: string; value: unknown; context: HostileContext }> {
    const i = await engine.get(wf, id);
    assert.ok(i, `instance ${id} exists`);
    return { revision: i.revision, status: i.status, value: i.value, context: i.context as HostileContext };
  }

  /** The rejection entries of these sequences, once all are in the history. */
  async function rejections(wf: WorkflowDefinition, id: string, seqs: readonly number[]): Promise<Map<number, HistoryEntry>> {
    return eventually(async () => {
      const history = await engine.history(wf, id);
      const found = new Map(history.filter((h) => h.kind === 'rejected').map((h) => [h.seq, h]));
      const missing = seqs.filter((s) => !found.has(s));
      assert.deepEqual(missing, [], `rejections recorded for events ${missing.join(', ')}`);
      return found;
    }, 10_000);
  }

  /**
   * Sends a valid ADD through `send()` and waits until it is applied right after what was there:
   * the engine still serves this instance, and every earlier event of it is finished.
   */
  async function stillServes(wf: WorkflowDefinition, id: string, afterSeqs: readonly number[]): Promise<void> {
    const before = await state(wf, id);
    const k = nextK++;
    const sent = await engine.send(wf as typeof hostile, id, { type: 'ADD', k });
    const now = await engine.waitFor(wf, id, (s) => (s.context as HostileContext).log.at(-1) === k, { timeoutMs: 5_000 });
    assert.equal(now.revision, before.revision + 1, 'exactly one write for the valid event');
    assert.deepEqual((now.context as HostileContext).log, [...before.context.log, k]);
    for (const s of afterSeqs) assert.ok(sent.seq > s, 'the valid event came after the rejected ones');
    const history = await engine.history(wf, id);
    const last = history.at(-1)!;
    assert.equal(last.kind, 'event');
    assert.equal(last.seq, sent.seq);
    assert.deepEqual(engine.status().blocked, [], 'no instance is blocked');
  }

  /**
   * The whole check for events that must be rejected: published (raw or otherwise) by `publish`,
   * each rejected with a reason matching `reason`, the instance unchanged, each copied as it came
   * to the dead-letter stream with the reason, and the engine still serving.
   */
  async function expectRejected(
    wf: WorkflowDefinition,
    id: string,
    publish: () => Promise<Array<{ seq: number; data: Uint8Array }>>,
    reason: RegExp,
  ): Promise<Map<number, HistoryEntry>> {
    const before = await state(wf, id);
    const published = await publish();
    const seqs = published.map((p) => p.seq);
    const entries = await rejections(wf, id, seqs);
    for (const p of published) {
      const entry = entries.get(p.seq)!;
      assert.match(entry.reason ?? '', reason, `event ${p.seq}: reason`);
      assert.equal(entry.revision, before.revision, 'a rejection keeps the revision');
      assert.deepEqual(entry.from, entry.to);
    }
    assert.deepEqual(await state(wf, id), before, 'the instance is unchanged');
    const copies = await eventually(async () => {
      const c = await deadLetters(wf, id);
      const missing = seqs.filter((s) => !c.some((d) => d.seq === s));
      assert.deepEqual(missing, [], `dead-letter copies of events ${missing.join(', ')}`);
      return c;
    });
    for (const p of published) {
      const copy = copies.find((c) => c.seq === p.seq)!;
      assert.equal(
        copy.reason,
        entries
          .get(p.seq)!
          .reason!.slice(0, 1_000)
          .replace(/[\r\n]+/g, ' '),
        'Jetstate-Reason is the recorded reason',
      );
      assert.equal(copy.subject, subjectOf(wf, id));
      if (copy.truncated === undefined) assert.ok(Buffer.from(copy.data).equals(Buffer.from(p.data)), 'the copy holds the event as it came');
      else {
        // Only an event the size of the server's max_payload leaves no room for the headers.
        assert.equal(copy.truncated, p.data.length);
        assert.ok(p.data.length > nc.info!.max_payload - 4_096, 'only an event near max_payload is truncated');
        assert.ok(Buffer.from(p.data).subarray(0, copy.data.length).equals(Buffer.from(copy.data)), 'the copy holds the head of the event');
      }
    }
    await stillServes(wf, id, seqs);
    return entries;
  }

  /** Raw-publishes each payload in order; what `expectRejected` needs to know of them. */
  const rawAll = (wf: WorkflowDefinition, id: string, payloads: Array<string | Uint8Array>, sig?: (data: Uint8Array) => string) => async () => {
    const out: Array<{ seq: number; data: Uint8Array }> = [];
    for (const p of payloads) {
      const data = bytes(p);
      out.push({ seq: await raw(wf, id, data, sig?.(data)), data });
    }
    return out;
  };

  it('malformed JSON and empty bodies', async () => {
    await startInstance(hostile, 'h-json');
    await expectRejected(
      hostile,
      'h-json',
      rawAll(hostile, 'h-json', ['{"type":"ADD","k":1', '', '{type:"ADD",k:1}', '{"type":"ADD","k":1}}', 'NaN', '\u0000']),
      /not UTF-8 JSON/,
    );
  });

  it('invalid UTF-8 bytes', async () => {
    await startInstance(hostile, 'h-utf8');
    const payloads = [
      new Uint8Array([0xff, 0xfe, 0xfd]),
      // Valid JSON around an invalid sequence: a lone continuation byte inside a string.
      new Uint8Array([...enc.encode('{"type":"ADD","k":1,"x":"'), 0x80, ...enc.encode('"}')]),
      // An overlong encoding of '{'.
      new Uint8Array([0xc1, 0xbb, ...enc.encode('"type":"ADD","k":1}')]),
      randomBytes(64).map((b) => b | 0x80),
    ];
    await expectRejected(hostile, 'h-utf8', rawAll(hostile, 'h-utf8', payloads), /not UTF-8 JSON/);
  });

  it('JSON that is not an object, raw and through send()', async () => {
    await startInstance(hostile, 'h-shape');
    const last = await jsm.streams.info(streamOf(hostile, 'h-shape'));
    for (const bad of [null, 42, 'ADD', [{ type: 'ADD', k: 1 }], true]) {
      await assert.rejects(
        engine.send(hostile, 'h-shape', bad as never),
        (e: JetstateError) => e.code === ErrorCode.InvalidEvent && /must be an object/.test(e.message),
      );
    }
    assert.equal((await jsm.streams.info(streamOf(hostile, 'h-shape'))).state.last_seq, last.state.last_seq, 'send() wrote nothing');
    await expectRejected(
      hostile,
      'h-shape',
      rawAll(hostile, 'h-shape', ['null', '42', '"ADD"', '[{"type":"ADD","k":1}]', 'true', '{}']),
      /must be an object|no string 'type'/,
    );
  });

  it('wrong payload types, raw and through send()', async () => {
    await startInstance(hostile, 'h-types');
    const bad = [
      { type: 'ADD', k: '1' },
      { type: 'ADD', k: 1.5 },
      { type: 'ADD' },
      { type: 'ADD', k: null },
      { type: 'GROW', bytes: -1 },
      { type: 'NOTE', text: 7 },
      { type: 42, k: 1 },
    ];
    for (const e of bad) await assert.rejects(engine.send(hostile, 'h-types', e as never), (err: JetstateError) => err.code === ErrorCode.InvalidEvent);
    const entries = await expectRejected(
      hostile,
      'h-types',
      rawAll(hostile, 'h-types', [...bad.map((e) => JSON.stringify(e)), '{"type":"ADD","k":1e400}']),
      /payload of '(ADD|GROW|NOTE)' is not valid|no string 'type'/,
    );
    // The reason names the field.
    assert.ok(
      [...entries.values()].some((e) => /k/.test(e.reason ?? '') && /number/.test(e.reason ?? '')),
      'a reason names the field and the expected type',
    );
  });

  it('unknown event types, including reserved and prototype names', async () => {
    await startInstance(hostile, 'h-unknown');
    const types = ['NOPE', 'add', 'constructor', 'toString', '__proto__', 'hasOwnProperty', 'xstate.done.actor.hold', 'xstate.init', 'jetstate.start', ''];
    for (const type of types) {
      await assert.rejects(
        engine.send(hostile, 'h-unknown', { type, k: 1 } as never),
        (e: JetstateError) => e.code === ErrorCode.InvalidEvent && /not declared/.test(e.message),
      );
    }
    // Raw, 'jetstate.start' is a start (checked as one: this one's input is not valid).
    await expectRejected(
      hostile,
      'h-unknown',
      rawAll(
        hostile,
        'h-unknown',
        types.filter((t) => t !== 'jetstate.start').map((type) => JSON.stringify({ type, k: 1, output: { x: 1 } })),
      ),
      /event type '.*' is not declared/,
    );
    await expectRejected(hostile, 'h-unknown', rawAll(hostile, 'h-unknown', [JSON.stringify({ type: 'jetstate.start', k: 1 })]), /input is not valid/);
    assert.equal(({} as Record<string, unknown>)['k'], undefined, 'nothing reached Object.prototype');
  });

  it('an event over maxEventBytes: send() refuses and writes nothing; raw ones are rejected, up to the server max_payload', async () => {
    await startInstance(hostile, 'h-huge');
    const last = (await jsm.streams.info(streamOf(hostile, 'h-huge'))).state.last_seq;
    await assert.rejects(
      engine.send(hostile, 'h-huge', { type: 'NOTE', text: 'x'.repeat(5_000) }),
      (e: JetstateError) => e.code === ErrorCode.LimitExceeded && e.message.startsWith('[limit.event_size]') && /nothing was sent/.test(e.message),
    );
    assert.equal((await jsm.streams.info(streamOf(hostile, 'h-huge'))).state.last_seq, last, 'send() wrote nothing');
    // The largest message the server takes (no headers), and a few sizes around the limit.
    const maxPayload = nc.info!.max_payload;
    const note = (size: number): string => {
      const head = '{"type":"NOTE","text":"';
      return `${head}${'x'.repeat(size - head.length - 2)}"}`;
    };
    await expectRejected(
      hostile,
      'h-huge',
      rawAll(hostile, 'h-huge', [note(4_097), note(64 * 1024), note(maxPayload)]),
      /^\[limit\.event_size\] the event is \d+ bytes, over the limit of 4096$/,
    );
    // The one as large as the server takes is copied truncated, and says so.
    assert.deepEqual(
      (await deadLetters(hostile, 'h-huge')).map((c) => c.truncated),
      [undefined, undefined, maxPayload],
    );
  });

  it('a burst of large invalid events in one batch: history keeps summaries, the valid event among them applies', async () => {
    // Default limits here (256 KiB events): eight 200 KB events of an undeclared type would make
    // one history message of 1.6 MB if they were recorded whole.
    const id = 'b-large';
    await startInstance(burst, id);
    const big = (i: number): string => JSON.stringify({ type: 'NOPE', i, pad: 'y'.repeat(200_000) });
    const rejectedSeqs: number[] = [];
    await expectRejected(
      burst,
      id,
      async () => {
        const data = Array.from({ length: 8 }, (_, i) => enc.encode(big(i)));
        const seqs = await Promise.all(data.map((d) => raw(burst, id, d)));
        rejectedSeqs.push(...seqs);
        return seqs.map((seq, i) => ({ seq, data: data[i]! }));
      },
      /event type 'NOPE' is not declared/,
    );
    const history = await engine.history(burst, id);
    for (const seq of rejectedSeqs) assert.deepEqual(history.find((h) => h.seq === seq)!.event, { type: 'NOPE', truncated: `${big(0).length} bytes` });
    // And mixed with valid events published at the same moment.
    const mixed = await Promise.all(
      [big(8), JSON.stringify({ type: 'ADD', k: 1 }), big(9), big(10), JSON.stringify({ type: 'ADD', k: 2 }), big(11), big(12)].map((d) => raw(burst, id, d)),
    );
    const done = await eventually(async () => {
      const h = await engine.history(burst, id);
      assert.ok(
        mixed.every((seq) => h.some((e) => e.seq === seq)),
        'every event of the mixed burst is in the history',
      );
      return h;
    });
    assert.deepEqual(
      mixed.map((seq) => done.find((e) => e.seq === seq)!.kind),
      ['rejected', 'event', 'rejected', 'rejected', 'event', 'rejected', 'rejected'],
    );
    await new Promise((r) => setTimeout(r, 1_000)); // the rate limit of 'burst' (5/s) refills
    await stillServes(burst, id, mixed);
  });

  it('an event whose application would make the record exceed maxSnapshotBytes: rejected, later events apply', async () => {
    const id = 'h-snap';
    await startInstance(hostile, id);
    // A GROW that fits is applied.
    await engine.send(hostile, id, { type: 'GROW', bytes: 1_000 });
    await engine.waitFor(hostile, id, (s) => (s.context as HostileContext).blob.length === 1_000, { timeoutMs: 5_000 });
    // One that does not, through send() (the client cannot know) and raw.
    await expectRejected(
      hostile,
      id,
      async () => {
        const viaSend = await engine.send(hostile, id, { type: 'GROW', bytes: 20_000 });
        // What send() puts on the stream: the parsed payload, then the type.
        const data = enc.encode(JSON.stringify({ bytes: 20_000, type: 'GROW' }));
        return [
          { seq: viaSend.seq, data },
          { seq: await raw(hostile, id, data), data },
        ];
      },
      /^\[limit\.snapshot_size\] applying it would make the record about \d+ bytes, over the limit of 16384/,
    );
    // An oversized one and a valid one right behind it (likely in one batch): the first is rejected, the second applied.
    const before = await state(hostile, id);
    const grow = await raw(hostile, id, JSON.stringify({ type: 'GROW', bytes: 50_000 }));
    const add = await raw(hostile, id, JSON.stringify({ type: 'ADD', k: 7 }));
    const after = await engine.waitFor(hostile, id, (s) => s.revision === before.revision + 1, { timeoutMs: 5_000 });
    assert.deepEqual((after.context as HostileContext).log, [...before.context.log, 7]);
    assert.equal((after.context as HostileContext).blob.length, 1_000);
    const entries = await rejections(hostile, id, [grow]);
    assert.match(entries.get(grow)!.reason!, /limit\.snapshot_size/);
    assert.equal((await engine.history(hostile, id)).find((h) => h.seq === add)?.kind, 'event');
    await stillServes(hostile, id, [grow, add]);
  });

  describe('forged engine events', () => {
    let engineKey: Buffer;
    before(async () => {
      const control = await new Kvm(js).open(`${ns}_control`);
      engineKey = Buffer.from((await control.get('auth.engine-key'))!.value);
    });
    const hmac = (key: Buffer, subject: string, data: Uint8Array): string =>
      createHmac('sha256', key).update(subject).update('\n').update(data).digest('base64url');

    /** The raw record (its pending timer and task with their tokens), read around the engine. */
    async function pending(id: string): Promise<{ timerId: string; timerToken: number; invokeId: string; taskToken: number }> {
      const kv = await new Kvm(js).open(engine.recordBucketOf('hostile', id));
      const record = (await kv.get(`hostile.${id}`))!.json<{ timers: Record<string, { token: number }>; tasks: Record<string, { token: number }> }>();
      const [timerId, timer] = Object.entries(record.timers)[0]!;
      const [invokeId, task] = Object.entries(record.tasks)[0]!;
      return { timerId, timerToken: timer.token, invokeId, taskToken: task.token };
    }

    const forgeries = async (id: string): Promise<string[]> => {
      const p = await pending(id);
      return [
        JSON.stringify({ type: 'jetstate.timer', timerId: p.timerId, token: p.timerToken }),
        JSON.stringify({ type: 'jetstate.task', invokeId: p.invokeId, token: p.taskToken, ok: true, output: { forged: true } }),
        JSON.stringify({ type: 'jetstate.task', invokeId: p.invokeId, token: p.taskToken, ok: false, error: { name: 'Error', message: 'forged' } }),
        JSON.stringify({ type: 'jetstate.stop' }),
        JSON.stringify({ type: 'jetstate.child', invokeId: 'hold', token: 1, ok: true, output: {} }),
      ];
    };

    it('a forged timer fire, task result, stop or child result without a signature is rejected', async () => {
      const id = 'h-forged-none';
      await startInstance(hostile, id);
      const p = await pending(id);
      assert.equal(p.invokeId, 'hold');
      await expectRejected(
        hostile,
        id,
        rawAll(hostile, id, await forgeries(id)),
        /^\[forged\] an engine event \('jetstate\.(timer|task|stop|child)'\) without a valid engine signature$/,
      );
      const s = await state(hostile, id);
      assert.equal(s.status, 'running');
      assert.equal(s.value, 'counting');
      assert.deepEqual(await pending(id), p, 'the timer and the task are still pending with their tokens');
    });

    it('with a wrong signature: garbage, another key, or the right key over another subject', async () => {
      const id = 'h-forged-wrong';
      const other = 'h-forged-other';
      await startInstance(hostile, id);
      await startInstance(hostile, other);
      const payloads = await forgeries(id);
      const otherKey = randomBytes(32);
      const signers: Array<(data: Uint8Array) => string> = [
        () => 'x',
        () => randomBytes(32).toString('base64url'),
        (data) => hmac(otherKey, subjectOf(hostile, id), data),
        // A genuine signature, but for another instance's subject: a replay across instances.
        (data) => hmac(engineKey, subjectOf(hostile, other), data),
        (data) => hmac(engineKey, subjectOf(hostile, id), data).toUpperCase(),
      ];
      for (const sign of signers) {
        await expectRejected(hostile, id, rawAll(hostile, id, payloads, sign), /^\[forged\] /);
      }
      assert.equal((await state(hostile, id)).status, 'running');
    });

    it('the same event with a genuine signature is taken (the forgeries above were refused for their signature alone)', async () => {
      const id = 'h-signed';
      await startInstance(hostile, id);
      const data = enc.encode(JSON.stringify({ type: 'jetstate.stop' }));
      // Signed as an engine signs: subject, message id, signing time and body, under the key.
      const signer = new EngineSigner(async () => engineKey);
      await signer.ready();
      const msgID = `test-${randomBytes(6).toString('hex')}`;
      await js.publish(subjectOf(hostile, id), data, { msgID, headers: signer.headers(subjectOf(hostile, id), msgID, data) });
      const stopped = await engine.waitFor(hostile, id, (s) => s.status === 'stopped', { timeoutMs: 5_000 });
      assert.equal(stopped.status, 'stopped');
    });
  });

  it('maxEventsPerSecond: a burst over the rate is partly rejected with [limit.rate]; later events apply', async () => {
    const id = 'b-rate';
    await startInstance(burst, id);
    const ks = Array.from({ length: 30 }, (_, i) => i + 1);
    // Raw, all at once.
    const acks = await Promise.all(ks.map((k) => raw(burst, id, JSON.stringify({ type: 'ADD', k })).then((seq) => ({ seq, k }))));
    acks.sort((a, b) => a.seq - b.seq);
    const history = await eventually(async () => {
      const h = await engine.history(burst, id);
      assert.equal(h.filter((e) => e.seq >= acks[0]!.seq).length, ks.length);
      return h;
    });
    const bySeq = new Map(history.map((h) => [h.seq, h]));
    const applied = acks.filter((a) => bySeq.get(a.seq)!.kind === 'event');
    const refused = acks.filter((a) => bySeq.get(a.seq)!.kind === 'rejected');
    assert.ok(applied.length >= 1 && applied.length <= 10, `some of the burst applied (${applied.length})`);
    assert.equal(applied.length + refused.length, ks.length);
    for (const r of refused) assert.match(bySeq.get(r.seq)!.reason!, /^\[limit\.rate\] instance 'b-rate' takes at most 5 events per second$/);
    const s = await state(burst, id);
    assert.deepEqual(
      s.context.log,
      applied.map((a) => a.k),
      'exactly the admitted events, in order',
    );
    assert.equal(s.revision, 1 + applied.length);
    const copies = await eventually(async () => {
      const c = await deadLetters(burst, id);
      assert.equal(c.length, refused.length);
      return c;
    });
    assert.deepEqual(
      copies.map((c) => c.seq).sort((a, b) => a - b),
      refused.map((r) => r.seq),
    );
    assert.ok(
      copies.every((c) => c.reason.startsWith('[limit.rate]')),
      'the copies say [limit.rate]',
    );
    // The bucket refills: a second burst through send(), after a pause, is again partly admitted.
    await new Promise((r) => setTimeout(r, 1_200));
    const sent = await Promise.all(ks.map((k) => engine.send(burst, id, { type: 'ADD', k: 100 + k })));
    const last = Math.max(...sent.map((x) => x.seq));
    const h2 = await eventually(async () => {
      const h = await engine.history(burst, id);
      assert.ok(
        h.some((e) => e.seq === last),
        'the last event of the second burst is in the history',
      );
      return h.filter((e) => sent.some((x) => x.seq === e.seq));
    });
    const applied2 = h2.filter((e) => e.kind === 'event').length;
    assert.ok(applied2 >= 1 && applied2 < ks.length, `the second burst is partly admitted (${applied2})`);
    assert.ok(
      h2.filter((e) => e.kind === 'rejected').every((e) => e.reason!.startsWith('[limit.rate]')),
      'the second burst is rejected for the rate only',
    );
    await new Promise((r) => setTimeout(r, 1_200));
    await stillServes(burst, id, [last]);
  });

  it('rejections in a write cut short by a crash are still copied to the dead-letter stream', async () => {
    // A backlog published before any engine runs is read as one batch: two invalid events, then a
    // valid one. The engine fails right after the state write, before history and dead letters go
    // out; on the retry the record shows the batch applied, and both are published from it.
    const ns2 = uniqueNamespace('hostilecrash');
    const id = 'h-crash';
    const client = await createClient({ servers: nats.url, namespace: ns2, workflows: [hostile] });
    await client.start(hostile, { id, input: { label: id } });
    const bodies = ['{"type":"NOPE"}', '{', JSON.stringify({ type: 'ADD', k: 5 })];
    const seqs: number[] = [];
    for (const b of bodies) seqs.push(await raw(hostile, id, b, undefined, subjectOf(hostile, id, ns2, client.partitions)));
    await client.close();
    let crashed = 0;
    const crashing = await createEngine({
      servers: nats.url,
      namespace: ns2,
      workflows: [hostile],
      logger: memoryLogger(),
      drainTimeoutMs: 500,
      testHooks: {
        afterStateWrite: (key, revision) => {
          if (key === `hostile.${id}` && revision > 1 && crashed++ === 0) throw new Error('injected failure after the state write');
        },
      },
    });
    try {
      const done = await crashing.waitFor(hostile, id, (s) => (s.context as HostileContext).log.length === 1, { timeoutMs: 5_000 });
      assert.equal(done.revision, 2);
      assert.equal(crashed, 1, 'one write, cut short once');
      const copies = await eventually(async () => {
        const c = await deadLetters(hostile, id, ns2);
        assert.equal(c.length, 2);
        return c;
      });
      assert.deepEqual(
        copies.map((c) => c.seq),
        seqs.slice(0, 2),
      );
      const history = await eventually(async () => {
        const h = await crashing.history(hostile, id);
        assert.equal(h.length, 4);
        return h;
      });
      assert.deepEqual(
        history.map((h) => h.kind),
        ['start', 'rejected', 'rejected', 'event'],
      );
    } finally {
      await crashing.close();
    }
  });

  it('a mixed barrage on one instance: only the valid events apply, in order, and nothing is retried', async () => {
    const id = 'h-mixed';
    await startInstance(hostile, id);
    const valid: number[] = [];
    const sent: Array<{ seq: number; valid: boolean }> = [];
    const junk = [
      '{',
      '[]',
      JSON.stringify({ type: 'NOPE' }),
      JSON.stringify({ type: 'ADD', k: 'x' }),
      JSON.stringify({ type: 'jetstate.stop' }),
      new Uint8Array([0xff]),
    ];
    for (let i = 0; i < 60; i++) {
      if (i % 3 === 0) {
        const k = i;
        valid.push(k);
        sent.push({ seq: await raw(hostile, id, JSON.stringify({ type: 'ADD', k })), valid: true });
      } else {
        sent.push({ seq: await raw(hostile, id, junk[i % junk.length]!), valid: false });
      }
    }
    const done = await engine.waitFor(hostile, id, (s) => (s.context as HostileContext).log.length === valid.length, { timeoutMs: 10_000 });
    assert.deepEqual((done.context as HostileContext).log, valid);
    assert.equal(done.revision, 1 + valid.length);
    await rejections(
      hostile,
      id,
      sent.filter((s) => !s.valid).map((s) => s.seq),
    );
    assert.equal(
      (
        await eventually(async () => {
          const c = await deadLetters(hostile, id);
          assert.equal(c.length, 40);
          return c;
        })
      ).length,
      40,
    );
    await stillServes(
      hostile,
      id,
      sent.map((s) => s.seq),
    );
    assert.deepEqual(
      logger.lines.filter((l) => /retrying/.test(l)),
      [],
      'no event of this engine was retried',
    );
  });
});
