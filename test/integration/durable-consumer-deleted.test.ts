// The shared durable consumers of timers and tasks are made again when they go missing (deleted
// by hand, a stream restored without them): an engine kept warning once a second and fired no
// timer and ran no task from the stream until it was restarted.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const later = defineWorkflow({
  name: 'later',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({ actors: { remote: activity(async () => 'ok', { inProcess: false }) } }).createMachine({
    initial: 'waiting',
    states: {
      waiting: { after: { 300: 'working' } },
      working: { invoke: { src: 'remote', onDone: 'done' } },
      done: { type: 'final' },
    },
  }),
});

describe('a durable consumer of timers or tasks deleted while an engine runs', () => {
  const suite = natsForSuite();

  it('is made again: timers fire and tasks run', async () => {
    const namespace = uniqueNamespace('consumergone');
    const logger = memoryLogger();
    const options = { servers: suite.nats.url, namespace, workflows: [later], logger };
    const engine = await createEngine(options);
    const client = await createClient(options);
    const jsm = await jetstreamManager(suite.nc);
    const names = layout(namespace);
    try {
      await jsm.consumers.delete(names.timersStream, 'timers');
      for (const c of await jsm.consumers.list(names.tasksStream).next()) await jsm.consumers.delete(names.tasksStream, c.name);
      await client.start(later, { id: 'l1', input: {} });
      const done = await client
        .waitFor(later, 'l1', (i) => i.status === 'done', { timeoutMs: 15_000 })
        .catch((e: Error) => {
          throw new Error(`${e.message}; log: ${logger.lines.slice(-5).join(' | ')}`);
        });
      assert.deepEqual(done.value, 'done');
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
