// Several engines share the partitions: each owns a fair share, a closing engine hands its
// partitions over at once, and no event is lost or applied twice on the way.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createClient, createEngine } from '../../engine/index.js';
import { order } from '../../workflows/order.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';

describe('partition ownership across engines', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  before(async () => (nats = await startNats()));
  after(async () => nats?.dispose());

  it('balances, hands over on close, and applies every event once', async () => {
    const namespace = uniqueNamespace('parts');
    const opts = { servers: nats.url, namespace, workflows: [order], leaseTtlMs: 600, partitions: 8 };
    const a = await createEngine(opts);
    const b = await createEngine(opts);
    const client = await createClient({ servers: nats.url, namespace });
    try {
      await eventually(() => {
        assert.equal(a.status().owned.length, 4);
        assert.equal(b.status().owned.length, 4);
      });
      const ids = Array.from({ length: 40 }, (_, i) => `p-${i}`);
      for (const id of ids) await client.start(order, { id, input: { orderId: id, customer: 'c', amount: 3 } });
      const sending = (async () => {
        for (let round = 0; round < 3; round++) for (const id of ids) await client.send(order, id, { type: 'PAY', amount: 1 });
      })();
      await new Promise((r) => setTimeout(r, 20));
      await a.close();
      await eventually(() => assert.equal(b.status().owned.length, 8));
      await sending;
      for (const id of ids) {
        const inst = await client.waitFor(order, id, (s) => s.matches('paid'), { timeoutMs: 10_000 });
        assert.equal(inst.revision, 4, id);
        assert.equal((inst.context as { payments: number }).payments, 3, id);
      }
      const h = await client.history(order, 'p-7');
      assert.deepEqual(
        h.map((e) => e.revision),
        [1, 2, 3, 4],
      );
    } finally {
      await a.close();
      await b.close();
      await client.close();
    }
  });
});
