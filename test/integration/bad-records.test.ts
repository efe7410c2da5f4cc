// Guarantee 6: a record that cannot be decoded, or whose workflow version is not registered, is
// reported and left untouched; the engine keeps serving every other instance, and the waiting
// events are applied once the version is registered.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { order } from '../../workflows/order.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';

const orderV2 = defineWorkflow({ ...order, version: 2 });
const input = (id: string) => ({ orderId: id, customer: 'ada', amount: 10 });

describe('undecodable records and unregistered versions', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  before(async () => (nats = await startNats()));
  after(async () => nats?.dispose());

  it('reports them, leaves them untouched, serves the rest, and applies the waiting events later', async () => {
    const namespace = uniqueNamespace('bad');
    const logger = memoryLogger();
    const engine = await createEngine({ servers: nats.url, namespace, workflows: [order], logger, leaseTtlMs: 1_000 });
    const client = await createClient({ servers: nats.url, namespace, workflows: [order, orderV2] });
    const nc = await connect({ servers: nats.url });
    try {
      await engine.start(order, { id: 'good', input: input('good') });
      await engine.start(order, { id: 'broken', input: input('broken') });
      // No engine serves version 2 yet: the start is accepted and waits in the stream.
      await client.start(orderV2, { id: 'newer', input: input('newer'), wait: false });
      const kv = await new Kvm(nc).open(engine.recordBucketOf('order', 'broken'));
      const garbage = new TextEncoder().encode('{"schemaVersion":1,"oops":');
      await kv.put('order.broken', garbage);

      await client.send(order, 'broken', { type: 'PAY', amount: 10 });
      await client.send(orderV2, 'newer', { type: 'PAY', amount: 10 });
      await client.send(order, 'good', { type: 'PAY', amount: 10 });
      await client.send(orderV2, 'newer', { type: 'SHIP', carrier: 'x', trackingId: 'y' });

      const good = await engine.waitFor(order, 'good', (s) => s.matches('paid'), { timeoutMs: 5_000 });
      assert.equal(good.revision, 2);
      await eventually(() => assert.equal(engine.status().blocked.length, 2));
      const reasons = engine
        .status()
        .blocked.map((b) => b.reason)
        .join('\n');
      assert.match(reasons, /order\.broken.*not UTF-8 JSON.*left untouched/s);
      assert.match(reasons, /its start asks for version 2, which is not registered in this engine/);
      assert.ok(logger.lines.some((l) => /asks for version 2, which is not registered/.test(l)));
      assert.deepEqual((await kv.get('order.broken'))!.value, garbage);
      assert.equal((await client.get(orderV2, 'newer'))?.status, 'pending', 'not created while no engine has version 2');
      assert.match((await client.get(orderV2, 'newer'))?.parked ?? '', /asks for version 2/, 'get() says why it waits');

      // Register version 2: the events that waited are applied, in order, once.
      await engine.close();
      const engine2 = await createEngine({ servers: nats.url, namespace, workflows: [order, orderV2], logger, leaseTtlMs: 1_000 });
      try {
        const newer = await engine2.waitFor(orderV2, 'newer', (s) => s.matches('shipped'), { timeoutMs: 5_000 });
        assert.equal(newer.revision, 3);
        assert.equal((await engine2.get(order, 'good'))!.revision, 2);
        assert.equal((await engine2.verify(orderV2, 'newer')).ok, true);
      } finally {
        await engine2.close();
      }
    } finally {
      await engine.close();
      await client.close();
      await nc.close();
    }
  });
});
