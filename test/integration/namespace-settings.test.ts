// A namespace's replicas and duplicate window are fixed by the process that creates it. A later
// process that asks for others is told so, and the streams it makes (a new workflow's events
// streams) follow the namespace's: an events stream with a shorter window than the engines judge
// signed messages by, or fewer replicas than its neighbours, would lose what the others keep.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { createEngine } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { order } from '../../workflows/order.js';
import { toggle } from '../toggle-workflow.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('an existing namespace opened with other settings', () => {
  const suite = natsForSuite();

  it('says which settings stand, and new streams follow them', async () => {
    const namespace = uniqueNamespace('nssettings');
    const first = await createEngine({ servers: suite.nats.url, namespace, workflows: [order], duplicateWindowMs: 60_000 });
    const logger = memoryLogger();
    const second = await createEngine({ servers: suite.nats.url, namespace, workflows: [toggle], duplicateWindowMs: 300_000, logger });
    try {
      assert.ok(
        logger.lines.some((l) => l.includes(`namespace '${namespace}' exists with duplicateWindowMs 60000 (asked: 300000): its settings stand`)),
        logger.lines.join('\n'),
      );
      const jsm = await jetstreamManager(suite.nc);
      const created = (await jsm.streams.info(layout(namespace).eventStream('toggle', 0))).config;
      assert.equal(created.duplicate_window, 60_000 * 1_000_000, "the new workflow's events stream has the namespace's window");
      // A process that asked for nothing in particular follows without a word.
      const quiet = memoryLogger();
      const third = await createEngine({ servers: suite.nats.url, namespace, workflows: [toggle], logger: quiet });
      await third.close();
      assert.deepEqual(
        quiet.lines.filter((l) => l.includes('its settings stand')),
        [],
      );
    } finally {
      await second.close();
      await first.close();
    }
  });

  it("says so when the history age limit or the record shards asked for are not the namespace's", async () => {
    const namespace = uniqueNamespace('nshistory');
    const first = await createEngine({ servers: suite.nats.url, namespace, workflows: [order], historyMaxAgeMs: 86_400_000, recordShards: 2 });
    const logger = memoryLogger();
    const second = await createEngine({ servers: suite.nats.url, namespace, workflows: [order], historyMaxAgeMs: 7 * 86_400_000, recordShards: 8, logger });
    try {
      assert.ok(
        logger.lines.some((l) => l.includes(`namespace '${namespace}' exists with historyMaxAgeMs 86400000 (asked: 604800000): its settings stand`)),
        logger.lines.join('\n'),
      );
      assert.ok(
        logger.lines.some((l) => l.includes(`namespace '${namespace}' has 2 record shards, fixed when it was created; the configured 8 is ignored`)),
        logger.lines.join('\n'),
      );
    } finally {
      await second.close();
      await first.close();
    }
  });
});
