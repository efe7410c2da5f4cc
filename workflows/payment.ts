/**
 * A card payment whose card number and CVC never sit in NATS in the clear: `secrets` names them,
 * and the engine seals them (AES-256-GCM, key ring in JETSTATE_KEYS) in the record, the history,
 * the task message that carries them to the gateway, and the events that bring them. The machine
 * and the activity see plain values; `jetstate get payment p-1` shows `[encrypted:<key id>]`
 * unless `--reveal` is given with the key ring.
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, defineWorkflow, TerminalError } from '../engine/index.js';

export const PaymentInput = z.object({
  paymentId: z.string().min(1),
  amount: z.number().positive(),
  card: z.object({ number: z.string().regex(/^\d{12,19}$/, 'a card number is 12-19 digits'), expiry: z.string().regex(/^\d{2}\/\d{2}$/, 'expiry as MM/YY') }),
});

type Charge = { amount: number; card: { number: string; expiry: string }; cvc: string };

/** Stands in for a card gateway: approves unless the CVC is 000. */
const charge = activity<Charge, { authCode: string }>(
  async ({ input, idempotencyKey }) => {
    if (input.cvc === '000') throw new TerminalError('declined: CVC check failed');
    return { authCode: `A${idempotencyKey.length}-${input.card.number.slice(-4)}` };
  },
  { retry: { maxAttempts: 3, initialIntervalMs: 500 }, timeoutMs: 10_000 },
);

export const payment = defineWorkflow({
  name: 'payment',
  version: 1,
  input: PaymentInput,
  events: {
    CONFIRM: z.object({ cvc: z.string().regex(/^\d{3,4}$/, 'a CVC is 3 or 4 digits') }),
    CANCEL: z.object({}),
  },
  secrets: ['card.number', 'cvc'],
  limits: { maxEventBytes: 4_096 },
  machine: setup({
    types: {
      input: {} as z.output<typeof PaymentInput>,
      context: {} as z.output<typeof PaymentInput> & { last4: string; cvc?: string; authCode?: string; declined?: string },
      events: {} as { type: 'CONFIRM'; cvc: string } | { type: 'CANCEL' },
    },
    actors: { charge },
  }).createMachine({
    id: 'payment',
    initial: 'awaitingConfirmation',
    context: ({ input }) => ({ ...input, last4: input.card.number.slice(-4) }),
    states: {
      awaitingConfirmation: {
        on: {
          CONFIRM: { target: 'charging', actions: assign({ cvc: ({ event }) => event.cvc }) },
          CANCEL: 'cancelled',
        },
      },
      charging: {
        invoke: {
          src: 'charge',
          input: ({ context }) => ({ amount: context.amount, card: context.card, cvc: context.cvc ?? '' }),
          // The CVC is not kept once used.
          onDone: { target: 'captured', actions: assign({ authCode: ({ event }) => event.output.authCode, cvc: undefined }) },
          onError: { target: 'declined', actions: assign({ declined: ({ event }) => String((event.error as Error)?.message ?? event.error), cvc: undefined }) },
        },
      },
      captured: { type: 'final' },
      declined: { type: 'final' },
      cancelled: { type: 'final' },
    },
  }),
});
