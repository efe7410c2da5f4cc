// A lease renewal the server stored but whose reply the engine never got (a timeout, a
// disconnect) leaves the next renewal with an old revision: the engine took the conflict for a
// lost lease and stopped reading the partition until it was taken over as silent.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { Kvm } from '@nats-io/kv';
import { createClient, createEngine } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { counter } from '../counter-workflow.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('a lease renewal whose reply was lost', () => {
  const suite = natsForSuite();

  it('does not make the engine give its partition up', async () => {
    const namespace = uniqueNamespace('renewreply');
    const logger = memoryLogger();
    const options = { servers: suite.nats.url, namespace, workflows: [counter], partitions: 1, logger };
    const engine = await createEngine({ ...options, leaseTtlMs: 1_500 });
    const client = await createClient(options);
    try {
      await client.start(counter, { id: 'c1', input: { label: 'x' } });
      const names = layout(namespace);
      const control = await new Kvm(suite.nc).open(names.controlBucket);
      // What the engine's last renewal wrote, written again: only the revision moves, as when a
      // renewal's reply is lost after the server stored it.
      const lease = await control.get(names.leaseKey('counter', 0));
      assert.ok(lease, 'the engine holds the lease');
      await control.put(names.leaseKey('counter', 0), lease.value);
      await sleep(2_000);
      assert.deepEqual(
        logger.lines.filter((l) => /lease (lost|expired)/.test(l)),
        [],
        'the engine kept its lease',
      );
      assert.deepEqual(engine.status().owned, [{ workflow: 'counter', partition: 0 }]);
      await client.send(counter, 'c1', { type: 'ADD', k: 1 });
      await client.waitFor(counter, 'c1', (i) => i.context.n === 1, { timeoutMs: 5_000 });
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
