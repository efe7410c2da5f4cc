// A partition stream whose sequence went back below what its engine read (deleted and made again,
// or a server that lost its newest writes) is reported: events it takes from then on get
// sequences the engine has passed, and they went unread with nothing logged.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { createClient, createEngine } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { counter } from '../counter-workflow.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('a partition stream whose sequence went back', () => {
  const suite = natsForSuite();

  it('is reported as an error that says what happened', async () => {
    const namespace = uniqueNamespace('wentback');
    const logger = memoryLogger();
    const options = { servers: suite.nats.url, namespace, workflows: [counter], partitions: 1, logger };
    const engine = await createEngine({ ...options, leaseTtlMs: 1_000 });
    const client = await createClient(options);
    try {
      await client.start(counter, { id: 'c1', input: { label: 'x' } });
      for (let i = 0; i < 4; i++) await client.send(counter, 'c1', { type: 'ADD', k: 1 });
      await client.waitFor(counter, 'c1', (i) => i.context.n === 4, { timeoutMs: 10_000 });
      const jsm = await jetstreamManager(suite.nc);
      const stream = layout(namespace).eventStream('counter', 0);
      const { config } = await jsm.streams.info(stream);
      await jsm.streams.delete(stream);
      await jsm.streams.add(config);
      await client.send(counter, 'c1', { type: 'ADD', k: 1 }).catch(() => {});
      await eventually(
        () =>
          assert.ok(
            logger.lines.some((l) => /error: .*stream '.*' holds events up to \d+, below .* went back/.test(l)),
            logger.lines.slice(-3).join(' | '),
          ),
        10_000,
      );
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
