// A parent that leaves and re-enters the state invoking a child within one step (an eventless
// transition with `reenter`) stops its first child and starts a second under a derived id, both
// under the same token. The first child's "stopped" notice names that child, and the second
// invoke, still running, does not take it as its own error.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { childWorkflow, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const waiter = defineWorkflow({
  name: 'waiter',
  version: 1,
  input: z.object({}),
  events: { GO: z.object({}) },
  machine: setup({}).createMachine({ initial: 'waiting', states: { waiting: { on: { GO: 'gone' } }, gone: { type: 'final' } } }),
});

const looper = defineWorkflow({
  name: 'looper',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({ types: { context: {} as { n: number } }, actors: { waiter: childWorkflow(waiter) } }).createMachine({
    context: { n: 0 },
    initial: 'work',
    states: {
      work: {
        entry: assign({ n: ({ context }) => context.n + 1 }),
        invoke: { id: 'c', src: 'waiter', onDone: 'finished', onError: 'failed' },
        always: { guard: ({ context }) => context.n < 2, target: 'work', reenter: true },
      },
      finished: { type: 'final' },
      failed: { type: 'final' },
    },
  }),
});

describe('a child invoked again in the same step', () => {
  const suite = natsForSuite();

  it('is not failed by the stop notice of the child before it', async () => {
    const namespace = uniqueNamespace('reinvoked');
    const options = { servers: suite.nats.url, namespace, workflows: [looper, waiter], logger: memoryLogger() };
    const engine = await createEngine(options);
    const client = await createClient(options);
    try {
      await client.start(looper, { id: 'l1', input: {} });
      // The first child is stopped (its notice goes to the parent); the second one waits.
      await client.waitFor(waiter, 'l1_c', (i) => i.status === 'stopped', { timeoutMs: 10_000 });
      await sleep(1_000);
      const parent = await client.get(looper, 'l1');
      assert.equal(parent?.value, 'work', 'still waiting for the second child');
      assert.equal((parent?.context as { n: number }).n, 2);
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
