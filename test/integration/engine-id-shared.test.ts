// Two services (different workflows) that give their engines the same engineId (the host name,
// say). Each heartbeat overwrote the other's `member.<engineId>`, and each read the other's
// workflows as its own: it handed its partitions over to nobody ("another live engine serves
// more..."), and its workflow went unserved for a while, again and again, with no word of the
// cause. Now each reads its own part, and both say that another process uses their id.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Kvm } from '@nats-io/kv';
import { createEngine } from '../../engine/index.js';
import { counter } from '../counter-workflow.js';
import { toggle } from '../toggle-workflow.js';
import { eventually, labelledLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('two engines with one engineId', () => {
  const suite = natsForSuite();

  it('each keeps serving its own workflow, and says the id is used twice', async () => {
    const namespace = uniqueNamespace('sameid');
    const lines: string[] = [];
    const base = { servers: suite.nats.url, namespace, partitions: 4, leaseTtlMs: 900, engineId: 'host1' };
    const one = await createEngine({ ...base, workflows: [counter], logger: labelledLogger('one', lines) });
    const two = await createEngine({ ...base, workflows: [toggle], logger: labelledLogger('two', lines) });
    try {
      await eventually(() => assert.deepEqual([one.status().owned.length, two.status().owned.length], [4, 4]), 10_000);
      const samples: string[] = [];
      for (let i = 0; i < 16; i++) {
        await new Promise((r) => setTimeout(r, 250));
        samples.push(`${one.status().owned.length}/${two.status().owned.length}`);
      }
      assert.ok(
        samples.every((x) => x === '4/4'),
        `partitions owned every 250 ms: ${samples.join(' ')}`,
      );
      assert.ok(
        lines.some((l) => l.startsWith('one error:') && l.includes("'host1'")) && lines.some((l) => l.startsWith('two error:') && l.includes("'host1'")),
        `both say the id is used twice: ${lines.join('\n')}`,
      );
    } finally {
      await two.close();
      await one.close();
    }
  });

  it('a process restarted with its stable engineId (after a crash) is not taken for another', async () => {
    const namespace = uniqueNamespace('stableid');
    const lines: string[] = [];
    const base = { servers: suite.nats.url, namespace, partitions: 4, leaseTtlMs: 900, engineId: 'host1', workflows: [counter] };
    const first = await createEngine({ ...base, logger: labelledLogger('first', lines) });
    await first.close();
    // The last heartbeat the crashed process left (a closing engine deletes its own).
    const control = await new Kvm(suite.nc).open(`${namespace}_control`);
    await control.put(
      'member.host1',
      JSON.stringify({ atMs: Date.now() - 300, ttlMs: 900, workflows: { counter: [1] }, extensions: [], run: 'crashed-process' }),
    );
    const after = await createEngine({ ...base, logger: labelledLogger('after', lines) });
    try {
      await eventually(() => assert.equal(after.status().owned.length, 4), 10_000);
      await new Promise((r) => setTimeout(r, 1_000));
      assert.deepEqual(
        lines.filter((l) => l.includes('another engine process')),
        [],
      );
    } finally {
      await after.close();
    }
  });
});
