/**
 * A workflow made for model checking the recovery guarantees: every `ADD { k }` appends `k` to
 * `log` and adds it to `n`. The final context therefore shows both the order in which events
 * were applied (`log`) and whether any was applied twice or lost (`log` and `n`), and it can be
 * compared with a model computed from the events sent.
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow } from '../../engine/index.js';

export const CounterInput = z.object({ label: z.string().min(1) });

export interface CounterContext {
  label: string;
  n: number;
  log: number[];
}

export const counter = defineWorkflow({
  name: 'counter',
  version: 1,
  input: CounterInput,
  events: {
    ADD: z.object({ k: z.number().int() }),
  },
  machine: setup({
    types: {
      input: {} as z.infer<typeof CounterInput>,
      context: {} as CounterContext,
      events: {} as { type: 'ADD'; k: number },
    },
  }).createMachine({
    id: 'counter',
    initial: 'counting',
    context: ({ input }) => ({ label: input.label, n: 0, log: [] }),
    states: {
      counting: {
        on: {
          ADD: { actions: assign(({ context, event }) => ({ n: context.n + event.k, log: [...context.log, event.k] })) },
        },
      },
    },
  }),
});

/** The model: the context an instance must end with after exactly these events, in this order. */
export function expectedContext(label: string, ks: readonly number[]): CounterContext {
  return { label, n: ks.reduce((a, b) => a + b, 0), log: [...ks] };
}
