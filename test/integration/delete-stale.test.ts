// A delete judged on a cached record that another writer has changed since (a partition that came
// back to this engine after another owned it for a while, or a write whose answer was lost) reads
// the record again and deletes it. Before, its compare-and-set failed against the stale revision
// on every retry, the instance's later events waited behind it, and its history was purged again
// each time.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KV } from '@nats-io/kv';
import { createEngine } from '../../engine/index.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';
import { oneShot } from '../oneshot-workflow.js';

describe('a delete on a stale cached record', () => {
  const suite = natsForSuite();

  it('reads the record again and deletes it', async () => {
    const namespace = uniqueNamespace('delstale');
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [oneShot], logger: memoryLogger() });
    try {
      const done = await engine.start(oneShot, { id: 'd1', input: {} });
      assert.equal(done.status, 'done');
      // Another writer (an earlier owner of the partition) wrote the record since this engine cached it.
      const kv = (engine as unknown as { rt: { records: { ofKey(key: string): KV } } }).rt.records.ofKey('oneshot.d1');
      const entry = await kv.get('oneshot.d1');
      await kv.put('oneshot.d1', entry!.value);

      await engine.delete(oneShot, 'd1');
      await eventually(async () => assert.equal(await engine.get(oneShot, 'd1'), null, 'the record is deleted'), 10_000);
      assert.deepEqual(await engine.deadLetters(), [], 'the delete is not dead-lettered');
    } finally {
      await engine.close();
    }
  });
});
