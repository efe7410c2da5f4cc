// A start is applied without reading the record first when the engine has not cached the
// instance (it is almost always new). A start of an instance that exists, reaching an engine that
// has never seen it, must still answer as before: the same input gives the existing instance,
// another input a conflict, and the record is left as it was.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ErrorCode, JetstateError, createClient, createEngine, type Client } from '../../engine/index.js';
import { counter } from '../recovery/counter-workflow.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';

describe('a start reaching an engine that has not cached its instance', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let client: Client;
  const namespace = uniqueNamespace('startuncached');

  before(async () => {
    nats = await startNats();
    client = await createClient({ servers: nats.url, namespace, workflows: [counter] });
  });
  after(async () => {
    await client?.close();
    await nats?.dispose();
  });

  it('finds the existing instance, refuses another input, and leaves the record alone', async () => {
    const first = await createEngine({ servers: nats.url, namespace, workflows: [counter] });
    try {
      const created = await client.start(counter, { id: 'x', input: { label: 'a' } });
      assert.equal(created.revision, 1);
      await client.send(counter, 'x', { type: 'ADD', k: 1 });
      await client.waitFor(counter, 'x', (s) => s.context.n === 1);
    } finally {
      await first.close();
    }
    // A new engine: nothing cached.
    const second = await createEngine({ servers: nats.url, namespace, workflows: [counter] });
    try {
      const again = await client.start(counter, { id: 'x', input: { label: 'a' } });
      assert.equal(again.revision, 2, 'the existing instance, not a new one');
      assert.deepEqual(again.context, { label: 'a', n: 1, log: [1] });
      await assert.rejects(
        client.start(counter, { id: 'x', input: { label: 'b' } }),
        (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.InstanceConflict && /different input/.test(e.message),
      );
      await client.send(counter, 'x', { type: 'ADD', k: 2 });
      const now = await eventually(async () => {
        const r = await client.get(counter, 'x');
        assert.equal(r?.context.n, 3);
        return r!;
      });
      assert.deepEqual(now.context.log, [1, 2]);
      assert.equal(now.revision, 3, 'the two starts wrote nothing');
      const kinds = (await client.history(counter, 'x')).map((h) => h.kind);
      assert.equal(kinds.filter((k) => k === 'rejected').length, 1, `one rejected start (another input), in ${JSON.stringify(kinds)}`);
    } finally {
      await second.close();
    }
  });
});
