/**
 * An access request: a manager approves or rejects it before it expires (a durable timer); an
 * approved request is provisioned by a task that retries with backoff (an activity), and the
 * requester is told either way. Copy it as a starting point for approvals.
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, defineWorkflow, TerminalError } from '../engine/index.js';

export const AccessRequestInput = z.object({
  requester: z.string().min(1),
  resource: z.string().min(1),
  /** How long the approver has; default three days. */
  expiresInMs: z
    .number()
    .int()
    .positive()
    .default(3 * 24 * 60 * 60 * 1000),
  /** For the tour: the directory fails the first attempt, to show a retry. */
  simulateOutage: z.boolean().default(false),
});
type AccessRequest = z.output<typeof AccessRequestInput>;

/**
 * Grants access in the directory service. Stands in for a real HTTP call: it honours the abort
 * signal and passes the idempotency key on, so a retried or taken-over attempt grants once.
 */
export const grants = new Map<string, { requester: string; resource: string }>();
const provision = activity<{ requester: string; resource: string; simulateOutage: boolean }, { grantId: string }>(
  async ({ input, attempt, idempotencyKey, signal }) => {
    await new Promise((r) => setTimeout(r, 20));
    signal.throwIfAborted();
    if (input.simulateOutage && attempt === 1) throw new Error('directory service unavailable (503)');
    if (input.resource.startsWith('forbidden')) throw new TerminalError(`resource '${input.resource}' cannot be granted`);
    grants.set(idempotencyKey, { requester: input.requester, resource: input.resource });
    return { grantId: idempotencyKey };
  },
  { retry: { maxAttempts: 5, initialIntervalMs: 200, backoffCoefficient: 2 }, timeoutMs: 10_000 },
);

export const approval = defineWorkflow({
  name: 'approval',
  version: 1,
  input: AccessRequestInput,
  events: {
    APPROVE: z.object({ by: z.string().min(1) }),
    REJECT: z.object({ by: z.string().min(1), reason: z.string().default('') }),
  },
  machine: setup({
    types: {
      input: {} as AccessRequest,
      context: {} as AccessRequest & { decidedBy?: string; reason?: string; grantId?: string; error?: string },
    },
    delays: { expiry: ({ context }) => context.expiresInMs },
    actors: { provision },
  }).createMachine({
    id: 'approval',
    initial: 'pending',
    context: ({ input }) => ({ ...input }),
    states: {
      pending: {
        after: { expiry: 'expired' },
        on: {
          APPROVE: { target: 'provisioning', actions: assign({ decidedBy: ({ event }) => event.by }) },
          REJECT: { target: 'rejected', actions: assign({ decidedBy: ({ event }) => event.by, reason: ({ event }) => event.reason }) },
        },
      },
      provisioning: {
        invoke: {
          id: 'provision',
          src: 'provision',
          input: ({ context }) => ({ requester: context.requester, resource: context.resource, simulateOutage: context.simulateOutage }),
          onDone: { target: 'granted', actions: assign({ grantId: ({ event }) => event.output.grantId }) },
          onError: { target: 'failed', actions: assign({ error: ({ event }) => (event.error as { message?: string }).message ?? 'provisioning failed' }) },
        },
      },
      granted: { type: 'final' },
      rejected: { type: 'final' },
      expired: { type: 'final' },
      failed: { type: 'final' },
    },
    output: ({ context }) => ({ grantId: context.grantId, decidedBy: context.decidedBy, error: context.error }),
  }),
});
