/**
 * The workflow of the Step Functions kill tests, shared by the test process and the engine child
 * process (both must register the same definition): one stage delegated with
 * `stepFunctionsExecution`, whose attempt times out after 1 s, so a killed attempt comes back
 * after the task's acknowledgement wait of 1 s + 5 s.
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow, type WorkflowDefinition } from '../../engine/index.js';
import { stepFunctionsExecution, type StepFunctionsExecutionOptions } from '../../adapters/step-functions/execution.js';

export interface StageContext {
  orderId: string;
  result?: unknown;
  error?: unknown;
}

/** A workflow named `name` that delegates its one stage to `stateMachineArn` (polled every 200-400 ms). */
export function killStageWorkflow(name: string, stateMachineArn: string): WorkflowDefinition {
  return stageWorkflow(name, stateMachineArn, { startTimeoutMs: 1_000, pollIntervalMs: 200, maxPollIntervalMs: 400 });
}

/**
 * A workflow that delegates one stage (input `{ orderId }`) to `stateMachineArn`: `done` with the
 * output in `result`, `failed` with the error in `error`, `cancelled` on CANCEL (which stops it).
 */
export function stageWorkflow(name: string, stateMachineArn: string, options: Omit<StepFunctionsExecutionOptions, 'stateMachineArn'>): WorkflowDefinition {
  return defineWorkflow({
    name,
    version: 1,
    input: z.object({ orderId: z.string() }),
    events: { CANCEL: z.object({}) },
    machine: setup({
      types: { context: {} as StageContext, input: {} as { orderId: string } },
      actors: { stage: stepFunctionsExecution({ stateMachineArn, ...options }) },
    }).createMachine({
      context: ({ input }) => ({ orderId: input.orderId }),
      initial: 'delegated',
      states: {
        delegated: {
          invoke: {
            src: 'stage',
            input: ({ context }: { context: StageContext }) => ({ orderId: context.orderId }),
            onDone: { target: 'done', actions: assign({ result: ({ event }) => event.output }) },
            onError: { target: 'failed', actions: assign({ error: ({ event }) => event.error }) },
          },
          on: { CANCEL: 'cancelled' },
        },
        done: { type: 'final' },
        failed: { type: 'final' },
        cancelled: { type: 'final' },
      },
    }),
  });
}
