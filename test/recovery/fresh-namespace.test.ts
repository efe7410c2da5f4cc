/**
 * No accepted event is lost in a namespace whose events stream has never held a message.
 *
 * The engines trim applied events from the events stream. While that stream has never held a
 * message its first sequence is 0 and every partition's purge floor is 0; a trim computed then
 * must delete nothing, also when events land between the engine's look at the stream and its
 * purge. On nats-server 2.10 a purge "up to sequence 1" deletes every message, so events that
 * arrive in that moment and have not been read yet (their partitions' leases are still held by a
 * dead engine) were deleted unread: task outcomes accepted by the stream never reached their
 * instances.
 *
 * The scenario, end to end through engine processes: engine A creates the namespace (a duplicate
 * window of 100 ms, so the trim runs at every lease round of 100 ms) and takes every lease, and is
 * SIGKILLed before any event exists. Quick tasks are queued and instances started while no
 * engine runs. Engine B (its id sorts first, so it is the engine that trims) starts: its task
 * runner publishes the outcomes at the moment its first lease rounds trim the still empty stream,
 * while A's leases keep those partitions unread for a lease TTL. Then sends follow. Every task
 * outcome and every send must be applied. The race is narrow, so the scenario is repeated in fresh
 * namespaces, up to FRESH_ROUNDS rounds (default 8), and the test fails at the first round that
 * loses anything.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createClient, type Client } from '../../engine/index.js';
import { startNats, uniqueNamespace } from '../helpers.js';
import { counter, type CounterContext } from './counter-workflow.js';
import { killAllEngines, mapLimit, sendUntilAccepted, sleep, spawnEngine, within } from './harness.js';
import { quick } from './quick-task-workflow.js';

const PARTITIONS = 8;
const LEASE_TTL_MS = 300;
const DUPLICATE_WINDOW_MS = 100;
const TASKS = 8;
const COUNTERS = 8;
const SENDS_PER_COUNTER = 4;
const ROUNDS = Number(process.env['FRESH_ROUNDS'] ?? 8);
const modules = [join(import.meta.dirname, 'counter-workflow.ts'), join(import.meta.dirname, 'quick-task-workflow.ts')];

interface RoundResult {
  lostOutcomes: string[];
  lostSends: string[];
}

describe('a fresh namespace loses no accepted event to the trim of applied events', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await killAllEngines();
    await nats?.dispose();
  });

  async function round(r: number): Promise<RoundResult> {
    const namespace = uniqueNamespace(`fresh${r}`);
    const engine = (label: string, engineId: string) =>
      spawnEngine({
        url: nats.url,
        namespace,
        partitions: PARTITIONS,
        leaseTtlMs: LEASE_TTL_MS,
        duplicateWindowMs: DUPLICATE_WINDOW_MS,
        workflowModules: modules,
        engineId,
        label,
      });
    // A creates the namespace and takes every lease; it dies before any event exists.
    const a = engine('engine-a', `z${r}-dead`);
    const ready = await a.waitReady();
    // One lease per workflow and partition.
    assert.equal(ready.owned?.length, PARTITIONS * modules.length, 'precondition: the first engine took every lease');
    await a.kill();

    let client: Client | undefined;
    try {
      client = await createClient({ servers: nats.url, namespace, partitions: PARTITIONS, workflows: [counter, quick] });
      const c = client;
      // With no engine running: tasks queued by their starts, counters waiting for sends.
      const taskIds = Array.from({ length: TASKS }, (_, i) => `q-${i}`);
      const counterIds = Array.from({ length: COUNTERS }, (_, i) => `c-${i}`);
      // No engine answers: the starts are only published (the dead engine's leases look alive).
      await mapLimit(taskIds, 8, (id, i) => c.start(quick, { id, input: { n: i }, wait: false }));
      await mapLimit(counterIds, 8, (id) => c.start(counter, { id, input: { label: id }, wait: false }));

      // B sorts before A, so B is the engine that trims; its task runner delivers the outcomes
      // while A's leases still stand.
      const b = engine('engine-b', `a${r}-live`);
      await b.waitReady();
      const sent = new Map<string, number[]>(counterIds.map((id) => [id, []]));
      await mapLimit(counterIds, COUNTERS, async (id, i) => {
        for (let k = 0; k < SENDS_PER_COUNTER; k++) {
          await sendUntilAccepted(c, id, 100 * i + k, `${id}-${k}`, 20_000);
          sent.get(id)!.push(100 * i + k);
        }
      });

      // Everything accepted is applied within a generous bound; what is still missing then is lost.
      const deadline = Date.now() + 20_000;
      let result: RoundResult = { lostOutcomes: [], lostSends: [] };
      for (;;) {
        const lostOutcomes: string[] = [];
        for (const id of taskIds) if (!(await c.get(quick, id))?.matches('done')) lostOutcomes.push(id);
        const lostSends: string[] = [];
        for (const id of counterIds) {
          const log = ((await c.get(counter, id))?.context as CounterContext | undefined)?.log ?? [];
          for (const k of sent.get(id)!) if (!log.includes(k)) lostSends.push(`${id}:${k}`);
        }
        result = { lostOutcomes, lostSends };
        if ((lostOutcomes.length === 0 && lostSends.length === 0) || Date.now() > deadline) break;
        await sleep(250);
      }
      await b.kill();
      return result;
    } finally {
      await killAllEngines();
      await within(client?.close() ?? Promise.resolve(), 10_000, 'client close').catch(() => {});
    }
  }

  it(`every task outcome and send is applied, in up to ${ROUNDS} fresh namespaces`, { timeout: 60_000 + ROUNDS * 45_000 }, async () => {
    for (let r = 1; r <= ROUNDS; r++) {
      const { lostOutcomes, lostSends } = await round(r);
      console.log(
        `fresh namespace round ${r}: lost task outcomes ${lostOutcomes.length}/${TASKS}, lost sends ${lostSends.length}/${COUNTERS * SENDS_PER_COUNTER}`,
      );
      assert.deepEqual(
        { lostOutcomes, lostSends },
        { lostOutcomes: [], lostSends: [] },
        `round ${r}: events accepted by the stream were never applied (task outcomes of ${lostOutcomes.join(', ') || 'none'}; sends ${lostSends.join(', ') || 'none'})`,
      );
    }
  });
});
