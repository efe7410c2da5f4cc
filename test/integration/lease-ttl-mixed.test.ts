// Engines of one workflow with different leaseTtlMs (a rolling change of the setting, or two
// services serving one child workflow): each judged the other's heartbeat and leases by its own
// TTL, so the one with the shorter TTL took the live engine's partitions over as silent between its
// renewals, again and again, and both read the same partitions until the next renewal failed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createEngine } from '../../engine/index.js';
import { counter } from '../counter-workflow.js';
import { eventually, labelledLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('engines with different lease TTLs', () => {
  const suite = natsForSuite();

  it('take no partition of a live engine: each is judged by the TTL it declares', async () => {
    const namespace = uniqueNamespace('ttlmix');
    const lines: string[] = [];
    const base = { servers: suite.nats.url, namespace, workflows: [counter], partitions: 4 };
    // Renews every 2 s; the other would call it silent after 0.6 s.
    const long = await createEngine({ ...base, leaseTtlMs: 6_000, logger: labelledLogger('long', lines) });
    const short = await createEngine({ ...base, leaseTtlMs: 600, logger: labelledLogger('short', lines) });
    try {
      // The two share the partitions (the long one hands two over).
      await eventually(() => assert.deepEqual([long.status().owned.length, short.status().owned.length], [2, 2]), 10_000);
      // Two of the long one's renewal intervals.
      await new Promise((r) => setTimeout(r, 4_500));
      const trouble = lines.filter((l) => /silent engine|lease (lost|expired)/.test(l));
      assert.deepEqual(trouble, [], 'no takeover of a live engine');
      assert.deepEqual([long.status().owned.length, short.status().owned.length], [2, 2]);
    } finally {
      await short.close();
      await long.close();
    }
  });
});
