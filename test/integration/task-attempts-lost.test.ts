// Each attempt from the tasks stream records itself in the control bucket before it runs, so an
// attempt whose engine died (an out-of-memory kill, a native crash in the activity) counts. But
// nothing refused to run an attempt past `retry.maxAttempts`: a task whose attempts kill their
// engine took engine after engine down, for ever, and its instance never heard. Here the record of
// a second attempt that "died" is written by hand while the first attempt's retry waits.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Kvm } from '@nats-io/kv';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow } from '../../engine/index.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const attempts: number[] = [];

const lossy = defineWorkflow({
  name: 'lossy',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({
    types: { context: {} as { error?: string } },
    actors: {
      work: activity(
        async ({ attempt }) => {
          attempts.push(attempt);
          throw new Error('down');
        },
        { inProcess: false, retry: { maxAttempts: 2, initialIntervalMs: 1_500, maxIntervalMs: 1_500 } },
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
          onDone: 'done',
          onError: { target: 'failed', actions: assign({ error: ({ event }) => (event.error as Error).message }) },
        },
      },
      done: { type: 'final' },
      failed: { type: 'final' },
    },
  }),
});

describe('a task whose attempts died with their engine', () => {
  const suite = natsForSuite();

  it('runs no attempt past retry.maxAttempts: the task fails, naming the lost attempts', async () => {
    const namespace = uniqueNamespace('attemptslost');
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [lossy], logger: memoryLogger() });
    try {
      await engine.start(lossy, { id: 'l1', input: {}, wait: false });
      // Attempt 1 failed; its retry waits 1.5 s. Meanwhile "attempt 2 started on an engine that died".
      const control = await new Kvm(suite.nc).open(`${namespace}_control`);
      const key = await eventually(async () => {
        for await (const k of await control.keys('task.lossy.>')) {
          const v = (await control.get(k))?.json<{ attempt?: number }>();
          if (v?.attempt === 1) return k;
        }
        throw new Error('no failed attempt recorded yet');
      });
      const entry = (await control.get(key))!.json<Record<string, unknown>>();
      await control.put(key, JSON.stringify({ ...entry, started: 2 }));
      const done = await engine.waitFor(lossy, 'l1', (i) => i.status !== 'running', { timeoutMs: 15_000 });
      assert.deepEqual(attempts, [1], 'no third attempt ran');
      assert.equal(done.value, 'failed');
      assert.match(done.context.error ?? '', /attempt 3 of at most 2/);
    } finally {
      await engine.close();
    }
  });
});
