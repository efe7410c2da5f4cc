/**
 * A hybrid order: fast local steps in the engine, a cloud stage in AWS Step Functions, and a local
 * final step. Validation is a pure step (microseconds) and the stock reservation a local activity;
 * the payment settles in a Step Functions execution (workflows/hybrid.asl.json) whose
 * `.waitForTaskToken` task is answered by a NATS service; confirmation is local again. A declined
 * payment, or a CANCEL while settling (which stops the execution), releases the reservation.
 *
 * The cloud stage needs the Step Functions engine extension: `createEngine({ ..., extensions:
 * [stepFunctions({ region })] })`. An engine without it (such as `jetstate dev`) registers the
 * workflow fine; a started instance's cloud stage fails after a few attempts with an error that
 * says so, and the instance ends `cancelled` with that error in its context. Run it offline with
 * `jetstate sfn-local` and workflows/hybrid-local.ts (README, "Hybrid workflows offline").
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, defineWorkflow, TerminalError } from '../engine/index.js';
import { stepFunctionsExecution, type StepFunctionsExecutionOptions } from '../adapters/step-functions/execution.js';

/** The ARN `jetstate sfn-local --definitions workflows` gives hybrid.asl.json (default region and account). */
export const HYBRID_LOCAL_STATE_MACHINE_ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:hybrid';

export const HybridOrderInput = z.object({
  orderId: z.string().min(1),
  sku: z.string().min(1),
  quantity: z.number().int().positive(),
  amount: z.number().positive(),
});
export type HybridOrder = z.output<typeof HybridOrderInput>;

/** What the cloud stage returns (the Receipt state's output). */
export interface Settlement {
  orderId: string;
  settlement: { settlementId: string; [k: string]: unknown };
  execution: string;
}

/** The context of a hybrid instance. */
export interface HybridContext extends HybridOrder {
  reservationId?: string;
  settlementId?: string;
  execution?: string;
  confirmationId?: string;
  reason?: string;
  error?: { name: string; message: string };
}

/** The catalogue the validation step checks against, and most units per order line. */
export const CATALOGUE = new Set(['book', 'lamp', 'chair']);
export const MAX_QUANTITY = 10;

/** Stock on hand, in this process: a stand-in for the local inventory the reservation writes to. */
export const stock = new Map<string, number>([
  ['book', 1_000],
  ['lamp', 1_000],
  ['chair', 1_000],
]);
/** Reservations by id (the task's idempotency key, so a retried attempt reserves once). */
export const reservations = new Map<string, { sku: string; quantity: number }>();

const reserve = activity<{ sku: string; quantity: number }, { reservationId: string }>(
  async ({ input, idempotencyKey }) => {
    if (!reservations.has(idempotencyKey)) {
      const left = stock.get(input.sku) ?? 0;
      if (left < input.quantity) throw new TerminalError(`only ${left} of '${input.sku}' in stock, ${input.quantity} asked`);
      stock.set(input.sku, left - input.quantity);
      reservations.set(idempotencyKey, { sku: input.sku, quantity: input.quantity });
    }
    return { reservationId: idempotencyKey };
  },
  { retry: { maxAttempts: 3, initialIntervalMs: 200 }, timeoutMs: 5_000 },
);

const release = activity<{ reservationId: string }, { released: boolean }>(
  async ({ input }) => {
    const r = reservations.get(input.reservationId);
    if (r) {
      reservations.delete(input.reservationId);
      stock.set(r.sku, (stock.get(r.sku) ?? 0) + r.quantity);
    }
    return { released: r !== undefined };
  },
  { retry: { maxAttempts: 5, initialIntervalMs: 200 }, timeoutMs: 5_000 },
);

/** Confirmations by order id: the local final step (a stand-in for an e-mail or a ledger entry). */
export const confirmations = new Map<string, string>();
const confirm = activity<{ orderId: string; settlementId: string }, { confirmationId: string }>(
  async ({ input, idempotencyKey }) => {
    confirmations.set(input.orderId, input.settlementId);
    return { confirmationId: idempotencyKey };
  },
  { retry: { maxAttempts: 3, initialIntervalMs: 200 }, timeoutMs: 5_000 },
);

export interface HybridWorkflowOptions {
  /** The state machine of hybrid.asl.json; sfn-local's by default. */
  stateMachineArn?: string;
  /** 'poll' (default) or 'push' (status events forwarded into NATS). */
  completion?: 'poll' | 'push';
  /** First poll of an execution (default 1 s, growing 1.5x up to 10 s: the stage takes seconds here, not hours). */
  pollIntervalMs?: number;
  /** More options of the cloud stage (its `retry`, `startTimeoutMs`...), applied over the ones above. */
  stage?: Omit<StepFunctionsExecutionOptions, 'stateMachineArn' | 'input' | 'name'>;
}

