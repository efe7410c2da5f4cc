// A task run in process that leaves for the tasks stream (its retry waits longer than the hold
// time) is handed over even when the stream refuses it for a while: asked again until stored, not
// dropped with a warning (the task was then neither running nor queued, and the partition's
// checkpoint stayed behind the instance's event).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

let attempts = 0;
let release!: () => void;
const firstAttemptMayFail = new Promise<void>((r) => (release = r));

const flaky = defineWorkflow({
  name: 'flaky',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({
    actors: {
      work: activity(
        async () => {
          attempts++;
          if (attempts === 1) {
            await firstAttemptMayFail;
            throw new Error('not yet');
          }
          return 'ok';
        },
        { retry: { maxAttempts: 3, initialIntervalMs: 3_000, backoffCoefficient: 1, jitter: 0 } },
      ),
    },
  }).createMachine({
    initial: 'working',
    states: { working: { invoke: { src: 'work', onDone: 'done' } }, done: { type: 'final' } },
  }),
});

describe('a task handed over to the tasks stream', () => {
  const suite = natsForSuite();

  it('is asked again until the stream stores it', async () => {
    const namespace = uniqueNamespace('handover');
    const logger = memoryLogger();
    const options = { servers: suite.nats.url, namespace, workflows: [flaky], logger };
    // Held in process for up to 1 s; a retry that waits longer (3 s) leaves for the tasks stream.
    const engine = await createEngine({ ...options, localHoldMs: 1_000 });
    const client = await createClient(options);
    const jsm = await jetstreamManager(suite.nc);
    const stream = layout(namespace).tasksStream;
    try {
      await client.start(flaky, { id: 'f1', input: {} });
      await eventually(() => assert.equal(attempts, 1));
      // The tasks stream refuses every message for a while (a byte limit of 1, new ones discarded).
      const before = (await jsm.streams.info(stream)).config;
      await jsm.streams.update(stream, { ...before, max_bytes: 1, discard: 'new' as never });
      release(); // attempt 1 fails: its retry waits longer than the hold, so it is handed over
      await eventually(
        () =>
          assert.ok(
            logger.lines.some((l) => /task .*flaky.*f1/.test(l)),
            `a refused hand-over is logged: ${logger.lines.join('; ')}`,
          ),
        5_000,
      );
      await new Promise((r) => setTimeout(r, 500));
      await jsm.streams.update(stream, before);
      const done = await client.waitFor(flaky, 'f1', (i) => i.status === 'done', { timeoutMs: 15_000 });
      assert.deepEqual(done.value, 'done');
      assert.equal(attempts, 2);
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
