// A delete removes a finished instance's history and its record. When the history cannot be
// purged (here: a history stream that refuses purges), the instance must stay whole, the delete
// waiting and saying why; before, the record went first, the history stayed behind (an instance
// started again under the id showed it), and the retried delete was dead-lettered as sent to an
// instance that "does not exist".
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { createEngine } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { toggle } from '../toggle-workflow.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';
import { oneShot } from '../oneshot-workflow.js';

describe('a delete whose history purge fails', () => {
  const suite = natsForSuite();

  it('leaves the instance whole, with its history, and says why', async () => {
    const namespace = uniqueNamespace('delpurge');
    const logger = memoryLogger();
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [oneShot, toggle], logger, drainTimeoutMs: 500 });
    try {
      const done = await engine.start(oneShot, { id: 'd1', input: {} });
      assert.equal(done.status, 'done');
      await eventually(async () => assert.equal((await engine.history(oneShot, 'd1')).length, 1));
      const jsm = await jetstreamManager(suite.nc);
      const stream = layout(namespace).historyStream;
      await jsm.streams.update(stream, { ...(await jsm.streams.info(stream)).config, deny_purge: true });

      await engine.delete(oneShot, 'd1');
      await eventually(
        () =>
          assert.ok(
            logger.lines.some((l) => /d1.*purge not permitted.*retrying/.test(l)),
            logger.lines.join('\n'),
          ),
        10_000,
      );
      assert.equal((await engine.get(oneShot, 'd1'))?.status, 'done', 'the record stays');
      assert.equal((await engine.history(oneShot, 'd1')).length, 1, 'and its history');
      assert.deepEqual(await engine.deadLetters(), [], 'the delete is not dead-lettered');
    } finally {
      await engine.close();
    }
  });
});
