// A partition handed over to a new engine (it joined) while one of its instances' activities runs
// in process on the old one: the old owner's drain waits for the activity, delivers its outcome to
// the instance's inbox, and the new owner applies it. The activity runs once. Before, the delivered
// outcome left the event that started the task unfinished, so the new owner read it again from the
// checkpoint, repaired the write that started the task, and published the task again: a second run.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow, partitionOf, type Engine } from '../../engine/index.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

let open!: () => void;
const latch = new Promise<void>((r) => (open = r));
let runs = 0;

const chore = defineWorkflow({
  name: 'chore',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({
    actors: {
      work: activity(async () => {
        runs++;
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

describe('an in-process activity running when its partition is handed over', () => {
  const suite = natsForSuite();

  it('runs once: its outcome goes to the inbox, and the new owner does not publish the task again', { timeout: 60_000 }, async () => {
    const namespace = uniqueNamespace('handoveronce');
    const options = {
      servers: suite.nats.url,
      namespace,
      workflows: [chore],
      partitions: 2,
      leaseTtlMs: 1_000,
      drainTimeoutMs: 20_000,
      localHoldMs: 60_000,
      logger: memoryLogger(),
    };
    const engines: Engine[] = [];
    try {
      const first = await createEngine(options);
      engines.push(first);
      // An instance of partition 1, the one the first engine hands over when a second one comes.
      const id = Array.from({ length: 50 }, (_, i) => `c${i}`).find((x) => partitionOf('chore', x, 2) === 1)!;
      await first.start(chore, { id, input: {} });
      await eventually(() => assert.equal(runs, 1, 'the activity runs in the first engine'));
      const second = await createEngine(options);
      engines.push(second);
      await eventually(() => assert.ok(!first.status().owned.some((o) => o.partition === 1), 'the first engine hands partition 1 over'), 15_000);
      open();
      const done = await second.waitFor(chore, id, (i) => i.status === 'done', { timeoutMs: 30_000 });
      assert.equal(done.value, 'done');
      // A task published again would run within a few hundred milliseconds on either engine.
      await new Promise((r) => setTimeout(r, 3_000));
      assert.equal(runs, 1, 'the activity ran once');
    } finally {
      for (const e of engines.reverse()) await e.close();
    }
  });
});
