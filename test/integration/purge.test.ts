// Applied events leave their partition's events stream once their idempotency keys are out of
// the duplicate window; each partition's owner trims its own stream.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { createEngine, partitionOf } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { order } from '../../workflows/order.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';

describe('trimming the events stream', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  before(async () => (nats = await startNats()));
  after(async () => nats?.dispose());

  it('purges applied events after the duplicate window, idle partitions included', async () => {
    const namespace = uniqueNamespace('purge');
    const engine = await createEngine({ servers: nats.url, namespace, workflows: [order], partitions: 8, leaseTtlMs: 600, duplicateWindowMs: 1_000 });
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      // Two instances: most of the 8 partitions never see an event.
      for (const id of ['a', 'b']) {
        await engine.start(order, { id, input: { orderId: id, customer: 'c', amount: 2 } });
        await engine.send(order, id, { type: 'PAY', amount: 1 });
        await engine.send(order, id, { type: 'PAY', amount: 1 });
      }
      for (const id of ['a', 'b']) await engine.waitFor(order, id, (s) => s.matches('paid'), { timeoutMs: 5_000 });
      // Each instance's partition stream holds its start and two payments.
      const streams = [...new Set(['a', 'b'].map((id) => layout(namespace).eventStream('order', partitionOf('order', id, 8))))];
      await eventually(
        async () => {
          for (const stream of streams) {
            const info = await jsm.streams.info(stream);
            assert.equal(info.state.messages, 0, `applied events still stored in ${stream}`);
            assert.equal(info.state.first_seq, info.state.last_seq + 1);
            assert.ok(info.state.last_seq === 3 || info.state.last_seq === 6);
          }
        },
        20_000,
        200,
      );
      // A new event after the purge is still applied once.
      await engine.send(order, 'a', { type: 'SHIP', carrier: 'x', trackingId: 'y' });
      const shipped = await engine.waitFor(order, 'a', (s) => s.matches('shipped'), { timeoutMs: 5_000 });
      assert.equal(shipped.revision, 4);
    } finally {
      await engine.close();
      await nc.close();
    }
  });
});
