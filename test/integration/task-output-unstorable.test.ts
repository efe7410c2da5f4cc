// An activity whose output cannot be stored (not JSON, or larger than a NATS message) fails its
// task once, with the reason: running it again would return the same, and its side effects would
// repeat for ever.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const calls = { huge: 0, bigint: 0 };

function workflowOf(name: string, inProcess: boolean, fn: () => Promise<unknown>) {
  return defineWorkflow({
    name,
    version: 1,
    input: z.object({}),
    events: {},
    machine: setup({
      types: {} as { context: { error?: string } },
      actors: { produce: activity(fn, { inProcess, retry: { maxAttempts: 3, initialIntervalMs: 100 } }) },
    }).createMachine({
      context: {},
      initial: 'working',
      states: {
        working: {
          invoke: {
            src: 'produce',
            onDone: 'done',
            onError: { target: 'failed', actions: assign({ error: ({ event }) => (event.error as { message?: string }).message }) },
          },
        },
        done: { type: 'final' },
        failed: { type: 'final' },
      },
    }),
  });
}

const huge = workflowOf('huge', false, async () => {
  calls.huge++;
  return 'x'.repeat(2_000_000);
});
const bigint = workflowOf('bigint', true, async () => {
  calls.bigint++;
  return { n: 10n };
});

describe('an activity output that cannot be stored', () => {
  const suite = natsForSuite();

  for (const [wf, label, reason] of [
    [huge, 'larger than a NATS message, run from the tasks stream', /more than the \d+ bytes a message holds/],
    [bigint, 'not JSON, run in process', /not JSON/],
  ] as const) {
    it(`${label}: the task fails once, saying why`, async () => {
      const namespace = uniqueNamespace(`unstorable${wf.name}`);
      const options = { servers: suite.nats.url, namespace, workflows: [wf], logger: memoryLogger() };
      const engine = await createEngine(options);
      const client = await createClient(options);
      try {
        await client.start(wf, { id: 'u1', input: {} });
        const settled = await client.waitFor(wf, 'u1', (i) => i.status === 'done', { timeoutMs: 10_000 });
        assert.deepEqual(settled.value, 'failed');
        assert.match(String(settled.context.error), /activity 'produce' returned an output that cannot be stored/);
        assert.match(String(settled.context.error), reason);
        await sleep(1_500);
        assert.equal(calls[wf.name as 'huge' | 'bigint'], 1, 'ran once');
      } finally {
        await client.close();
        await engine.close();
      }
    });
  }
});
