/**
 * Property: whatever is published to the event subjects, every instance ends exactly where its
 * valid events, in stream order, take it, and every other event is rejected and recorded.
 *
 * fast-check generates sequences of events, most of them malformed in varied ways (random bytes,
 * random JSON, JSON that is not an object, wrong payload types, unknown and reserved types,
 * oversized events, engine events without or with a wrong signature), interleaved with valid
 * `ADD { k }` events, addressed to several instances of the counter workflow and published raw to
 * their subjects. After each sequence the test compares every instance with its model (the
 * counter's `expectedContext` over the valid events of that instance, in stream order) and checks
 * one history entry per event: `event` for the valid ones, `rejected` for the others.
 *
 * The seed is fixed and printed. To replay a failure, run with the seed and path fast-check
 * prints: JETSTATE_PROPERTY_SEED=<seed> JETSTATE_PROPERTY_PATH=<path> node --import tsx --test test/security/property.test.ts
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { headers as natsHeaders, type NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { createEngine, partitionOf, type Engine } from '../../engine/index.js';
import { layout } from '../../engine/protocol/names.js';
import { counter, expectedContext, type CounterContext } from '../recovery/counter-workflow.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';

const SEED = Number(process.env['JETSTATE_PROPERTY_SEED'] ?? 20_240_611);
const PATH = process.env['JETSTATE_PROPERTY_PATH'];
/** Sequences, and events per sequence: about 5,500 events in all. */
const RUNS = 8;
const EVENTS = { min: 500, max: 900 };
const INSTANCES = 4;
const MAX_EVENT_BYTES = 2_048;

/** One generated event: its bytes, an optional Jetstate-Sig header, and whether it is valid. */
interface Gen {
  kind: string;
  instance: number;
  data: Uint8Array;
  sig?: string;
  /** The k a valid ADD adds; undefined for an invalid event. */
  k?: number;
}

const enc = new TextEncoder();
const json = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v));

/** True when the counter would take this payload: what the random generators must not hit by chance. */
function acceptable(data: Uint8Array): boolean {
  try {
    const v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data)) as { type?: unknown; k?: unknown } | null;
    return typeof v === 'object' && v !== null && !Array.isArray(v) && v.type === 'ADD' && Number.isSafeInteger(v.k) && data.length <= MAX_EVENT_BYTES;
  } catch {
    return false;
  }
}

const instance = fc.integer({ min: 0, max: INSTANCES - 1 });
const k = fc.integer({ min: -1_000, max: 1_000 });
const smallJson = fc.jsonValue({ maxDepth: 2 });
const INTERNAL = ['jetstate.timer', 'jetstate.task', 'jetstate.stop', 'jetstate.child', 'jetstate.kick'] as const;

