// Child workflows: invoking a workflow starts a child instance with its own record and history;
// its output reaches the parent once, also when the engine failed right after the child finished;
// exiting the invoking state stops the child.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sendParent, sendTo, setup } from 'xstate';
import { z } from 'zod';
import { childWorkflow, createEngine, defineWorkflow, type Engine } from '../../engine/index.js';
import { checkout, payment } from '../fixtures/child-workflows.js';
import { startNats, uniqueNamespace } from '../helpers.js';

/** A child that asks its parent for approval with sendParent; the parent answers with sendTo. */
const quote = defineWorkflow({
  name: 'quote',
  version: 1,
  input: z.object({}),
  events: { APPROVED: z.object({}) },
  machine: setup({}).createMachine({
    initial: 'asking',
    entry: sendParent({ type: 'NEED_APPROVAL' }),
    states: { asking: { on: { APPROVED: 'approved' } }, approved: { type: 'final' } },
    output: () => ({ quoted: 42 }),
  }),
});

const broker = defineWorkflow({
  name: 'broker',
  version: 1,
  input: z.object({}),
  events: { NEED_APPROVAL: z.object({}) },
  machine: setup({ actors: { quote: childWorkflow(quote) } }).createMachine({
    initial: 'quoting',
    states: {
      quoting: {
        invoke: { id: 'q', src: 'quote', onDone: 'done' },
        on: { NEED_APPROVAL: { actions: sendTo('q', { type: 'APPROVED' }) } },
      },
      done: { type: 'final' },
    },
  }),
});

/** Pays again and again: each RETRY invokes the payment child anew under the same invoke id. */
const retrier = defineWorkflow({
  name: 'retrier',
  version: 1,
  input: z.object({}),
  events: { RETRY: z.object({}) },
  machine: setup({ actors: { payment: childWorkflow(payment) } }).createMachine({
    initial: 'paying',
    states: {
      paying: { invoke: { id: 'pay', src: 'payment', input: () => ({ amount: 1 }), onDone: 'paid' } },
      paid: { on: { RETRY: 'paying' } },
    },
  }),
});

describe('child workflows', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let failAfterWriteOf: string | undefined;
  before(async () => {
    nats = await startNats();
    engine = await createEngine({
      servers: nats.url,
      namespace: uniqueNamespace('children'),
      workflows: [checkout, broker, retrier],
      testHooks: {
        afterStateWrite: (key) => {
          if (key === failAfterWriteOf) {
            failAfterWriteOf = undefined;
            throw new Error('simulated crash after the child finished');
          }
        },
      },
    });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('starts a child instance and returns its output to the parent', async () => {
    await engine.start(checkout, { id: 'c1', input: { amount: 30 } });
    const child = await engine.waitFor(payment, 'c1_pay', (s) => s.matches('pending'), { timeoutMs: 5_000 });
    assert.deepEqual(child.context, { amount: 30 });
    await engine.send(payment, 'c1_pay', { type: 'CONFIRM', receipt: 'r-1' });
    const paid = await engine.waitFor(checkout, 'c1', (s) => s.matches('paid'), { timeoutMs: 5_000 });
    assert.deepEqual((paid.context as { receipt: unknown }).receipt, { receipt: 'r-1', amount: 30 });
    assert.equal(paid.revision, 2);
    assert.equal((await engine.history(payment, 'c1_pay')).length, 2);
    // The parent's history names the child's outcome as the machine saw it.
    const outcome = (await engine.history(checkout, 'c1')).find((h) => (h.event as { type?: string }).type === 'jetstate.child');
    assert.equal(outcome?.actorEvent, 'xstate.done.actor.pay');
    assert.equal((await engine.verify(checkout, 'c1')).ok, true);
  });

  it('the output reaches the parent when the engine failed right after the child finished', async () => {
    await engine.start(checkout, { id: 'c2', input: { amount: 5 } });
    await engine.waitFor(payment, 'c2_pay', (s) => s.matches('pending'), { timeoutMs: 5_000 });
    failAfterWriteOf = 'payment.c2_pay';
    await engine.send(payment, 'c2_pay', { type: 'CONFIRM', receipt: 'r-2' });
    const paid = await engine.waitFor(checkout, 'c2', (s) => s.matches('paid'), { timeoutMs: 5_000 });
    assert.equal(paid.revision, 2);
  });

  it('exiting the invoking state stops the child', async () => {
    await engine.start(checkout, { id: 'c3', input: { amount: 5 } });
    await engine.waitFor(payment, 'c3_pay', (s) => s.matches('pending'), { timeoutMs: 5_000 });
    await engine.send(checkout, 'c3', { type: 'CANCEL' });
    const stopped = await engine.waitFor(payment, 'c3_pay', (s) => s.status === 'stopped', { timeoutMs: 5_000 });
    assert.equal(stopped.value, 'pending');
    await engine.send(payment, 'c3_pay', { type: 'CONFIRM', receipt: 'late' });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await engine.get(checkout, 'c3'))!.value, 'cancelled');
  });

  it('a child invoked again under the same invoke id is a new instance with an id of its own', async () => {
    await engine.start(retrier, { id: 'r1', input: {} });
    const first = await engine.waitFor(retrier, 'r1', (s) => s.children.length === 1, { timeoutMs: 5_000 });
    assert.deepEqual(first.children, [{ id: 'pay', workflow: 'payment', instanceId: 'r1_pay' }]);
    await engine.send(payment, 'r1_pay', { type: 'CONFIRM', receipt: 'one' });
    await engine.waitFor(retrier, 'r1', (s) => s.matches('paid'), { timeoutMs: 5_000 });
    await engine.send(retrier, 'r1', { type: 'RETRY' });
    const again = await engine.waitFor(retrier, 'r1', (s) => s.matches('paying'), { timeoutMs: 5_000 });
    // The parent's revision that started it (RETRY, after the start and the first outcome) is in its id.
    assert.deepEqual(again.children, [{ id: 'pay', workflow: 'payment', instanceId: 'r1_pay-3' }]);
    await engine.waitFor(payment, 'r1_pay-3', (s) => s.matches('pending'), { timeoutMs: 5_000 });
    await engine.send(payment, 'r1_pay-3', { type: 'CONFIRM', receipt: 'two' });
    const paid = await engine.waitFor(retrier, 'r1', (s) => s.matches('paid') && s.revision === 4, { timeoutMs: 5_000 });
    assert.deepEqual(paid.children, []);
    assert.equal((await engine.get(payment, 'r1_pay'))!.status, 'done', 'the first child keeps its record');
    assert.equal((await engine.verify(retrier, 'r1')).ok, true);
  });

  it("sendParent and sendTo a child go through the other instance's inbox", async () => {
    await engine.start(broker, { id: 'b1', input: {} });
    const done = await engine.waitFor(broker, 'b1', (s) => s.status === 'done', { timeoutMs: 5_000 });
    assert.equal(done.revision, 3, 'NEED_APPROVAL, then the child outcome');
    const child = await engine.get(quote, 'b1_q');
    assert.equal(child!.value, 'approved');
    assert.equal((await engine.verify(quote, 'b1_q')).ok, true);
    assert.equal((await engine.verify(broker, 'b1')).ok, true);
  });
});
