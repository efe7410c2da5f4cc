// Durable timers: `after` delays fire when due, once, even when no engine ran at that moment;
// a timer whose state was exited or re-entered changes nothing.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { setup } from 'xstate';
import { z } from 'zod';
import { createClient, createEngine, defineWorkflow, type Engine } from '../../engine/index.js';
import { order } from '../../workflows/order.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';

const input = (id: string, paymentWindowMs: number) => ({ orderId: id, customer: 'ada', amount: 10, paymentWindowMs });

/** A state with a timeout that RESET re-enters: the timer of the first visit must not fire. */
const watchdog = defineWorkflow({
  name: 'watchdog',
  version: 1,
  input: z.object({}),
  events: { RESET: z.object({}) },
  machine: setup({}).createMachine({
    initial: 'armed',
    states: { armed: { after: { 400: 'tripped' }, on: { RESET: { target: 'armed', reenter: true } } }, tripped: { type: 'final' } },
  }),
});

/** A timer due at once: it can fire before start() has created the record. */
const instant = defineWorkflow({
  name: 'instant',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({}).createMachine({ initial: 'waiting', states: { waiting: { after: { 1: 'fired' } }, fired: { type: 'final' } } }),
});

describe('durable timers', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  const namespace = uniqueNamespace('timers');
  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [order, watchdog, instant], leaseTtlMs: 1_000 });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('fires an after delay computed from context, shows it while pending, and replays', async () => {
    const nc = await connect({ servers: nats.url });
    const completions = nc.subscribe(`${namespace}.done.order.t-1`, { max: 1 });
    const started = await engine.start(order, { id: 't-1', input: input('t-1', 300) });
    assert.equal(started.timers.length, 1);
    assert.equal(started.timers[0]!.id, 'xstate.after.paymentWindow.order.awaitingPayment');
    assert.equal(started.timers[0]!.dueAtMs, started.createdAtMs + 300);
    const expired = await engine.waitFor(order, 't-1', (s) => s.matches('expired'), { timeoutMs: 5_000 });
    assert.ok(Date.now() >= started.createdAtMs + 300);
    assert.equal(expired.revision, 2);
    assert.deepEqual(expired.timers, []);
    assert.deepEqual(expired.output, { orderId: 't-1', paid: 0, cancelled: false, expired: true });
    const history = await engine.history(order, 't-1');
    assert.deepEqual(
      history.map((h) => [h.kind, (h.event as { type: string }).type, h.to]),
      [
        ['start', 'jetstate.start', 'awaitingPayment'],
        ['event', 'jetstate.timer', 'expired'],
      ],
    );
    assert.equal((await engine.verify(order, 't-1')).ok, true);
    for await (const m of completions) assert.deepEqual(m.json(), { workflow: 'order', id: 't-1', status: 'done', revision: 2, output: expired.output });
    await nc.close();
  });

  it('a timer whose state was exited before it was due changes nothing', async () => {
    await engine.start(order, { id: 't-2', input: input('t-2', 300) });
    await engine.send(order, 't-2', { type: 'PAY', amount: 10 });
    const paid = await engine.waitFor(order, 't-2', (s) => s.matches('paid'), { timeoutMs: 5_000 });
    assert.deepEqual(paid.timers, []);
    await new Promise((r) => setTimeout(r, 700));
    const later = await engine.get(order, 't-2');
    assert.equal(later!.value, 'paid');
    assert.equal(later!.revision, 2);
  });

  it('a re-entered state gets a new timer; the old one does not fire', async () => {
    const t0 = Date.now();
    await engine.start(watchdog, { id: 'w-1', input: {} });
    await new Promise((r) => setTimeout(r, 250));
    await engine.send(watchdog, 'w-1', { type: 'RESET' });
    const tripped = await engine.waitFor(watchdog, 'w-1', (s) => s.status === 'done', { timeoutMs: 5_000 });
    assert.ok(Date.now() - t0 >= 250 + 400, `tripped after ${Date.now() - t0} ms, before the re-armed timer was due`);
    assert.equal(tripped.revision, 3);
    const history = await engine.history(watchdog, 'w-1');
    assert.equal(history.filter((h) => (h.event as { type: string }).type === 'jetstate.timer').length, 1);
  });

  it('a timer that came due while no engine ran fires once an engine starts', async () => {
    const ns = uniqueNamespace('nobody');
    const e1 = await createEngine({ servers: nats.url, namespace: ns, workflows: [order] });
    await e1.start(order, { id: 'late', input: input('late', 200) });
    await e1.close();
    const client = await createClient({ servers: nats.url, namespace: ns });
    try {
      await new Promise((r) => setTimeout(r, 600));
      assert.equal((await client.get(order, 'late'))!.value, 'awaitingPayment');
      const e2 = await createEngine({ servers: nats.url, namespace: ns, workflows: [order] });
      try {
        const expired = await e2.waitFor(order, 'late', (s) => s.matches('expired'), { timeoutMs: 5_000 });
        assert.equal(expired.revision, 2);
      } finally {
        await e2.close();
      }
    } finally {
      await client.close();
    }
  });

  it('1,000 instances with a timer each: every one fires exactly once', async () => {
    const ns = uniqueNamespace('many');
    const e2 = await createEngine({ servers: nats.url, namespace: ns, workflows: [order] });
    const nc = await connect({ servers: nats.url });
    try {
      const ids = Array.from({ length: 1_000 }, (_, i) => `m-${i}`);
      for (let i = 0; i < ids.length; i += 50) {
        await Promise.all(ids.slice(i, i + 50).map((id) => e2.start(order, { id, input: input(id, 500) })));
      }
      await eventually(
        async () => {
          let expired = 0;
          for await (const inst of e2.list(order, { state: 'expired' })) {
            assert.equal(inst.revision, 2, inst.id);
            expired++;
          }
          assert.equal(expired, 1_000);
        },
        30_000,
        500,
      );
      // Every due-time message was acknowledged, and nothing fired twice.
      const jsm = await jetstreamManager(nc);
      await eventually(async () => assert.equal((await jsm.streams.info(`${ns}_timers`)).state.messages, 0), 5_000);
      for await (const inst of e2.list(order)) assert.equal(inst.revision, 2);
    } finally {
      await e2.close();
      await nc.close();
    }
  });

  it('follows the engine clock: moving a controllable clock past a long delay fires it', async () => {
    const ns = uniqueNamespace('clock');
    let offsetMs = 0;
    const clock = { now: () => Date.now() + offsetMs };
    const e2 = await createEngine({ servers: nats.url, namespace: ns, workflows: [order], clock });
    try {
      const thirtyDays = 30 * 24 * 3_600_000;
      await e2.start(order, { id: 'slow', input: input('slow', thirtyDays) });
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await e2.get(order, 'slow'))!.value, 'awaitingPayment');
      offsetMs = thirtyDays + 1_000;
      const expired = await e2.waitFor(order, 'slow', (s) => s.matches('expired'), { timeoutMs: 5_000 });
      assert.equal(expired.revision, 2);
    } finally {
      await e2.close();
    }
  });
});
