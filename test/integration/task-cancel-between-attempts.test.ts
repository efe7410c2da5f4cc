// A task run in process whose instance leaves the invoking state while the task waits for its
// next attempt runs no further attempt (the cancel reached the finished attempt's signal, and the
// next attempt ran with a fresh one, after its state was left).
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

let attempts = 0;

const stoppable = defineWorkflow({
  name: 'stoppable',
  version: 1,
  input: z.object({}),
  events: { STOP: z.object({}) },
  machine: setup({
    actors: {
      work: activity(
        async () => {
          attempts++;
          throw new Error('failing');
        },
        { retry: { maxAttempts: 5, initialIntervalMs: 800, backoffCoefficient: 1, jitter: 0 } },
      ),
    },
  }).createMachine({
    initial: 'working',
    states: {
      working: { invoke: { src: 'work', onError: 'failed' }, on: { STOP: 'stopped' } },
      stopped: { type: 'final' },
      failed: { type: 'final' },
    },
  }),
});

describe('a task waiting in process for its next attempt', () => {
  const suite = natsForSuite();

  it('runs no further attempt once its state is left', async () => {
    const namespace = uniqueNamespace('cancelwait');
    const options = { servers: suite.nats.url, namespace, workflows: [stoppable], logger: memoryLogger() };
    // The 800 ms retry wait is shorter than the hold time: the task waits here, in process.
    const engine = await createEngine({ ...options, localHoldMs: 2_000 });
    const client = await createClient(options);
    try {
      await client.start(stoppable, { id: 's1', input: {} });
      await eventually(() => assert.equal(attempts, 1));
      await client.send(stoppable, 's1', { type: 'STOP' });
      await client.waitFor(stoppable, 's1', (i) => i.status === 'done', { timeoutMs: 10_000 });
      await sleep(1_500);
      assert.equal(attempts, 1, 'no attempt after the state was left');
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
