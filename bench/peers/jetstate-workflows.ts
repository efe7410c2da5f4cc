/**
 * The two workloads as jetstate workflows, written with the public API only.
 *
 *  - `peer_steps` (workload A): 10 states in sequence, each invoking the activity `add` with
 *    { sum, i }; step i returns sum + i and its result is assigned to context before the next
 *    state invokes the next step; then final, with output { sum } (55).
 *  - `peer_tally` (workload B): one state; each `ADD { i }` adds i to `sum` and counts itself.
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, defineWorkflow } from '../../engine/index.js';

export const STEPS = 10;

/** The namespace both the engine's process and the load generator open. */
export const PEERS_NAMESPACE = 'peers';

const stepsMachine = setup({
  types: { context: {} as { sum: number }, output: {} as { sum: number } },
  actors: {
    // The durable step: runs as a task, its result arrives as the invoke's done event.
    add: activity<{ sum: number; i: number }, number>(async ({ input }) => input.sum + input.i),
  },
  actions: {
    // Runs on the step's done event, whose output is the step's result.
    keepSum: assign({ sum: ({ event }) => (event as unknown as { output: number }).output }),
  },
}).createMachine({
  id: 'peer_steps',
  initial: 'step1',
  context: { sum: 0 },
  states: {
    step1: step(1, 'step2'),
    step2: step(2, 'step3'),
    step3: step(3, 'step4'),
    step4: step(4, 'step5'),
    step5: step(5, 'step6'),
    step6: step(6, 'step7'),
    step7: step(7, 'step8'),
    step8: step(8, 'step9'),
    step9: step(9, 'step10'),
    step10: step(10, 'done'),
    done: { type: 'final' },
  },
  output: ({ context }) => ({ sum: context.sum }),
});

/** State `step<i>`: invoke `add` with the running sum and i, keep its result, go on to `next`. */
function step(i: number, next: string) {
  return {
    invoke: {
      src: 'add' as const,
      input: ({ context }: { context: { sum: number } }) => ({ sum: context.sum, i }),
      onDone: { target: next, actions: 'keepSum' as const },
    },
  };
}

export const peerSteps = defineWorkflow({
  name: 'peer_steps',
  version: 1,
  input: z.object({}),
  events: {},
  machine: stepsMachine,
});

export const peerTally = defineWorkflow({
  name: 'peer_tally',
  version: 1,
  input: z.object({}),
  events: { ADD: z.object({ i: z.number().int() }) },
  machine: setup({
    types: { context: {} as { sum: number; count: number }, events: {} as { type: 'ADD'; i: number } },
  }).createMachine({
    id: 'peer_tally',
    initial: 'open',
    context: { sum: 0, count: 0 },
    states: {
      open: { on: { ADD: { actions: assign(({ context, event }) => ({ sum: context.sum + event.i, count: context.count + 1 })) } } },
    },
  }),
});
