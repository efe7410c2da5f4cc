// A new owner of a partition reads it from the checkpoint, which may lie behind events already
// applied (here a start waiting for a version no engine has holds it; a SIGKILL before the next
// lease renewal does the same). An instance started, finished and deleted after that point had no
// record left to say so: its start created it again and ran its activity a second time, and its
// replayed delete, refused because the new instance was running, was dead-lettered.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const runs = new Map<string, number>();

/** Runs its activity (counted per instance), then waits for FIN. */
function version(v: number) {
  return defineWorkflow({
    name: 'replayed',
    version: v,
    input: z.object({ id: z.string() }),
    events: { FIN: z.object({}) },
    machine: setup({
      types: {} as { input: { id: string } },
      actors: {
        work: activity(async ({ input }: { input: { id: string } }) => {
          runs.set(input.id, (runs.get(input.id) ?? 0) + 1);
          return 1;
        }),
      },
    }).createMachine({
      initial: 'working',
      context: ({ input }) => ({ id: input.id }),
      states: {
        working: { invoke: { src: 'work', input: ({ context }) => ({ id: context.id }), onDone: 'idle' } },
        idle: { on: { FIN: 'done' } },
        done: { type: 'final' },
      },
    }),
  });
}
const v1 = version(1);
const v2 = version(2);

describe('a partition read again from a checkpoint behind a deleted instance', () => {
  const suite = natsForSuite();

  it('does not bring the instance back, run its activity again or dead-letter its events; its id can be started again', async () => {
    const namespace = uniqueNamespace('replaydel');
    const base = { servers: suite.nats.url, namespace, partitions: 1, leaseTtlMs: 1_000, workflows: [v1] };
    // The engine first: it makes the namespace, with one partition.
    const first = await createEngine({ ...base, logger: memoryLogger() });
    const client = await createClient({ servers: suite.nats.url, namespace });
    try {
      // Holds the partition's checkpoint: no engine has version 2.
      await client.start(v2, { id: 'blocker', input: { id: 'blocker' }, wait: false });
      await first.start(v1, { id: 'x', input: { id: 'x' } });
      await first.waitFor(v1, 'x', (i) => i.value === 'idle', { timeoutMs: 10_000 });
      await first.send(v1, 'x', { type: 'FIN' });
      await first.waitFor(v1, 'x', (i) => i.status === 'done', { timeoutMs: 10_000 });
      await first.delete(v1, 'x');
      await eventually(async () => assert.equal(await first.get(v1, 'x'), null));
    } finally {
      await first.close();
    }
    const second = await createEngine({ ...base, logger: memoryLogger() });
    try {
      // Behind x's events in the partition: once y is done, the new owner has read x's.
      await second.start(v1, { id: 'y', input: { id: 'y' } });
      await second.waitFor(v1, 'y', (i) => i.value === 'idle', { timeoutMs: 10_000 });
      assert.equal(await second.get(v1, 'x'), null, 'x stays deleted');
      assert.equal(runs.get('x'), 1, "x's activity ran once");
      const letters = (await second.deadLetters()).filter((l) => l.id === 'x');
      assert.deepEqual(letters, [], 'no event of x was dead-lettered');
      // The id can be used again.
      await second.start(v1, { id: 'x', input: { id: 'x' } });
      await second.waitFor(v1, 'x', (i) => i.value === 'idle', { timeoutMs: 10_000 });
      assert.equal(runs.get('x'), 2);
    } finally {
      await second.close();
      await client.close();
    }
  });
});
