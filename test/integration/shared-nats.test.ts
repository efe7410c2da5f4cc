// Services that share one NATS and one namespace: each engine applies only the workflows (and
// versions, and extensions) it has; every instance is served while one engine that can serve it
// runs, whatever else is connected; and a workflow no live engine serves is visible.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow, type Engine, type EngineExtension } from '../../engine/index.js';
import { order } from '../../workflows/order.js';
import { approval } from '../../workflows/approval.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';

const orderInput = (id: string) => ({ orderId: id, customer: 'ada', amount: 10 });
const approvalInput = { requester: 'ada', resource: 'db' };

/** An extension that does nothing but be there; the activity below needs it. */
const marker = (): EngineExtension => ({ name: 'marker', start: async () => {}, stop: async () => {} });
const stamped = defineWorkflow({
  name: 'stamped',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({
    actors: {
      stamp: activity(async ({ extension }) => (extension<EngineExtension>('marker'), { ok: true }), { requires: ['marker'], retry: { maxAttempts: 1 } }),
    },
  }).createMachine({
    initial: 'stamping',
    states: { stamping: { invoke: { src: 'stamp', onDone: 'done', onError: 'failed' } }, done: { type: 'final' }, failed: { type: 'final' } },
  }),
});

describe('services sharing one NATS', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  const engines: Engine[] = [];
  before(async () => (nats = await startNats()));
  after(async () => {
    for (const e of engines) await e.close().catch(() => {});
    await nats?.dispose();
  });
  const engine = async (options: Parameters<typeof createEngine>[0]): Promise<Engine> => {
    const e = await createEngine(options);
    engines.push(e);
    return e;
  };

  it('two services with different workflows in one namespace each serve their own, and only their own', async () => {
    const namespace = uniqueNamespace('shared');
    const logger = memoryLogger();
    const shop = await engine({ servers: nats.url, namespace, workflows: [order], leaseTtlMs: 600, logger });
    const access = await engine({ servers: nats.url, namespace, workflows: [approval], leaseTtlMs: 600, logger });
    const client = await createClient({ servers: nats.url, namespace, workflows: [order, approval] });
    try {
      for (let i = 0; i < 8; i++) {
        await client.start(order, { id: `o-${i}`, input: orderInput(`o-${i}`) });
        await client.start(approval, { id: `a-${i}`, input: approvalInput });
        await client.send(order, `o-${i}`, { type: 'PAY', amount: 10 });
        await client.send(approval, `a-${i}`, { type: 'REJECT', by: 'grace' });
      }
      for (let i = 0; i < 8; i++) {
        await client.waitFor(order, `o-${i}`, (s) => s.matches('paid'), { timeoutMs: 10_000 });
        await client.waitFor(approval, `a-${i}`, (s) => s.matches('rejected'), { timeoutMs: 10_000 });
      }
      assert.ok(
        shop.status().owned.every((o) => o.workflow === 'order'),
        'the shop owns only order partitions',
      );
      assert.ok(
        access.status().owned.every((o) => o.workflow === 'approval'),
        'the access service owns only approval partitions',
      );
      assert.equal(shop.status().owned.length, shop.partitions);
      assert.equal(access.status().owned.length, access.partitions);
      assert.deepEqual([...shop.status().blocked, ...access.status().blocked], []);
      assert.deepEqual(
        logger.lines.filter((l) => /not registered/.test(l)),
        [],
      );
    } finally {
      await client.close();
    }
  });

  it('an engine with more versions of a workflow takes it over from one with fewer (a rolling upgrade)', async () => {
    const namespace = uniqueNamespace('versions');
    const orderV2 = defineWorkflow({ ...order, version: 2 });
    const old = await engine({ servers: nats.url, namespace, workflows: [order], leaseTtlMs: 600 });
    await old.start(order, { id: 'v1', input: orderInput('v1') });
    const upgraded = await engine({ servers: nats.url, namespace, workflows: [order, orderV2], leaseTtlMs: 600 });
    await eventually(() => assert.equal(old.status().owned.length, 0, 'the old engine handed its order partitions over'), 10_000);
    await upgraded.start(orderV2, { id: 'v2', input: orderInput('v2') });
    await upgraded.send(order, 'v1', { type: 'PAY', amount: 10 });
    await upgraded.send(orderV2, 'v2', { type: 'PAY', amount: 10 });
    assert.equal((await upgraded.waitFor(order, 'v1', (s) => s.matches('paid'), { timeoutMs: 10_000 })).version, 1);
    assert.equal((await upgraded.waitFor(orderV2, 'v2', (s) => s.matches('paid'), { timeoutMs: 10_000 })).version, 2);
    assert.deepEqual(upgraded.status().blocked, []);
  });

  it('a task that needs an extension waits for an engine that runs it rather than failing on one that does not', async () => {
    const namespace = uniqueNamespace('extensions');
    const bare = await engine({ servers: nats.url, namespace, workflows: [stamped], leaseTtlMs: 600 });
    const equipped = await engine({ servers: nats.url, namespace, workflows: [stamped], leaseTtlMs: 600, extensions: [marker()] });
    await eventually(() => assert.equal(equipped.status().owned.length, equipped.partitions, 'the engine with the extension serves the workflow'), 10_000);
    for (let i = 0; i < 6; i++) await bare.start(stamped, { id: `s-${i}`, input: {} });
    for (let i = 0; i < 6; i++) assert.deepEqual((await bare.waitFor(stamped, `s-${i}`, (s) => s.status === 'done', { timeoutMs: 15_000 })).value, 'done');
  });

  it('a start of a workflow no live engine serves is accepted, said so, shown pending, and applied once one runs', async () => {
    const namespace = uniqueNamespace('unserved');
    const logger = memoryLogger();
    // An engine of another service created the namespace; nobody serves 'order' yet.
    await engine({ servers: nats.url, namespace, workflows: [approval], leaseTtlMs: 600 });
    const client = await createClient({ servers: nats.url, namespace, workflows: [order], logger });
    try {
      const started = await client.start(order, { id: 'later', input: orderInput('later') });
      assert.equal(started.status, 'pending');
      assert.ok(
        logger.lines.some((l) => /no live engine serves it/.test(l)),
        logger.lines.join('\n'),
      );
      const seen = await client.get(order, 'later');
      assert.equal(seen?.status, 'pending', 'get() shows the accepted start');
      assert.match(seen?.parked ?? '', /no live engine serves workflow 'order'/);
      await client.send(order, 'later', { type: 'PAY', amount: 10 });
      await engine({ servers: nats.url, namespace, workflows: [order], leaseTtlMs: 600 });
      const paid = await client.waitFor(order, 'later', (s) => s.matches('paid'), { timeoutMs: 10_000 });
      assert.equal(paid.revision, 2);
    } finally {
      await client.close();
    }
  });
});
