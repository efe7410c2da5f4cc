// A task's progress entry in the control bucket (its attempts, the message it runs from) was left
// there once the task was over: purged (a KV purge leaves a marker per key, kept for ever), or
// not at all. The bucket grew by one message per task that ran from the tasks stream or failed an
// attempt. Once an outcome is delivered and applied, the entry's messages are removed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow, DEFER, type EngineExtension, type ExtensionHost, type TaskRef } from '../../engine/index.js';
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

/** Tasks deferred to an extension (as a Step Functions stage is), from the tasks stream; CANCEL leaves the state. */
const deferredRefs: TaskRef[] = [];
const staged = defineWorkflow({
  name: 'staged',
  version: 1,
  input: z.object({}),
  events: { CANCEL: z.object({}) },
  machine: setup({
    actors: {
      stage: activity(
        async (ctx) => {
          deferredRefs.push(ctx.task);
          return DEFER as never;
        },
        { inProcess: false },
      ),
    },
  }).createMachine({
    initial: 'delegated',
    states: {
      delegated: { invoke: { src: 'stage', onDone: 'done' }, on: { CANCEL: 'cancelled' } },
      done: { type: 'final' },
      cancelled: { type: 'final' },
    },
  }),
});

/** Delivers deferred outcomes when the test says so. */
class Completer implements EngineExtension {
  readonly name = 'completer';
  host: ExtensionHost | undefined;
  async start(host: ExtensionHost): Promise<void> {
    this.host = host;
  }
  async stop(): Promise<void> {}
}

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

  it('leave nothing once a deferred task is completed by its extension, or its state is left', async () => {
    const namespace = uniqueNamespace('progdefer');
    const completer = new Completer();
    const engine = await createEngine({
      servers: suite.nats.url,
      namespace,
      workflows: [staged],
      extensions: [completer],
      leaseTtlMs: 1_000,
      logger: memoryLogger(),
    });
    const jsm = await jetstreamManager(suite.nc);
    const taskEntries = async () =>
      (await jsm.streams.info(`KV_${namespace}_control`, { subjects_filter: `$KV.${namespace}_control.task.>` })).state.subjects ?? {};
    try {
      for (const id of ['done-1', 'left-1']) await engine.start(staged, { id, input: {}, wait: false });
      await eventually(() => assert.equal(deferredRefs.filter((r) => r.workflow === 'staged').length, 2, 'both stages deferred'));
      await eventually(async () => assert.equal(Object.keys(await taskEntries()).length, 2, 'each deferred task has its entry while it is pending'));
      await completer.host!.completeTask(
        deferredRefs.find((r) => r.id === 'done-1')!,
        { ok: true, output: 'finished' },
      );
      await engine.send(staged, 'left-1', { type: 'CANCEL' });
      assert.equal((await engine.waitFor(staged, 'done-1', (i) => i.status === 'done', { timeoutMs: 10_000 })).value, 'done');
      assert.equal((await engine.waitFor(staged, 'left-1', (i) => i.status === 'done', { timeoutMs: 10_000 })).value, 'cancelled');
      await eventually(async () => assert.deepEqual(await taskEntries(), {}, 'no task entry, nor a marker of one'), 15_000, 250);
    } finally {
      await engine.close();
    }
  });
});
