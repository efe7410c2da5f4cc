/** A counter of the tests: ADD { k } adds k to `n`; it runs until stopped. */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow } from '../engine/index.js';

export const counter = defineWorkflow({
  name: 'counter',
  version: 1,
  input: z.object({ label: z.string() }),
  events: { ADD: z.object({ k: z.number() }) },
  machine: setup({ types: {} as { context: { n: number; label: string }; events: { type: 'ADD'; k: number }; input: { label: string } } }).createMachine({
    context: ({ input }) => ({ n: 0, label: input.label }),
    initial: 'counting',
    states: { counting: { on: { ADD: { actions: assign({ n: ({ context, event }) => context.n + event.k }) } } } },
  }),
});
