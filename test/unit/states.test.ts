// The states of a machine as the client checks `matches()` arguments and reads tags.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createActor, setup } from 'xstate';
import { ErrorCode, JetstateError } from '../../engine/index.js';
import { checkStateTest, statePathsOf, tagsOf, unknownStateOf } from '../../engine/define/states.js';
import { order } from '../../workflows/order.js';

const ticket = setup({ types: { tags: {} as 'busy' | 'idle' | 'boxed' | 'root' } }).createMachine({
  tags: ['root'],
  initial: 'open',
  states: {
    open: { tags: ['idle'], on: { START: 'shipping' } },
    shipping: {
      tags: ['busy'],
      type: 'parallel',
      states: {
        box: { initial: 'packing', states: { packing: { on: { PACK: 'packed' } }, packed: { tags: ['boxed'] } } },
        label: { initial: 'none', states: { none: { on: { LABEL: 'printed' } }, printed: {} } },
      },
    },
  },
});

describe('machine states', () => {
  it('lists every state as a dotted path', () => {
    assert.deepEqual(statePathsOf(order.machine), ['awaitingPayment', 'paid', 'shipped', 'delivered', 'cancelled', 'expired']);
    assert.deepEqual(statePathsOf(ticket), [
      'open',
      'shipping',
      'shipping.box',
      'shipping.box.packing',
      'shipping.box.packed',
      'shipping.label',
      'shipping.label.none',
      'shipping.label.printed',
    ]);
  });

  it('finds the part of a matches() argument that names no state', () => {
    assert.equal(unknownStateOf(order.machine, 'paid'), undefined);
    assert.equal(unknownStateOf(order.machine, 'resovled'), 'resovled');
    assert.equal(unknownStateOf(ticket, { shipping: { box: 'packed' } }), undefined);
    assert.equal(unknownStateOf(ticket, { shipping: { box: 'packed', label: 'printed' } }), undefined);
    assert.equal(unknownStateOf(ticket, 'shipping.box.packed'), undefined);
    assert.equal(unknownStateOf(ticket, { shipping: 'box' }), undefined);
    assert.equal(unknownStateOf(ticket, { shipping: { box: 'pakced' } }), 'shipping.box.pakced');
    assert.equal(unknownStateOf(ticket, 'shipping.lable'), 'shipping.lable');
    assert.equal(unknownStateOf(ticket, 'packed'), 'packed');
    // Names of Object.prototype are not states.
    assert.equal(unknownStateOf(ticket, 'constructor'), 'constructor');
    assert.equal(unknownStateOf(ticket, { toString: 'x' }), 'toString');
    assert.match(unknownStateOf(ticket, 42) ?? '', /42/);
  });

  it('agrees with XState on the tags of a state value', () => {
    const actor = createActor(ticket).start();
    const values = [actor.getSnapshot()];
    actor.send({ type: 'START' });
    values.push(actor.getSnapshot());
    actor.send({ type: 'PACK' });
    values.push(actor.getSnapshot());
    actor.stop();
    for (const snapshot of values) {
      assert.deepEqual([...tagsOf(ticket, snapshot.value)].sort(), [...snapshot.tags].sort(), JSON.stringify(snapshot.value));
    }
    assert.deepEqual([...tagsOf(ticket, { shipping: { box: 'packed', label: 'none' } })].sort(), ['boxed', 'busy', 'root']);
  });

  it('refuses a test of a state no version has, naming the states', () => {
    checkStateTest('order', [order.machine], 'paid');
    assert.throws(
      () => checkStateTest('order', [order.machine], 'resovled'),
      (e: JetstateError) =>
        e instanceof JetstateError &&
        e.code === ErrorCode.InvalidOptions &&
        e.message === "state 'resovled' does not exist in workflow 'order'; its states are: awaitingPayment, paid, shipped, delivered, cancelled, expired",
    );
    // A state of any registered version is fine.
    checkStateTest('order', [order.machine, ticket], { shipping: 'box' });
    assert.throws(() => checkStateTest('order', [order.machine, ticket], 'gone'), /its states are: awaitingPayment, .*, shipping\.label\.printed$/);
  });
});
