// A task's message has a keyed message id, so publishing it again (a repair after a crash, which
// republishes every pending task of the instance) is dropped by the tasks stream, but only within
// its duplicate window. A task pending longer than that (a long activity, a long retry wait) got a
// second message, and two engines ran it at once. Here the second message is published by hand,
// with another message id, as the stream takes one past the window.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { createEngine, type Engine } from '../../engine/index.js';
import { eventually, memoryLogger, natsForSuite, oneTaskWorkflow, uniqueNamespace } from '../helpers.js';

const runs: number[] = [];

/** One activity of about 4 s, from the tasks stream. */
const long = oneTaskWorkflow(
  'long',
  async ({ attempt }) => {
    runs.push(attempt);
    await new Promise((r) => setTimeout(r, 4_000));
    return 'ok';
  },
  { inProcess: false },
);

describe('a second message of a task that is running', () => {
  const suite = natsForSuite();

  it('is dropped, on whichever engine it reaches', async () => {
    const namespace = uniqueNamespace('secondmsg');
    const options = { servers: suite.nats.url, namespace, workflows: [long], localTasks: 0, logger: memoryLogger() };
    const engines: Engine[] = [await createEngine(options)];
    try {
      await engines[0]!.start(long, { id: 'j1', input: {}, wait: false });
      await eventually(() => assert.equal(runs.length, 1));
      engines.push(await createEngine(options));
      // The running task's message, published again as the stream takes one past its window.
      const stream = `${namespace}_tasks`;
      const jsm = await jetstreamManager(suite.nc);
      const stored = await jsm.streams.getMessage(stream, { last_by_subj: `${namespace}.task.long.work` });
      await jetstream(suite.nc).publish(stored!.subject, stored!.data, { msgID: `again-${Date.now()}` });
      const end = await engines[0]!.waitFor(long, 'j1', (i) => i.status !== 'running', { timeoutMs: 20_000 });
      assert.equal(end.value, 'done');
      // Whatever became of the second message, it ran nothing.
      await eventually(async () => assert.equal((await jsm.streams.info(stream)).state.messages, 0), 10_000);
      assert.deepEqual(runs, [1], 'one run');
    } finally {
      for (const e of engines) await e.close();
    }
  });
});
