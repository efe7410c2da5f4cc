// Leases are renewed on their own clock: a partition whose worker is slow to start (its consumer
// create takes seconds while a server is down) must not stop this engine's renewals, or the other
// engines take its partitions over, each new owner stalls the same way, and partitions change
// hands every second instead of being read.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow, partitionOf, type Engine } from '../../engine/index.js';
import { counter } from '../recovery/counter-workflow.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';

const TTL_MS = 600;
const SLOW_START_MS = 3_000;

/** Its activity runs (in process) until the test lets it end. */
let letGo: () => void = () => {};
let held = false;
const chore = defineWorkflow({
  name: 'chore',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({
    actors: {
      work: activity(async () => {
        held = true;
        await new Promise<void>((r) => (letGo = r));
        return 'ok';
      }),
    },
  }).createMachine({
    initial: 'working',
    states: { working: { invoke: { src: 'work', onDone: 'done' } }, done: { type: 'final' } },
  }),
});

describe('partition leases', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let nc: NatsConnection;
  const engines: Engine[] = [];

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
  });
  after(async () => {
    await Promise.all(engines.map((e) => e.close().catch(() => {})));
    await nc?.close();
    await nats?.dispose();
  });

  it('are renewed while a worker of the same engine is still starting', async () => {
    const namespace = uniqueNamespace('leaserenew');
    // Renewals of every lease as the control bucket's watch sees them, with when they came.
    const renewals: Array<{ key: string; atMs: number }> = [];
    let slowFrom = 0;
    let slowUntil = 0;
    let slowPartition = -1;
    let watching!: () => void;
    const watchOpen = new Promise<void>((r) => (watching = r));
    const opening = createEngine({
      servers: nats.url,
      namespace,
      workflows: [counter],
      partitions: 4,
      leaseTtlMs: TTL_MS,
      testHooks: {
        // The first worker to start takes seconds, as a consumer create does while a node is down.
        beforeWorkerStart: async (_workflow: string, partition: number) => {
          if (slowPartition !== -1) return;
          slowPartition = partition;
          // Measured from when the watch below sees every write (however slow the machine).
          await watchOpen;
          slowFrom = Date.now();
          await sleep(SLOW_START_MS);
          slowUntil = Date.now();
        },
      },
    });
    // The engine makes the control bucket as it opens.
    const kv = await new Kvm(nc).open(`${namespace}_control`);
    // Released however this goes: a hook left waiting would keep the engine (and the test) open.
    const watch = await eventually(() => kv.watch({ key: 'lease.>' })).finally(watching);
    void (async () => {
      for await (const e of watch) if (e.operation === 'PUT') renewals.push({ key: e.key, atMs: Date.now() });
    })();
    const engine = await opening;
    engines.push(engine);
    watch.stop();
    assert.ok(slowUntil > slowFrom, 'the slow start ran');
    const owned = engine.status().owned.map((o) => o.partition);
    assert.deepEqual(owned.sort(), [0, 1, 2, 3], 'the engine owns every partition, the slow one too');
    // Every lease, the one whose worker was starting too, is written again and again during the
    // slow start (every TTL/3): nobody could have taken it over as silent.
    const during = (p: number): number => renewals.filter((r) => r.key === `lease.counter.${p}` && r.atMs > slowFrom + TTL_MS && r.atMs < slowUntil).length;
    for (const p of [0, 1, 2, 3])
      assert.ok(during(p) >= 2, `lease of partition ${p} renewed ${during(p)} times during the ${SLOW_START_MS} ms start of partition ${slowPartition}`);
  });
  it('stay renewed while a partition handed over to a new engine drains', async () => {
    const namespace = uniqueNamespace('leasedrain');
    const options = { servers: nats.url, namespace, workflows: [chore], partitions: 2, leaseTtlMs: TTL_MS, drainTimeoutMs: 20_000, localHoldMs: 60_000 };
    const first = await createEngine(options);
    engines.push(first);
    // An instance of partition 1, the one the first engine hands over when a second one comes.
    const id = Array.from({ length: 50 }, (_, i) => `c${i}`).find((x) => partitionOf('chore', x, 2) === 1)!;
    await first.start(chore, { id, input: {} });
    await eventually(() => assert.ok(held, 'the activity runs in the first engine'));
    const kv = await new Kvm(nc).open(`${namespace}_control`);
    const renewals: number[] = [];
    const watch = await kv.watch({ key: 'lease.chore.1' });
    void (async () => {
      for await (const e of watch) if (e.operation === 'PUT') renewals.push(Date.now());
    })();
    const second = await createEngine(options);
    engines.push(second);
    // The first engine releases partition 1; its drain waits for the running activity.
    await eventually(() => assert.ok(!first.status().owned.some((o) => o.partition === 1), 'the first engine hands partition 1 over'));
    const drainFrom = Date.now();
    // Several TTLs: a lease left unrenewed this long is taken over as silent.
    await sleep(5 * TTL_MS);
    assert.ok(
      !second.status().owned.some((o) => o.partition === 1),
      `the second engine did not take partition 1 while it drained (renewals ${JSON.stringify(renewals.map((t) => t - drainFrom))})`,
    );
    const during = renewals.filter((t) => t > drainFrom + TTL_MS).length;
    assert.ok(during >= 2, `the draining partition's lease renewed ${during} times`);
    letGo();
    // Its outcome goes to the inbox and the drain ends: the instance is done well before the 20 s
    // drain timeout would have ended it (and the activity would have run again).
    const done = await second.waitFor(chore, id, (i) => i.status !== 'running', { timeoutMs: 10_000 });
    assert.equal(done.value, 'done');
    await eventually(() =>
      assert.ok(
        second.status().owned.some((o) => o.partition === 1),
        'the second engine has partition 1 once it was released',
      ),
    );
    watch.stop();
  });
});
