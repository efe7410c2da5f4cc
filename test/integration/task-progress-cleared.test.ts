// A task's progress entry in the control bucket (its attempts, the message it runs from) was left
// there once the task was over: purged (a KV purge leaves a marker per key, kept for ever), or
// not at all. The bucket grew by one message per task that ran from the tasks stream or failed an
// attempt. Once an outcome is delivered and applied, the entry's messages are removed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow } from '../../engine/index.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

let failedOnce = false;

/** One activity from the tasks stream, one in process that fails its first attempt. */
const chores = defineWorkflow({
  name: 'chores',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({
    actors: {
      remote: activity(async () => 'ok', { inProcess: false }),
      flaky: activity(
        async () => {
          if (!failedOnce) {
            failedOnce = true;
            throw new Error('once');
          }
          return 'ok';
        },
        { retry: { maxAttempts: 3, initialIntervalMs: 50, maxIntervalMs: 50 } },
      ),
    },
  }).createMachine({
    initial: 'remote',
    states: {
      remote: { invoke: { src: 'remote', onDone: 'flaky' } },
      flaky: { invoke: { src: 'flaky', onDone: 'done' } },
      done: { type: 'final' },
    },
  }),
});

describe('task progress entries', () => {
  const suite = natsForSuite();

  it('leave nothing in the control bucket once their tasks are over', async () => {
    const namespace = uniqueNamespace('progclear');
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [chores], leaseTtlMs: 1_000, logger: memoryLogger() });
    try {
      for (const id of ['a', 'b', 'c']) await engine.start(chores, { id, input: {}, wait: false });
      for (const id of ['a', 'b', 'c']) await engine.waitFor(chores, id, (i) => i.status === 'done', { timeoutMs: 10_000 });
      const jsm = await jetstreamManager(suite.nc);
      await eventually(
        async () => {
          const info = await jsm.streams.info(`KV_${namespace}_control`, { subjects_filter: `$KV.${namespace}_control.task.>` });
          assert.deepEqual(info.state.subjects ?? {}, {}, 'no task entry, nor a marker of one');
        },
        15_000,
        250,
      );
    } finally {
      await engine.close();
    }
  });
});