const events: Record<string, fc.Arbitrary<Omit<Gen, 'instance'>>> = {
  valid: k.map((k) => ({ kind: 'valid', data: json({ type: 'ADD', k }), k })),
  // Valid too: extra fields are dropped by the schema, key order and __proto__ keys change nothing.
  validExtra: fc
    .tuple(
      k,
      fc.dictionary(
        fc.string({ maxLength: 8 }).filter((s) => s !== 'type' && s !== 'k'),
        smallJson,
        { maxKeys: 3 },
      ),
    )
    .map(([k, extra]) => ({
      kind: 'validExtra',
      data: enc.encode(`{"__proto__":{"polluted":true},${JSON.stringify(extra).slice(1, -1)}${Object.keys(extra).length > 0 ? ',' : ''}"k":${k},"type":"ADD"}`),
      k,
    })),
  bytes: fc
    .uint8Array({ maxLength: 96 })
    .filter((d) => !acceptable(d))
    .map((data) => ({ kind: 'bytes', data })),
  notUtf8: fc
    .tuple(fc.uint8Array({ minLength: 1, maxLength: 32 }), fc.constantFrom(0x80, 0xc0, 0xff, 0xfe, 0xed))
    .map(([d, bad]) => ({ kind: 'notUtf8', data: new Uint8Array([...json({ type: 'ADD', k: 1 }).subarray(0, 10), bad, ...d]) })),
  randomJson: fc
    .json({ maxDepth: 3 })
    .map((s) => enc.encode(s))
    .filter((d) => !acceptable(d))
    .map((data) => ({ kind: 'randomJson', data })),
  truncatedJson: fc.tuple(k, fc.integer({ min: 1, max: 15 })).map(([k, cut]) => ({ kind: 'truncatedJson', data: json({ type: 'ADD', k }).subarray(0, cut) })),
  notObject: fc
    .oneof(fc.integer(), fc.string(), fc.boolean(), fc.constant(null), fc.array(smallJson, { maxLength: 3 }))
    .map((v) => ({ kind: 'notObject', data: json(v) })),
  wrongType: fc
    .oneof(
      fc.string({ maxLength: 8 }),
      fc.double().filter((x) => !Number.isInteger(x)),
      fc.boolean(),
      fc.constant(null),
      fc.array(fc.integer(), { maxLength: 2 }),
      fc.constant(2 ** 60),
      fc.constant('1'),
    )
    .map((bad) => ({ kind: 'wrongType', data: json({ type: 'ADD', k: bad }) })),
  noK: fc.constant({ kind: 'noK', data: json({ type: 'ADD' }) }),
  typeNotString: fc
    .tuple(fc.oneof(fc.integer(), fc.constant(null), fc.constant(['ADD']), fc.constant({ ADD: 1 })), k)
    .map(([type, k]) => ({ kind: 'typeNotString', data: json({ type, k }) })),
  unknownType: fc
    .tuple(
      fc.oneof(
        fc.string({ maxLength: 12 }),
        fc.constantFrom('add', 'ADD ', 'constructor', '__proto__', 'toString', 'xstate.init', 'xstate.done.actor.x', 'jetstate.start'),
      ),
      k,
    )
    .filter(([type]) => type !== 'ADD')
    .map(([type, k]) => ({ kind: 'unknownType', data: json({ type, k }) })),
  oversized: fc.tuple(k, fc.integer({ min: MAX_EVENT_BYTES + 1, max: 3 * MAX_EVENT_BYTES })).map(([k, size]) => {
    const head = `{"type":"ADD","k":${k},"pad":"`;
    return { kind: 'oversized', data: enc.encode(`${head}${'p'.repeat(size - head.length - 2)}"}`) };
  }),
  forged: fc
    .tuple(
      fc.constantFrom(...INTERNAL),
      fc.string({ maxLength: 12 }),
      fc.integer({ min: 0, max: 5 }),
      fc.boolean(),
      fc.option(fc.base64String({ minLength: 4, maxLength: 44 }), { nil: undefined }),
    )
    .map(([type, name, token, ok, sig]) => {
      const body = { type, timerId: name, invokeId: name, token, ok, output: { forged: true } };
      return sig === undefined ? { kind: 'forged', data: json(body) } : { kind: 'forged', data: json(body), sig };
    }),
};

const WEIGHTS: Record<keyof typeof events, number> = {
  valid: 25,
  validExtra: 5,
  bytes: 8,
  notUtf8: 6,
  randomJson: 10,
  truncatedJson: 6,
  notObject: 6,
  wrongType: 8,
  noK: 2,
  typeNotString: 4,
  unknownType: 8,
  oversized: 4,
  forged: 8,
};

const weighted = Object.entries(events).map(([name, arbitrary]) => ({ arbitrary, weight: WEIGHTS[name as keyof typeof events] ?? 1 }));
const event: fc.Arbitrary<Gen> = fc.tuple(instance, fc.oneof<typeof weighted>(...weighted)).map(([i, e]): Gen => ({ ...e, instance: i }));

