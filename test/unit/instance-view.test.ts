// What get() offers of XState's snapshot helpers beside matches and hasTag: can(event) and
// getMeta(), computed from the machine of the record's version (machine.resolveState on the stored
// value and context), guards evaluated with the stored context.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setup, type AnyMachineSnapshot, type StateValue } from 'xstate';
import { z } from 'zod';
import { defineWorkflow } from '../../engine/index.js';
import { tagsOf } from '../../engine/define/states.js';
import { toInstance } from '../../engine/protocol/record.js';
import { applyEvents, startInstance } from '../../engine/step/step.js';
import { MachineRunner } from '../../engine/step/runner.js';

const gate = defineWorkflow({
  name: 'gate',
  version: 1,
  input: z.object({ limit: z.number() }),
  events: { PAY: z.object({ amount: z.number() }), CLOSE: z.object({}) },
  machine: setup({
    types: { context: {} as { limit: number }, input: {} as { limit: number }, events: {} as { type: 'PAY'; amount: number } | { type: 'CLOSE' } },
  }).createMachine({
    context: ({ input }) => ({ limit: input.limit }),
    initial: 'open',
    states: {
      open: {
        meta: { title: 'Open for payments' },
        on: { PAY: { guard: ({ context, event }) => event.amount <= context.limit, actions: () => {} }, CLOSE: 'closed' },
      },
      closed: { type: 'final', meta: { title: 'Closed' } },
    },
  }),
});

const runner = new MachineRunner(gate.machine);
const resolve = (value: StateValue, context: unknown): AnyMachineSnapshot => gate.machine.resolveState({ value, context } as never) as AnyMachineSnapshot;
const view = (record: Parameters<typeof toInstance>[0]) => toInstance(record, (v) => tagsOf(gate.machine, v), resolve);

describe('the instance view: can and getMeta', () => {
  it('answers as XState would on the stored snapshot, guards with the stored context', () => {
    const s = startInstance(gate, runner, 'g', { limit: 10 }, 0);
    const i = view(s.record);
    assert.equal(i.can({ type: 'PAY', amount: 5 }), true);
    assert.equal(i.can({ type: 'PAY', amount: 50 }), false, 'the guard sees the stored limit');
    assert.equal(i.can({ type: 'CLOSE' }), true);
    assert.equal(i.can({ type: 'NOPE' }), false);
    assert.deepEqual(i.getMeta(), { '(machine).open': { title: 'Open for payments' } });
  });

  it('a finished instance can take nothing; getMeta still names its state', () => {
    const s = startInstance(gate, runner, 'g', { limit: 10 }, 0);
    const r = applyEvents(runner, s.record, s.snapshot, [{ seq: 1, timeMs: 0, event: { type: 'CLOSE' } }], 0);
    const i = view(r.record);
    assert.equal(i.status, 'done');
    assert.equal(i.can({ type: 'PAY', amount: 1 }), false);
    assert.deepEqual(i.getMeta(), { '(machine).closed': { title: 'Closed' } });
  });

  it('without a machine (or a value it cannot resolve): false and {}', () => {
    const s = startInstance(gate, runner, 'g', { limit: 10 }, 0);
    const bare = toInstance(s.record);
    assert.equal(bare.can({ type: 'CLOSE' }), false);
    assert.deepEqual(bare.getMeta(), {});
    const broken = toInstance({ ...s.record, snapshot: { ...s.record.snapshot, value: 'nowhere' } }, undefined, resolve);
    assert.equal(broken.can({ type: 'CLOSE' }), false);
    assert.deepEqual(broken.getMeta(), {});
  });
});
