/**
 * Billing's workflow: an invoice for an order. Billing opens one when the shop asks (see
 * main.ts), takes payments, tells the order once it is paid in full, and closes when the order
 * ships (or is voided when the order is cancelled first). Billing registers only this workflow:
 * orders are the shop's, and reach billing only as events.
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow, sendToInstance } from 'jetstate';

export const InvoiceInput = z.object({
  invoiceId: z.string().min(1),
  orderId: z.string().min(1),
  customer: z.string().min(1),
  amount: z.number().positive(),
});
export type InvoiceInput = z.output<typeof InvoiceInput>;

type InvoiceContext = InvoiceInput & { paid: number; carrier?: string; voidReason?: string };
type InvoiceEvent = { type: 'PAY'; amount: number } | { type: 'ORDER_SHIPPED'; carrier: string } | { type: 'ORDER_CANCELLED'; reason: string };

export const invoice = defineWorkflow({
  name: 'invoice',
  version: 1,
  input: InvoiceInput,
  events: {
    PAY: z.object({ amount: z.number().positive() }),
    ORDER_SHIPPED: z.object({ carrier: z.string() }),
    ORDER_CANCELLED: z.object({ reason: z.string() }),
  },
  machine: setup({
    types: { input: {} as InvoiceInput, context: {} as InvoiceContext, events: {} as InvoiceEvent },
    guards: {
      paysInFull: ({ context, event }) => event.type === 'PAY' && context.paid + event.amount >= context.amount,
    },
  }).createMachine({
    id: 'invoice',
    initial: 'open',
    context: ({ input }) => ({ ...input, paid: 0 }),
    states: {
      open: {
        on: {
          PAY: [
            {
              guard: 'paysInFull',
              target: 'paid',
              actions: [
                assign({ paid: ({ context, event }) => context.paid + event.amount }),
                // After this state is written, the order hears of it (once, even across crashes).
                sendToInstance(
                  ({ context }: { context: InvoiceContext }) => ({ workflow: 'order', id: context.orderId }),
                  ({ context }: { context: InvoiceContext }) => ({
                    type: 'INVOICE_PAID',
                    invoiceId: context.invoiceId,
                    amount: context.amount,
                  }),
                ),
              ],
            },
            { actions: assign({ paid: ({ context, event }) => context.paid + event.amount }) },
          ],
          ORDER_CANCELLED: { target: 'void', actions: assign({ voidReason: ({ event }) => event.reason }) },
        },
      },
      paid: {
        on: {
          ORDER_SHIPPED: { target: 'closed', actions: assign({ carrier: ({ event }) => event.carrier }) },
        },
      },
      closed: { type: 'final' },
      void: { type: 'final' },
    },
    output: ({ context }) => ({ invoiceId: context.invoiceId, orderId: context.orderId, paid: context.paid }),
  }),
});

export const workflows = [invoice];