/**
 * The hybrid workflow for a given state machine. `hybrid` below is the one for sfn-local.
 *
 * @example
 * ```ts
 * const hybridOnAws = defineHybridWorkflow({ stateMachineArn: 'arn:aws:states:eu-west-1:210987654321:stateMachine:hybrid', completion: 'push' });
 * ```
 */
export function defineHybridWorkflow(options: HybridWorkflowOptions = {}) {
  const pollIntervalMs = options.pollIntervalMs ?? 1_000;
  return defineWorkflow({
    name: 'hybrid',
    version: 1,
    input: HybridOrderInput,
    events: { CANCEL: z.object({ reason: z.string().default('customer request') }) },
    machine: setup({
      types: { input: {} as HybridOrder, context: {} as HybridContext, events: {} as { type: 'CANCEL'; reason: string } },
      guards: {
        valid: ({ context }) => CATALOGUE.has(context.sku) && context.quantity <= MAX_QUANTITY,
      },
      actors: {
        reserve,
        release,
        confirm,
        // The cloud stage. Few attempts: StartExecution's own throttling retries happen inside
        // each attempt (the SDK's), so these mostly cover an engine without the extension.
        settle: stepFunctionsExecution<Settlement, { orderId: string; amount: number; reservationId: string }>({
          stateMachineArn: options.stateMachineArn ?? HYBRID_LOCAL_STATE_MACHINE_ARN,
          name: 'hybrid',
          completion: options.completion ?? 'poll',
          pollIntervalMs,
          maxPollIntervalMs: Math.max(pollIntervalMs, 10_000),
          retry: { maxAttempts: 4, initialIntervalMs: 1_000 },
          ...options.stage,
        }),
      },
    }).createMachine({
      id: 'hybrid',
      initial: 'validating',
      context: ({ input }) => ({ ...input }),
      states: {
        // Local and pure: part of the step that starts the instance.
        validating: {
          always: [
            { guard: 'valid', target: 'reserving' },
            {
              target: 'rejected',
              actions: assign({ reason: ({ context }) => (CATALOGUE.has(context.sku) ? `at most ${MAX_QUANTITY} per order` : `unknown sku '${context.sku}'`) }),
            },
          ],
        },
        reserving: {
          invoke: {
            id: 'reserve',
            src: 'reserve',
            input: ({ context }) => ({ sku: context.sku, quantity: context.quantity }),
            onDone: { target: 'settling', actions: assign({ reservationId: ({ event }) => event.output.reservationId }) },
            onError: { target: 'rejected', actions: assign({ reason: ({ event }) => (event.error as { message?: string }).message ?? 'reservation failed' }) },
          },
          on: { CANCEL: { target: 'cancelled', actions: assign({ reason: ({ event }) => event.reason }) } },
        },
        // In the cloud: leaving this state (CANCEL) stops the execution.
        settling: {
          invoke: {
            id: 'settle',
            src: 'settle',
            input: ({ context }) => ({ orderId: context.orderId, amount: context.amount, reservationId: context.reservationId! }),
            onDone: {
              target: 'confirming',
              actions: assign({ settlementId: ({ event }) => event.output.settlement.settlementId, execution: ({ event }) => event.output.execution }),
            },
            onError: {
              target: 'releasing',
              actions: assign({
                error: ({ event }) => {
                  const e = event.error as { name?: string; message?: string };
                  return { name: e.name ?? 'Error', message: e.message ?? 'the settlement failed' };
                },
              }),
            },
          },
          on: { CANCEL: { target: 'releasing', actions: assign({ reason: ({ event }) => event.reason }) } },
        },
        releasing: {
          invoke: {
            id: 'release',
            src: 'release',
            input: ({ context }) => ({ reservationId: context.reservationId! }),
            onDone: 'cancelled',
            onError: 'cancelled',
          },
        },
        confirming: {
          invoke: {
            id: 'confirm',
            src: 'confirm',
            input: ({ context }) => ({ orderId: context.orderId, settlementId: context.settlementId! }),
            onDone: { target: 'completed', actions: assign({ confirmationId: ({ event }) => event.output.confirmationId }) },
          },
        },
        completed: { type: 'final' },
        rejected: { type: 'final' },
        cancelled: { type: 'final' },
      },
      output: ({ context }) => ({ settlementId: context.settlementId, confirmationId: context.confirmationId, reason: context.reason, error: context.error }),
    }),
  });
}

/** The hybrid workflow against `jetstate sfn-local --definitions workflows`. */
export const hybrid = defineHybridWorkflow();
