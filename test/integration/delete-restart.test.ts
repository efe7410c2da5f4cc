// An instance deleted and started again under the same id, within the duplicate window: the new
// instance is a new instance. Its timers, tasks and history are not taken for the old one's
// (their message ids) nor its history entries for already confirmed.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow, type Engine } from '../../engine/index.js';
import { readSubject } from '../../engine/store/read.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';
import { checkout, payment } from '../fixtures/child-workflows.js';

/** A task through the tasks stream, then a timer, then done. */
const relay = defineWorkflow({
  name: 'relay',
  version: 1,
  input: z.object({ n: z.number().int() }),
  events: {},
  machine: setup({
    types: { input: {} as { n: number }, context: {} as { n: number; got?: number } },
    actors: { echo: activity(async ({ input }) => ({ n: (input as { n: number }).n }), { inProcess: false }) },
  }).createMachine({
    id: 'relay',
    context: ({ input }) => ({ n: input.n }),
    initial: 'asking',
    states: {
      asking: {
        invoke: {
          src: 'echo',
          input: ({ context }: { context: { n: number } }) => ({ n: context.n }),
          onDone: { target: 'resting', actions: assign({ got: ({ event }) => (event.output as { n: number }).n }) },
        },
      },
      resting: { after: { 50: 'done' } },
      done: { type: 'final' },
    },
  }),
});

describe('an instance deleted and started again under its id', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let namespace: string;
  before(async () => {
    nats = await startNats();
    namespace = uniqueNamespace('again');
    engine = await createEngine({ servers: nats.url, namespace, workflows: [relay, checkout], partitions: 1 });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('runs its task and timer and keeps its whole history, as the first one did', { timeout: 60_000 }, async () => {
    for (const n of [1, 2, 3]) {
      await engine.start(relay, { id: 'r-1', input: { n } });
      const done = await engine.waitFor(relay, 'r-1', (s) => s.status === 'done', { timeoutMs: 10_000 });
      assert.equal((done.context as { got: number }).got, n, `incarnation ${n}: its own task's outcome`);
      const history = await engine.history(relay, 'r-1');
      assert.deepEqual(
        history.map((h) => h.revision),
        [1, 2, 3],
        `incarnation ${n}: history ${JSON.stringify(history.map((h) => [h.revision, h.kind]))}`,
      );
      // The history stream itself holds every entry (not only the record's journal).
      const nc = await connect({ servers: nats.url });
      try {
        const stored = await readSubject({ js: jetstream(nc), jsm: await jetstreamManager(nc) }, `${namespace}_history`, `${namespace}.hist.relay.r-1`);
        const revisions = [
          ...new Set(
            stored.flatMap((d) => (JSON.parse(new TextDecoder().decode(d)) as { entries: Array<{ revision: number }> }).entries.map((e) => e.revision)),
          ),
        ];
        assert.deepEqual(revisions.sort(), [1, 2, 3], `incarnation ${n}: stored history`);
      } finally {
        await nc.close();
      }
      await engine.delete(relay, 'r-1');
      const gone = Date.now() + 10_000;
      while ((await engine.get(relay, 'r-1')) !== null) {
        assert.ok(Date.now() < gone, 'deleted');
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  });

  it('a parent started again whose child id is taken by an earlier instance fails loudly instead of waiting for ever', { timeout: 60_000 }, async () => {
    await engine.start(checkout, { id: 'c-1', input: { amount: 5 } });
    await engine.waitFor(payment, 'c-1_pay', (s) => s.matches('pending'), { timeoutMs: 10_000 });
    await engine.send(payment, 'c-1_pay', { type: 'CONFIRM', receipt: 'r-1' });
    await engine.waitFor(checkout, 'c-1', (s) => s.status === 'done', { timeoutMs: 10_000 });
    await engine.delete(checkout, 'c-1');
    await eventually(async () => assert.equal(await engine.get(checkout, 'c-1'), null));
    // The earlier child is still there (deleting a parent leaves its children): the new parent
    // cannot start its own under that id, and hears so.
    await engine.start(checkout, { id: 'c-1', input: { amount: 5 } });
    const failed = await engine.waitFor(checkout, 'c-1', (s) => s.status !== 'running', { timeoutMs: 10_000 });
    assert.equal(failed.status, 'failed');
    assert.match(JSON.stringify(failed), /c-1_pay/);
    const child = await engine.get(payment, 'c-1_pay');
    assert.equal(child?.status, 'done', 'the earlier child is left as it was');
    assert.equal((child?.context as { receipt: string }).receipt, 'r-1');
  });
});
