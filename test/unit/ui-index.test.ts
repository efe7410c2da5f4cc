/** The web view's index structures, pure: the sorted key set with deferred merges, and state paths. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeState, indexEntryOf } from '../../adapters/ui/instance-index.js';
import { SortedKeys, lowerBound, upperBound } from '../../adapters/ui/sorted-keys.js';

describe('ui index', () => {
  it('keeps keys sorted with their values through interleaved adds and removes (seeded)', () => {
    let seed = 7;
    const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const sorted = new SortedKeys<number>();
    const model = new Map<string, number>();
    for (let round = 0; round < 200; round++) {
      for (let i = 0; i < 50; i++) {
        const key = `wf.${rand(400)}`;
        if (model.has(key)) {
          sorted.remove(key);
          model.delete(key);
          if (rand(2) === 0) {
            // Removed and added back before the next read.
            sorted.add(key, round);
            model.set(key, round);
          }
        } else {
          sorted.add(key, round);
          model.set(key, round);
        }
      }
      if (rand(3) === 0) continue; // several rounds per merge, too
      const { keys, values } = sorted.view();
      const expected = [...model.keys()].sort();
      assert.deepEqual(keys, expected);
      assert.deepEqual(
        values,
        expected.map((k) => model.get(k)),
      );
    }
  });

  it('finds bounds', () => {
    const keys = ['a.1', 'a.2', 'b.1'];
    assert.equal(lowerBound(keys, 'a.2'), 1);
    assert.equal(upperBound(keys, 'a.2'), 2);
    assert.equal(lowerBound(keys, 'a.\uffff'), 2);
    assert.equal(upperBound(keys, 'z'), 3);
  });

  it('names every state path of a value, parallel and nested', () => {
    assert.deepEqual(describeState('paid'), { state: 'paid', paths: ['paid'] });
    assert.deepEqual(describeState({ open: { triage: 'new', sla: 'ok' } }), {
      state: 'open.triage.new, open.sla.ok',
      paths: ['open', 'open.triage', 'open.triage.new', 'open.sla', 'open.sla.ok'],
    });
  });

  it('reads any status a record carries, and survives an unreadable one', () => {
    const e = indexEntryOf(
      'order.o-1',
      new TextEncoder().encode(JSON.stringify({ version: 2, status: 'parked', snapshot: { value: 'paid' }, revision: 3, createdAtMs: 1, updatedAtMs: 2 })),
    );
    assert.equal(e.status, 'parked');
    assert.equal(e.state, 'paid');
    assert.equal(e.version, 2);
    const bad = indexEntryOf('order.o-2', new TextEncoder().encode('{nope'));
    assert.equal(bad.status, 'unreadable');
    assert.equal(bad.id, 'o-2');
  });
});

describe('ui actions', () => {
  it('offers cancel and terminate only when the client has them, and passes reason and token on', async () => {
    const { availableActions, runOptionalAction } = await import('../../adapters/ui/actions.js');
    const { order } = await import('../../workflows/order.js');
    type AnyClient = Parameters<typeof availableActions>[0];
    assert.deepEqual(availableActions({} as AnyClient), ['send', 'verify']);
    const calls: unknown[] = [];
    const client = { cancel: async (...args: unknown[]) => void calls.push(args) } as unknown as AnyClient;
    assert.deepEqual(availableActions(client), ['send', 'verify', 'cancel']);
    await runOptionalAction(client, 'cancel', order, 'o-1', { reason: 'duplicate', token: 't' });
    assert.deepEqual(calls, [[order, 'o-1', { reason: 'duplicate', token: 't' }]]);
    await assert.rejects(runOptionalAction(client, 'terminate', order, 'o-1', {}), /has no terminate\(\)/);
  });
});
