/**
 * An order: placed, then paid (possibly in parts), then shipped or cancelled. The example the
 * README walks through; copy it as a starting point.
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow } from '../engine/index.js';

export const OrderInput = z.object({
  orderId: z.string().min(1),
  customer: z.string().min(1),
  amount: z.number().positive(),
});

export const order = defineWorkflow({
  name: 'order',
  version: 1,
  input: OrderInput,
  events: {
    PAY: z.object({ amount: z.number().positive() }),
    SHIP: z.object({ carrier: z.string().min(1), trackingId: z.string().min(1) }),
    DELIVERED: z.object({}),
    CANCEL: z.object({ reason: z.string().default('customer request') }),
  },
  machine: setup({
    types: {
      input: {} as z.infer<typeof OrderInput>,
      context: {} as z.infer<typeof OrderInput> & { paid: number; payments: number; carrier?: string; trackingId?: string; cancelReason?: string },
      events: {} as
        | { type: 'PAY'; amount: number }
        | { type: 'SHIP'; carrier: string; trackingId: string }
        | { type: 'DELIVERED' }
        | { type: 'CANCEL'; reason: string },
    },
    guards: {
      fullyPaid: ({ context, event }) => event.type === 'PAY' && context.paid + event.amount >= context.amount,
    },
  }).createMachine({
    id: 'order',
    initial: 'awaitingPayment',
    context: ({ input }) => ({ ...input, paid: 0, payments: 0 }),
    states: {
      awaitingPayment: {
        on: {
          PAY: [
            { guard: 'fullyPaid', target: 'paid', actions: assign(({ context, event }) => ({ paid: context.paid + event.amount, payments: context.payments + 1 })) },
            { actions: assign(({ context, event }) => ({ paid: context.paid + event.amount, payments: context.payments + 1 })) },
          ],
          CANCEL: { target: 'cancelled', actions: assign({ cancelReason: ({ event }) => event.reason }) },
        },
      },
      paid: {
        on: {
          SHIP: { target: 'shipped', actions: assign({ carrier: ({ event }) => event.carrier, trackingId: ({ event }) => event.trackingId }) },
          CANCEL: { target: 'cancelled', actions: assign({ cancelReason: ({ event }) => event.reason }) },
        },
      },
      shipped: { on: { DELIVERED: 'delivered' } },
      delivered: { type: 'final' },
      cancelled: { type: 'final' },
    },
    output: ({ context }) => ({ orderId: context.orderId, paid: context.paid, cancelled: context.cancelReason !== undefined }),
  }),
});
