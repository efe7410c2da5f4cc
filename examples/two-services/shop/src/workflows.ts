/**
 * The shop's workflow: an order. It asks the billing service to open an invoice (a durable task
 * that retries until billing answers), waits until billing says the invoice is paid, and tells
 * billing when it ships or is cancelled. The shop registers only this workflow: the invoice is
 * billing's, and reaches the shop only as events.
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, defineWorkflow, sendToInstance, TerminalError, type EngineExtension, type ExtensionHost } from 'jetstate';

/** The subject billing answers "open an invoice" on: the one contract between the two services besides event names. */
export const OPEN_INVOICE_SUBJECT = 'billing.invoices.open';

export const OrderInput = z.object({
  orderId: z.string().min(1),
  customer: z.string().min(1),
  amount: z.number().positive(),
});
export type OrderInput = z.output<typeof OrderInput>;

const InvoiceOpened = z.object({ invoiceId: z.string().min(1) });

/** What the order's task needs from the engine it runs on: a way to reach billing. */
export interface BillingDesk {
  openInvoice(order: OrderInput, signal: AbortSignal): Promise<{ invoiceId: string }>;
}

/**
 * An engine extension that asks billing over the engine's own NATS connection. Activities get
 * it by name, so the workflow module needs no connection of its own (and the CLI can load it).
 */
export function billingDesk(): EngineExtension & BillingDesk {
  let host: ExtensionHost | undefined;
  return {
    name: 'billing-desk',
    start: async (h) => void (host = h),
    stop: async () => void (host = undefined),
    async openInvoice(order, signal) {
      if (!host) throw new Error('the billing desk is not started');
      // No responders (billing is down) or a timeout throws: the task retries with backoff.
      const reply = await host.nc.request(OPEN_INVOICE_SUBJECT, JSON.stringify(order), { timeout: 2_000 });
      signal.throwIfAborted();
      const answer = z.union([InvoiceOpened, z.object({ error: z.string() })]).parse(reply.json());
      if ('error' in answer) throw new TerminalError(`billing refused the invoice: ${answer.error}`);
      return answer;
    },
  };
}

type OrderContext = OrderInput & { invoiceId?: string; paidAmount?: number; carrier?: string; trackingId?: string; cancelReason?: string; error?: string };
type OrderEvent =
  { type: 'INVOICE_PAID'; invoiceId: string; amount: number } | { type: 'SHIP'; carrier: string; trackingId: string } | { type: 'CANCEL'; reason: string };

const invoiceOf = ({ context }: { context: OrderContext }) => ({ workflow: 'invoice', id: context.invoiceId ?? `inv-${context.orderId}` });

export const order = defineWorkflow({
  name: 'order',
  version: 1,
  input: OrderInput,
  events: {
    INVOICE_PAID: z.object({ invoiceId: z.string(), amount: z.number() }),
    SHIP: z.object({ carrier: z.string().min(1), trackingId: z.string().min(1) }),
    CANCEL: z.object({ reason: z.string().default('customer request') }),
  },
  machine: setup({
    types: { input: {} as OrderInput, context: {} as OrderContext, events: {} as OrderEvent },
    actors: {
      openInvoice: activity<OrderInput, { invoiceId: string }>(
        async ({ input, signal, extension }) => extension<BillingDesk>('billing-desk').openInvoice(input, signal),
        { requires: ['billing-desk'], retry: { maxAttempts: 30, initialIntervalMs: 200, maxIntervalMs: 2_000 }, timeoutMs: 5_000 },
      ),
    },
  }).createMachine({
    id: 'order',
    initial: 'invoicing',
    context: ({ input }) => ({ ...input }),
    states: {
      invoicing: {
        invoke: {
          src: 'openInvoice',
          input: ({ context }) => ({ orderId: context.orderId, customer: context.customer, amount: context.amount }),
          onDone: { target: 'awaitingPayment', actions: assign({ invoiceId: ({ event }) => event.output.invoiceId }) },
          onError: { target: 'failed', actions: assign({ error: ({ event }) => (event.error as { message?: string }).message ?? 'billing did not answer' }) },
        },
      },
      awaitingPayment: {
        on: {
          INVOICE_PAID: { target: 'paid', actions: assign({ paidAmount: ({ event }) => event.amount }) },
          CANCEL: {
            target: 'cancelled',
            actions: [
              assign({ cancelReason: ({ event }) => event.reason }),
              sendToInstance(invoiceOf, ({ event }) => ({ type: 'ORDER_CANCELLED', reason: (event as { reason: string }).reason })),
            ],
          },
        },
      },
      paid: {
        on: {
          SHIP: {
            target: 'shipped',
            actions: [
              assign({ carrier: ({ event }) => event.carrier, trackingId: ({ event }) => event.trackingId }),
              sendToInstance(invoiceOf, ({ event }) => ({ type: 'ORDER_SHIPPED', carrier: (event as { carrier: string }).carrier })),
            ],
          },
        },
      },
      shipped: { type: 'final' },
      cancelled: { type: 'final' },
      failed: { type: 'final' },
    },
    output: ({ context }) => ({ orderId: context.orderId, invoiceId: context.invoiceId, paid: context.paidAmount ?? 0 }),
  }),
});

export const workflows = [order];
