// A task that ran and succeeded, whose outcome could not be stored in its instance's events stream
// at once (no stream leader during an election, a stream full for a moment): the outcome must reach
// the instance. Before, the delivery failure put the task message back with its attempt counted,
// so with `maxAttempts: 1` the next delivery found the attempts used up and told the instance the
// task had failed (`TaskAttemptsLost`), and with more attempts it ran the finished activity again.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, refuseFor, uniqueNamespace } from '../helpers.js';

const runs: number[] = [];
/** Set by the test: makes the instance's events stream refuse publishes for a while. */
let blockOutcome: (() => Promise<void>) | undefined;

const once = defineWorkflow({
  name: 'once',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({
    types: { context: {} as { error?: string; output?: number } },
    actors: {
      work: activity(
        async ({ attempt }) => {
          runs.push(attempt);
          await blockOutcome?.();
          return 42;
        },
        { inProcess: false, retry: { maxAttempts: 1 } },
      ),
    },
  }).createMachine({
    initial: 'working',
    context: {},
    states: {
      working: {
        invoke: {
          id: 'work',
          src: 'work',
          onDone: { target: 'done', actions: assign({ output: ({ event }) => event.output as number }) },
          onError: { target: 'failed', actions: assign({ error: ({ event }) => `${(event.error as Error).name}: ${(event.error as Error).message}` }) },
        },
      },
      done: { type: 'final' },
      failed: { type: 'final' },
    },
  }),
});

describe('a task whose outcome cannot be stored at once', () => {
  const suite = natsForSuite();

  it('delivers the outcome of the attempt that ran, once the stream takes it, without running the task again', async () => {
    const namespace = uniqueNamespace('undelivered');
    const logger = memoryLogger();
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [once], partitions: 1, logger });
    blockOutcome = async () => {
      blockOutcome = undefined;
      // Full for 1.5 s: the outcome's publish is refused.
      await refuseFor(suite.nc, `${namespace}_evt_once_0`, 1_500);
    };
    try {
      await engine.start(once, { id: 'o1', input: {}, wait: false });
      const done = await engine.waitFor(once, 'o1', (i) => i.status !== 'running', { timeoutMs: 30_000 });
      assert.equal(done.value, 'done', `the task's success reached the instance (${done.context.error ?? ''})`);
      assert.equal(done.context.output, 42);
      assert.deepEqual(runs, [1], 'the activity ran once');
    } finally {
      await engine.close();
    }
  });
});
