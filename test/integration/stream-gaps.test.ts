// Events missing from a partition's stream before the engine applied them (an operator's purge,
// a deleted message, a damaged block) are reported as lost and reading goes on past them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { createClient, createEngine } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { counter } from '../counter-workflow.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('events missing from a partition stream', () => {
  const suite = natsForSuite();

  it('one deleted in the middle: reported lost, the events after it applied', async () => {
    const namespace = uniqueNamespace('gapmiddle');
    const logger = memoryLogger();
    const options = { servers: suite.nats.url, namespace, workflows: [counter], partitions: 1, logger };
    const client = await createClient(options);
    let engine: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      // Without an engine: the start (1), ADD 1 (2), ADD 10 (3), ADD 100 (4); then 3 is deleted.
      await client.start(counter, { id: 'g1', input: { label: 'gap' }, wait: false });
      for (const k of [1, 10, 100]) await client.send(counter, 'g1', { type: 'ADD', k });
      const jsm = await jetstreamManager(suite.nc);
      const stream = layout(namespace).eventStream('counter', 0);
      assert.equal(await jsm.streams.deleteMessage(stream, 3), true);
      engine = await createEngine(options);
      const done = await client
        .waitFor(counter, 'g1', (i) => i.context.n === 101, { timeoutMs: 10_000 })
        .catch((e: Error) => {
          throw new Error(`${e.message}; log: ${logger.lines.slice(-3).join(' | ')}`);
        });
      assert.equal(done.context.n, 101);
      await eventually(() =>
        assert.ok(
          logger.lines.some((l) => /events 3\.\.3 were removed/.test(l)),
          logger.lines.join(' | '),
        ),
      );
    } finally {
      await engine?.close();
      await client.close();
    }
  });

  it('a long run purged before the engine read it: reported lost, the next event applied', async () => {
    const namespace = uniqueNamespace('gaplong');
    const logger = memoryLogger();
    const options = { servers: suite.nats.url, namespace, workflows: [counter], partitions: 1, logger };
    const client = await createClient(options);
    let engine: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(counter, { id: 'g0', input: { label: 'before' }, wait: false });
      // Everything below 300,000 is gone: the engine's first read finds a gap that long.
      const jsm = await jetstreamManager(suite.nc);
      await jsm.streams.purge(layout(namespace).eventStream('counter', 0), { seq: 300_000 });
      await client.start(counter, { id: 'g2', input: { label: 'after' }, wait: false });
      engine = await createEngine(options);
      const after = await client.waitFor(counter, 'g2', (i) => i.status === 'running', { timeoutMs: 10_000 });
      assert.equal(after.context.label, 'after');
      assert.ok(logger.lines.some((l) => /events 1\.\.299999 were removed/.test(l)));
    } finally {
      await engine?.close();
      await client.close();
    }
  });
});
