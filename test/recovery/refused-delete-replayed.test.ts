// A delete refused because its instance was running is not applied later. The instance's activity
// ran in process, so the event that started it stayed unfinished, and so did the refused delete
// behind it; the activity's outcome then finished the instance by a write of its own, which did
// not say that the delete had been judged. A new owner of the partition reads it again from the
// checkpoint (here a start waiting for a version no engine has holds it; a SIGKILL before the next
// lease renewal does the same), judged the delete again against the finished instance, and deleted
// it and its history, although the delete had been refused and recorded as refused.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

let open!: () => void;
const latch = new Promise<void>((r) => (open = r));
let running = 0;

/** Its activity waits for the test's latch, then the instance is done. */
function version(v: number) {
  return defineWorkflow({
    name: 'latched',
    version: v,
    input: z.object({}),
    events: {},
    machine: setup({
      actors: {
        work: activity(async () => {
          running++;
          await latch;
          return 1;
        }),
      },
    }).createMachine({
      initial: 'working',
      states: {
        working: { invoke: { src: 'work', onDone: 'done' } },
        done: { type: 'final' },
      },
    }),
  });
}
const v1 = version(1);
const v2 = version(2);

describe('a delete refused while its instance ran, read again by a new owner', () => {
  const suite = natsForSuite();

  it('stays refused: the instance finished later keeps its record and history', async () => {
    const namespace = uniqueNamespace('refuseddel');
    const base = { servers: suite.nats.url, namespace, partitions: 1, leaseTtlMs: 1_000, localHoldMs: 30_000, workflows: [v1] };
    const first = await createEngine({ ...base, logger: memoryLogger() });
    const client = await createClient({ servers: suite.nats.url, namespace });
    try {
      // Holds the partition's checkpoint: no engine has version 2.
      await client.start(v2, { id: 'blocker', input: {}, wait: false });
      await first.start(v1, { id: 'x', input: {} });
      await eventually(() => assert.equal(running, 1, 'the activity runs'));
      await first.delete(v1, 'x');
      await eventually(async () =>
        assert.ok(
          (await first.history(v1, 'x')).some((h) => /instance\.running/.test(JSON.stringify(h))),
          'the delete was refused',
        ),
      );
      open();
      await first.waitFor(v1, 'x', (i) => i.status === 'done', { timeoutMs: 10_000 });
    } finally {
      await first.close();
    }
    const second = await createEngine({ ...base, logger: memoryLogger() });
    try {
      // Behind x's events in the partition: once y is done, the new owner has read x's.
      await second.start(v1, { id: 'y', input: {} });
      await second.waitFor(v1, 'y', (i) => i.status === 'done', { timeoutMs: 10_000 });
      const x = await second.get(v1, 'x');
      assert.equal(x?.status, 'done', 'x is still there, done');
      assert.ok((await second.history(v1, 'x')).length >= 2, "x's history is still there");
    } finally {
      await second.close();
      await client.close();
    }
  });
});
