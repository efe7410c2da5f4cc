// The history stream is complete even when it refused a write's entries for a while: the
// partition's checkpoint does not pass an event before the history of its write is stored, so a
// SIGKILL in that window leads to the event's redelivery and a repair that publishes it; without
// a crash, the engine publishes it again by itself once the stream takes it.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow, type Client } from '../../engine/index.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';
import { counter } from './counter-workflow.js';
import { Raw, killAllEngines, sendUntilAccepted, sleep, spawnEngine } from './harness.js';

const LEASE_TTL_MS = 1_000;

/** Makes the history stream refuse every message (too large), or take them again. */
async function historyRefuses(raw: Raw, namespace: string, refuse: boolean): Promise<void> {
  const jsm = await jetstreamManager(raw.nc);
  const name = `${namespace}_history`;
  const { config } = await jsm.streams.info(name);
  await jsm.streams.update(name, { ...config, max_msg_size: refuse ? 16 : -1 });
}

/** The revisions the history stream itself holds for an instance (no journal merged in). */
async function storedRevisionsOf(raw: Raw, workflow: string, id: string): Promise<number[]> {
  return [...new Set((await raw.historyMessages(workflow, id)).flat().map((e) => e.revision))].sort((a, b) => a - b);
}

function storedRevisions(raw: Raw, id: string): Promise<number[]> {
  return storedRevisionsOf(raw, 'counter', id);
}

/** Starts an instance and applies one ADD, with its history stored; returns after. */
async function startWithOneEvent(client: Client, raw: Raw, id: string): Promise<void> {
  await client.start(counter, { id, input: { label: id } });
  await sendUntilAccepted(client, id, 1, `${id}-1`);
  await client.waitFor(counter, id, (s) => s.revision === 2, { timeoutMs: 15_000 });
  await eventually(async () => assert.deepEqual(await storedRevisions(raw, id), [1, 2]), 10_000);
}

describe('history held back by its stream', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await killAllEngines();
    await nats?.dispose();
  });

  it('a SIGKILL while the stream refuses a write history: the next owner publishes it', { timeout: 60_000 }, async () => {
    const namespace = uniqueNamespace('histkill');
    const raw = await Raw.open(nats.url, namespace);
    const client = await createClient({ servers: nats.url, namespace });
    try {
      const a = spawnEngine({ url: nats.url, namespace, partitions: 1, leaseTtlMs: LEASE_TTL_MS, label: 'a' });
      await a.ready;
      await startWithOneEvent(client, raw, 'h-1');

      await historyRefuses(raw, namespace, true);
      const { seq } = await sendUntilAccepted(client, 'h-1', 2, 'h-1-2');
      await client.waitFor(counter, 'h-1', (s) => s.revision === 3, { timeoutMs: 15_000 });
      // Several lease renewals: each writes the partition's checkpoint.
      await sleep(3 * LEASE_TTL_MS);
      const lease = await raw.lease(0);
      assert.ok(lease, 'partition 0 has a lease');
      assert.ok(lease.checkpoint < seq, `the checkpoint (${lease.checkpoint}) stays before event ${seq}, whose history the stream refused`);

      await a.kill();
      await historyRefuses(raw, namespace, false);
      const b = spawnEngine({ url: nats.url, namespace, partitions: 1, leaseTtlMs: LEASE_TTL_MS, label: 'b' });
      await b.ready;
      await eventually(async () => assert.deepEqual(await storedRevisions(raw, 'h-1'), [1, 2, 3]), 20_000);
      const state = await client.get(counter, 'h-1');
      assert.equal(state?.revision, 3, 'the event was applied once');
      assert.deepEqual((state?.context as { log: number[] }).log, [1, 2]);
    } finally {
      await killAllEngines();
      await client.close();
      await raw.close();
    }
  });

  it('without a crash, the engine publishes the refused history once the stream takes it', { timeout: 60_000 }, async () => {
    const namespace = uniqueNamespace('histretry');
    const raw = await Raw.open(nats.url, namespace);
    const logger = memoryLogger();
    const engine = await createEngine({ servers: nats.url, namespace, workflows: [counter], partitions: 1, leaseTtlMs: LEASE_TTL_MS, logger });
    try {
      await startWithOneEvent(engine, raw, 'h-2');
      await historyRefuses(raw, namespace, true);
      const { seq } = await sendUntilAccepted(engine, 'h-2', 2, 'h-2-2');
      await engine.waitFor(counter, 'h-2', (s) => s.revision === 3, { timeoutMs: 15_000 });
      await sleep(3 * LEASE_TTL_MS);
      assert.ok((await raw.lease(0))!.checkpoint < seq, 'the checkpoint waits for the history');
      assert.ok(
        logger.lines.some((l) => l.includes("instance 'h-2'") && l.includes('history not published yet')),
        `the refusal is logged:\n${logger.lines.join('\n')}`,
      );

      await historyRefuses(raw, namespace, false);
      // No further event: the engine itself publishes the entries again, then the checkpoint moves.
      await eventually(async () => assert.deepEqual(await storedRevisions(raw, 'h-2'), [1, 2, 3]), 20_000);
      await eventually(async () => assert.ok((await raw.lease(0))!.checkpoint >= seq), 10_000);
    } finally {
      await engine.close();
      await raw.close();
    }
  });

  it('a task run in process: its start event waits for the history of the outcome write too', { timeout: 60_000 }, async () => {
    const namespace = uniqueNamespace('histtask');
    const raw = await Raw.open(nats.url, namespace);
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const gated = defineWorkflow({
      name: 'gated',
      version: 1,
      input: z.object({}),
      events: {},
      machine: setup({ actors: { wait: activity(() => released.then(() => ({ ok: true }))) } }).createMachine({
        id: 'gated',
        initial: 'working',
        states: { working: { invoke: { src: 'wait', onDone: 'done' } }, done: { type: 'final' } },
      }),
    });
    // The task stays in process however long it takes (no hand-over to the tasks stream).
    const engine = await createEngine({
      servers: nats.url,
      namespace,
      workflows: [gated],
      partitions: 1,
      leaseTtlMs: LEASE_TTL_MS,
      localHoldMs: 60_000,
      logger: memoryLogger(),
    });
    try {
      // The start (event 1 of the partition) creates the record and runs the task here; its
      // history is stored while the task runs.
      await engine.start(gated, { id: 'g-1', input: {} });
      await eventually(async () => assert.deepEqual(await storedRevisionsOf(raw, 'gated', 'g-1'), [1]), 10_000);
      await historyRefuses(raw, namespace, true);
      // The outcome is written as revision 2, with no event of its own; its history is refused.
      release();
      await engine.waitFor(gated, 'g-1', (s) => s.status === 'done', { timeoutMs: 15_000 });
      await sleep(3 * LEASE_TTL_MS);
      assert.equal((await raw.lease(0, 'gated'))?.checkpoint, 0, 'the start event stays unfinished while the outcome write history is refused');

      await historyRefuses(raw, namespace, false);
      await eventually(async () => assert.deepEqual(await storedRevisionsOf(raw, 'gated', 'g-1'), [1, 2]), 20_000);
      await eventually(async () => assert.equal((await raw.lease(0, 'gated'))?.checkpoint, 1), 10_000);
    } finally {
      await engine.close();
      await raw.close();
    }
  });
});
