// A task run in process that was handed over to the tasks stream (it ran longer than the hold
// time) and then failed keeps its retry's backoff: the message already in the stream carries no
// "not before" (a second publish under the same id is dropped as a duplicate), and the next
// attempt ran at the next delivery, about a second later, so retries ran out in seconds.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const startedAt: number[] = [];
let failedAt = 0;

const slowFlaky = defineWorkflow({
  name: 'slowflaky',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({
    actors: {
      work: activity(
        async () => {
          startedAt.push(Date.now());
          if (startedAt.length === 1) {
            // Longer than the hold time: handed over, claimed by this engine, while it runs.
            await new Promise((r) => setTimeout(r, 1_000));
            failedAt = Date.now();
            throw new Error('not yet');
          }
          return 'ok';
        },
        { retry: { maxAttempts: 3, initialIntervalMs: 4_000, backoffCoefficient: 1, jitter: 0 } },
      ),
    },
  }).createMachine({
    initial: 'working',
    states: { working: { invoke: { src: 'work', onDone: 'done' } }, done: { type: 'final' } },
  }),
});

describe('a task handed over while it ran, then failed', () => {
  const suite = natsForSuite();

  it('waits its backoff before the next attempt', async () => {
    const namespace = uniqueNamespace('retryhandover');
    const options = { servers: suite.nats.url, namespace, workflows: [slowFlaky], logger: memoryLogger() };
    const engine = await createEngine({ ...options, localHoldMs: 300 });
    const client = await createClient(options);
    try {
      await client.start(slowFlaky, { id: 's1', input: {} });
      await client.waitFor(slowFlaky, 's1', (i) => i.status === 'done', { timeoutMs: 20_000 });
      assert.equal(startedAt.length, 2);
      const waited = startedAt[1]! - failedAt;
      assert.ok(waited >= 3_500, `attempt 2 started ${waited} ms after attempt 1 failed; its backoff is 4000 ms`);
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
