// Instance control: cancel (the machine decides when it handles `jetstate.cancel`, else the
// instance stops), terminate (stops now: timers and tasks dropped), delete (a finished instance's
// record and history go; the id can start again); each checked against the workflow's
// permissions. And an event no state takes is recorded as changing nothing.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow, ErrorCode, JetstateError, type Engine } from '../../engine/index.js';
import { order } from '../../workflows/order.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';

let slowRuns = 0;
/** Cancel handled by the machine: it refunds before it stops. Also a long task to terminate under. */
const booking = defineWorkflow({
  name: 'booking',
  version: 1,
  input: z.object({}),
  events: { CONFIRM: z.object({}) },
  machine: setup({
    types: { context: {} as { refunded: boolean; reason?: string } },
    actors: {
      slow: activity(async ({ signal }) => {
        slowRuns++;
        await new Promise((r, ko) => {
          const t = setTimeout(r, 60_000);
          signal.addEventListener('abort', () => (clearTimeout(t), ko(signal.reason)), { once: true });
        });
      }),
    },
  }).createMachine({
    initial: 'held',
    context: { refunded: false },
    states: {
      held: {
        after: { 600_000: 'expired' },
        on: {
          CONFIRM: 'working',
          'jetstate.cancel': { target: 'refunding', actions: assign({ reason: ({ event }) => (event as { reason?: string }).reason }) },
        },
      },
      working: { invoke: { src: 'slow', onDone: 'done' } },
      refunding: { entry: assign({ refunded: true }), always: 'cancelled' },
      cancelled: { type: 'final' },
      expired: { type: 'final' },
      done: { type: 'final' },
    },
  }),
});

const guarded = defineWorkflow({
  name: 'guarded',
  version: 1,
  input: z.object({}),
  events: { PING: z.object({}) },
  permissions: { terminate: { anyOf: ['admin'] } },
  machine: setup({}).createMachine({ initial: 'a', states: { a: { on: { PING: 'a' } } } }),
});

describe('instance control', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  const namespace = uniqueNamespace('control');
  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [booking, order, guarded], leaseTtlMs: 1_000 });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('cancel: a machine that handles it decides; one that does not stops', async () => {
    await engine.start(booking, { id: 'b-1', input: {} });
    await engine.cancel(booking, 'b-1', { reason: 'changed plans' });
    const b = await engine.waitFor(booking, 'b-1', (s) => s.status !== 'running', { timeoutMs: 5_000 });
    assert.equal(b.value, 'cancelled');
    assert.equal(b.status, 'done');
    assert.deepEqual(b.context, { refunded: true, reason: 'changed plans' });

    await engine.start(order, { id: 'o-1', input: { orderId: 'o-1', customer: 'ada', amount: 5 } });
    await engine.cancel(order, 'o-1', { reason: 'duplicate order' });
    const o = await engine.waitFor(order, 'o-1', (s) => s.status !== 'running', { timeoutMs: 5_000 });
    assert.equal(o.status, 'stopped');
    assert.equal(o.error, 'cancelled: duplicate order');
    assert.deepEqual(o.timers, [], 'its timers are dropped');
    assert.equal((await engine.verify(order, 'o-1')).ok, true);
  });

  it('terminate: stops at once, aborts the running task, drops the timer', async () => {
    await engine.start(booking, { id: 'b-2', input: {} });
    await engine.send(booking, 'b-2', { type: 'CONFIRM' });
    await engine.waitFor(booking, 'b-2', (s) => s.matches('working'), { timeoutMs: 5_000 });
    await eventually(() => assert.ok(slowRuns >= 1, 'the task runs'));
    await engine.terminate(booking, 'b-2', { reason: 'ops' });
    const b = await engine.waitFor(booking, 'b-2', (s) => s.status === 'stopped', { timeoutMs: 5_000 });
    assert.equal(b.error, 'terminated: ops');
    assert.deepEqual(b.tasks, []);
    const h = await engine.history(booking, 'b-2');
    assert.equal(h.at(-1)!.reason, 'terminated: ops');
  });

  it('terminate is checked against permissions.terminate; delete refuses a running instance and removes a finished one', async () => {
    await engine.start(guarded, { id: 'g-1', input: {} });
    await assert.rejects(engine.terminate(guarded, 'g-1'), (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.Unauthenticated);
    // Raw deletes go through the engine: a running instance is refused, and says why.
    await engine.delete(guarded, 'g-1');
    await eventually(async () => assert.match((await engine.history(guarded, 'g-1')).at(-1)?.reason ?? '', /^\[instance\.running\]/));
    assert.equal((await engine.get(guarded, 'g-1'))?.status, 'running');

    await engine.start(order, { id: 'o-del', input: { orderId: 'o-del', customer: 'ada', amount: 5 } });
    await engine.terminate(order, 'o-del');
    await engine.waitFor(order, 'o-del', (s) => s.status === 'stopped', { timeoutMs: 5_000 });
    await engine.delete(order, 'o-del');
    await eventually(async () => assert.equal(await engine.get(order, 'o-del'), null));
    assert.deepEqual(await engine.history(order, 'o-del'), []);
    // Deleted, it is missing to this client too (which sent to it before): nothing is sent.
    await assert.rejects(
      engine.send(order, 'o-del', { type: 'CANCEL', reason: 'late' }),
      (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.InstanceNotFound,
    );
    // The id is free again.
    const again = await engine.start(order, { id: 'o-del', input: { orderId: 'o-del', customer: 'bob', amount: 7 } });
    assert.equal(again.revision, 1);
  });

  it('the history of an id started again begins at its start, without what was refused for the deleted one', async () => {
    const other = await createClient({ servers: nats.url, namespace, workflows: [order] });
    try {
      await engine.start(order, { id: 'o-again', input: { orderId: 'o-again', customer: 'ada', amount: 10 } });
      await other.terminate(order, 'o-again'); // `other` now knows the instance
      await engine.waitFor(order, 'o-again', (i) => i.status === 'stopped', { timeoutMs: 5_000 });
      // Two operators delete it at about the same time: the second delete finds no instance.
      await Promise.all([engine.delete(order, 'o-again'), other.delete(order, 'o-again')]);
      await eventually(async () => assert.equal(await engine.get(order, 'o-again'), null));
      await eventually(async () => assert.equal((await engine.history(order, 'o-again')).length, 1, 'the refused delete is shown for the id'));
      await engine.start(order, { id: 'o-again', input: { orderId: 'o-again', customer: 'bob', amount: 20 } });
      const h = await engine.history(order, 'o-again');
      assert.deepEqual(
        h.map((e) => [e.kind, e.revision]),
        [['start', 1]],
        JSON.stringify(h),
      );
      assert.equal((await engine.verify(order, 'o-again')).ok, true);
    } finally {
      await other.close();
    }
  });

  it('an event no state takes is applied as changing nothing, and the history says so', async () => {
    await engine.start(order, { id: 'o-2', input: { orderId: 'o-2', customer: 'ada', amount: 5 } });
    await engine.send(order, 'o-2', { type: 'DELIVERED' });
    const o = await engine.waitFor(order, 'o-2', (s) => s.revision === 2, { timeoutMs: 5_000 });
    assert.equal(o.value, 'awaitingPayment');
    const last = (await engine.history(order, 'o-2')).at(-1)!;
    assert.equal(last.unchanged, true);
    assert.match(last.reason ?? '', /changed nothing/);
  });
});
