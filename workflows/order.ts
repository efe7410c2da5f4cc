/**
 * An order: placed, then paid (possibly in parts) within its payment window, then shipped, or
 * cancelled, or expired when the window closes unpaid (a durable timer: it fires even if every
 * engine was down when it came due). The example the README walks through; copy it.
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow, eventsOf, inputOf } from '../engine/index.js';

export const OrderInput = z.object({
  orderId: z.string().min(1),
  customer: z.string().min(1),
  amount: z.number().positive(),
  /** How long the customer has to pay; default one day. */
  paymentWindowMs: z
    .number()
    .int()
    .positive()
    .default(24 * 60 * 60 * 1000),
});

/** What a sender may send, written once: the engine checks payloads with these, the machine is typed by them. */
export const OrderEvents = {
  PAY: z.object({ amount: z.number().positive() }),
  SHIP: z.object({ carrier: z.string().min(1), trackingId: z.string().min(1) }),
  DELIVERED: z.object({}),
  CANCEL: z.object({ reason: z.string().default('customer request') }),
};

export type OrderContext = z.output<typeof OrderInput> & {
  paid: number;
  payments: number;
  carrier?: string;
  trackingId?: string;
  cancelReason?: string;
  expired?: boolean;
};

/** What a finished order returns (its `output`): typed here, so `get(order, id).output` is too. */
export interface OrderOutput {
  orderId: string;
  paid: number;
  cancelled: boolean;
  expired: boolean;
}

export const order = defineWorkflow({
  name: 'order',
  version: 1,
  input: OrderInput,
  events: OrderEvents,
  machine: setup({
    types: {
      // The machine's input and events are the schemas' outputs (defaults filled in), not a second copy of them.
      input: inputOf(OrderInput),
      context: {} as OrderContext,
      events: eventsOf(OrderEvents),
      output: {} as OrderOutput,
    },
    delays: {
      paymentWindow: ({ context }) => context.paymentWindowMs,
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
        after: { paymentWindow: { target: 'expired', actions: assign({ expired: true }) } },
        on: {
          PAY: [
            {
              guard: 'fullyPaid',
              target: 'paid',
              actions: assign(({ context, event }) => ({ paid: context.paid + event.amount, payments: context.payments + 1 })),
            },
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
      expired: { type: 'final' },
    },
    output: ({ context }) => ({
      orderId: context.orderId,
      paid: context.paid,
      cancelled: context.cancelReason !== undefined,
      expired: context.expired === true,
    }),
  }),
});