describe('property: valid events apply in order, everything else is rejected and recorded', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let nc: NatsConnection;
  let js: JetStreamClient;
  let jsm: JetStreamManager;
  const ns = uniqueNamespace('property');

  before(async () => {
    nats = await startNats();
    engine = await createEngine({
      servers: nats.url,
      namespace: ns,
      workflows: [counter],
      leaseTtlMs: 1_000,
      drainTimeoutMs: 500,
      logger: memoryLogger(),
      limits: { maxEventBytes: MAX_EVENT_BYTES },
    });
    nc = await connect({ servers: nats.url, name: 'property-raw' });
    js = jetstream(nc);
    jsm = await jetstreamManager(nc);
  });
  after(async () => {
    await engine?.close();
    await nc?.close();
    await nats?.dispose();
  });

  const subjectOf = (id: string): string => layout(ns).eventSubject(partitionOf(counter.name, id, engine.partitions), counter.name, id);

  async function deadLetterCount(id: string): Promise<number> {
    const subject = `${ns}.dlq.${counter.name}.${id}`;
    const info = await jsm.streams.info(`${ns}_deadletter`, { subjects_filter: subject });
    return info.state.subjects?.[subject] ?? 0;
  }

  it(`holds for ${RUNS} generated sequences (seed ${SEED})`, { timeout: 60_000 }, async () => {
    console.log(`property seed: ${SEED}${PATH ? `, path: ${PATH}` : ''} (replay: JETSTATE_PROPERTY_SEED=${SEED} [JETSTATE_PROPERTY_PATH=<path>])`);
    let run = 0;
    const kinds = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(fc.array(event, { minLength: EVENTS.min, maxLength: EVENTS.max }), async (generated) => {
        run++;
        const ids = Array.from({ length: INSTANCES }, (_, i) => `r${run}-${i}`);
        await Promise.all(ids.map((id) => engine.start(counter, { id, input: { label: id } })));
        // Published in order without waiting for each ack; the stream's sequence is the order.
        const acks = await Promise.all(
          generated.map((g) => {
            const h = natsHeaders();
            if (g.sig !== undefined) h.set('Jetstate-Sig', g.sig);
            return js.publish(subjectOf(ids[g.instance]!), g.data, g.sig === undefined ? {} : { headers: h });
          }),
        );
        const sent = generated.map((g, i) => ({ ...g, seq: acks[i]!.seq })).sort((a, b) => a.seq - b.seq);
        for (const g of sent) kinds.set(g.kind, (kinds.get(g.kind) ?? 0) + 1);
        for (const [i, id] of ids.entries()) {
          const mine = sent.filter((g) => g.instance === i);
          const valid = mine.filter((g) => g.k !== undefined);
          const model = expectedContext(
            id,
            valid.map((g) => g.k!),
          );
          const done = await engine.waitFor(counter, id, (s) => s.revision === 1 + valid.length, { timeoutMs: 10_000 });
          assert.deepEqual(done.context as CounterContext, model, `instance ${id} equals its model`);
          assert.equal(done.status, 'running');
          const history = await eventually(async () => {
            const h = await engine.history(counter, id);
            assert.equal(h.length, 1 + mine.length, `instance ${id}: one history entry per event`);
            return h;
          });
          const bySeq = new Map(history.map((h) => [h.seq, h]));
          for (const g of mine) {
            const entry = bySeq.get(g.seq);
            assert.ok(entry, `instance ${id}: event ${g.seq} (${g.kind}) is in the history`);
            if (g.k === undefined) {
              assert.equal(entry.kind, 'rejected', `instance ${id}: event ${g.seq} (${g.kind}) is rejected`);
              assert.ok((entry.reason ?? '').length > 0, `event ${g.seq} (${g.kind}) has a reason`);
            } else {
              assert.equal(entry.kind, 'event', `instance ${id}: event ${g.seq} (${g.kind}) is applied`);
            }
          }
          const invalid = mine.length - valid.length;
          await eventually(async () => assert.equal(await deadLetterCount(id), invalid, `instance ${id}: one dead-letter copy per rejected event`));
        }
        assert.equal(({} as Record<string, unknown>)['polluted'], undefined, 'nothing reached Object.prototype');
        assert.deepEqual(engine.status().blocked, [], 'no instance is blocked');
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true, ...(PATH ? { path: PATH } : {}) },
    );
    console.log(`events per kind: ${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}`);
    // The engine still serves: a new instance starts and takes an event.
    const id = `after-${randomBytes(3).toString('hex')}`;
    await engine.start(counter, { id, input: { label: id } });
    await engine.send(counter, id, { type: 'ADD', k: 42 });
    const last = await engine.waitFor(counter, id, (s) => s.revision === 2, { timeoutMs: 5_000 });
    assert.deepEqual(last.context, expectedContext(id, [42]));
  });
});
