/**
 * A workflow whose start invokes a quick activity (default options): the task's outcome is an
 * event the engine publishes into the instance's partition, so an instance reaches `done` only if
 * that event was applied. Used to check that outcomes accepted by the stream are never lost.
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, defineWorkflow } from '../../engine/index.js';

export const quick = defineWorkflow({
  name: 'quick',
  version: 1,
  input: z.object({ n: z.number().int() }),
  events: { NOOP: z.object({}) },
  machine: setup({
    types: { input: {} as { n: number }, context: {} as { n: number; echoed?: number } },
    actors: { echo: activity(async ({ input }) => ({ n: (input as { n: number }).n })) },
  }).createMachine({
    id: 'quick',
    context: ({ input }) => ({ n: input.n }),
    initial: 'working',
    states: {
      working: {
        invoke: {
          id: 'echo',
          src: 'echo',
          input: ({ context }: { context: { n: number } }) => ({ n: context.n }),
          onDone: { target: 'done', actions: assign({ echoed: ({ event }) => (event.output as { n: number }).n }) },
        },
        on: { NOOP: {} },
      },
      done: { type: 'final' },
    },
  }),
});
