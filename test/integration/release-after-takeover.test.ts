// An engine that stood still past its lease TTL (a long GC pause, a stopped VM) and then released
// its partition wrote its checkpoint key without looking whether the lease was still its own:
// another engine had taken the partition over meanwhile, and left a newer checkpoint there on its
// own release, which the late write set back (the next owner then read applied events again).
// Here the takeover and the newer checkpoint are written by hand, and the engine closes at once.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Kvm } from '@nats-io/kv';
import { createEngine } from '../../engine/index.js';
import { counter } from '../counter-workflow.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('a release after the lease was taken over', () => {
  const suite = natsForSuite();

  it("leaves the partition's checkpoint key to the engine that took it over", async () => {
    const namespace = uniqueNamespace('lateleave');
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [counter], partitions: 1, leaseTtlMs: 30_000, logger: memoryLogger() });
    const control = await new Kvm(suite.nc).open(`${namespace}_control`);
    try {
      await engine.start(counter, { id: 'c1', input: { label: 'x' } });
      const lease = (await control.get(`lease.${counter.name}.0`))!;
      assert.equal(lease.json<{ owner: string }>().owner, engine.engineId);
      // Another engine took the partition over (this one silent past its TTL), read on, and left its checkpoint.
      await control.update(`lease.${counter.name}.0`, JSON.stringify({ owner: 'other', checkpoint: 900, safe: 0, ttlMs: 30_000 }), lease.revision);
      await control.put(`checkpoint.${counter.name}.0`, JSON.stringify({ owner: 'other', checkpoint: 1_000, safe: 0 }));
    } finally {
      await engine.close();
    }
    assert.equal((await control.get(`checkpoint.${counter.name}.0`))!.json<{ checkpoint: number }>().checkpoint, 1_000);
  });
});
