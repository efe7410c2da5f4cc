// An engine that takes a partition over from a silent one and then fails to start its reader (the
// stream electing a leader, say) gives the lease back with its checkpoint: it deleted the lease,
// and the checkpoint, which lived only in the silent engine's lease, was lost; the next owner read
// the partition from the start.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { encodeJson } from '../../engine/protocol/json.js';
import { createClient, createEngine } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { counter } from '../counter-workflow.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('a takeover whose reader does not start', () => {
  const suite = natsForSuite();

  it('keeps the checkpoint of the lease it took', async () => {
    const namespace = uniqueNamespace('takeoverfail');
    const options = { servers: suite.nats.url, namespace, workflows: [counter], partitions: 1 };
    const names = layout(namespace);
    const first = await createEngine({ ...options, logger: memoryLogger() });
    const client = await createClient({ ...options, logger: memoryLogger() });
    let second: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(counter, { id: 'c1', input: { label: 'x' } });
      for (let i = 0; i < 5; i++) await client.send(counter, 'c1', { type: 'ADD', k: 1 });
      await client.waitFor(counter, 'c1', (i) => i.context.n === 5, { timeoutMs: 10_000 });
      await first.close();
      // As a silent engine would leave things: its lease holds the checkpoint (6), no checkpoint
      // key, and the events up to it trimmed.
      const control = await new Kvm(suite.nc).open(names.controlBucket);
      await control.purge(names.checkpointKey('counter', 0));
      await control.put(names.leaseKey('counter', 0), encodeJson({ owner: 'silent-engine', checkpoint: 6, safe: 6, ttlMs: 1_000 }));
      await (await jetstreamManager(suite.nc)).streams.purge(names.eventStream('counter', 0), { seq: 7 });

      const logger = memoryLogger();
      let failed = false;
      second = await createEngine({
        ...options,
        logger,
        leaseTtlMs: 1_000,
        testHooks: {
          beforeWorkerStart: () => {
            if (!failed) {
              failed = true;
              throw new Error('the stream is electing a leader');
            }
          },
        },
      });
      await client.send(counter, 'c1', { type: 'ADD', k: 1 });
      const done = await client.waitFor(counter, 'c1', (i) => i.context.n === 6, { timeoutMs: 15_000 });
      assert.equal(done.context.n, 6);
      assert.equal(failed, true, 'the first start of its reader failed');
      assert.deepEqual(
        logger.lines.filter((l) => /were removed/.test(l)),
        [],
        'the partition is read from the checkpoint, not from its start',
      );
    } finally {
      await second?.close();
      await client.close();
      await first.close().catch(() => {});
    }
  });
});
