/** A parent that invokes a child workflow, for the recovery tests. */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { childWorkflow, defineWorkflow } from '../../engine/index.js';

export const payment = defineWorkflow({
  name: 'payment',
  version: 1,
  input: z.object({ amount: z.number() }),
  events: { CONFIRM: z.object({ receipt: z.string() }) },
  machine: setup({ types: { context: {} as { amount: number; receipt?: string }, input: {} as { amount: number } } }).createMachine({
    context: ({ input }) => ({ amount: input.amount }),
    initial: 'pending',
    states: {
      pending: { on: { CONFIRM: { target: 'confirmed', actions: assign({ receipt: ({ event }) => (event as unknown as { receipt: string }).receipt }) } } },
      confirmed: { type: 'final' },
    },
    output: ({ context }) => ({ receipt: context.receipt, amount: context.amount }),
  }),
});

export const checkout = defineWorkflow({
  name: 'checkout',
  version: 1,
  input: z.object({ amount: z.number() }),
  events: { NOOP: z.object({}) },
  machine: setup({ types: { context: {} as { amount: number; receipt?: unknown }, input: {} as { amount: number } }, actors: { payment: childWorkflow(payment) } }).createMachine({
    context: ({ input }) => ({ amount: input.amount }),
    initial: 'paying',
    states: {
      paying: {
        invoke: { id: 'pay', src: 'payment', input: ({ context }: { context: { amount: number } }) => ({ amount: context.amount }), onDone: { target: 'paid', actions: assign({ receipt: ({ event }) => event.output }) } },
        on: { NOOP: {} },
      },
      paid: { type: 'final' },
    },
  }),
});

export const workflows = [checkout];
