/** An escalation that invokes a callback as a child workflow: the web view's parent and child links. */
import { setup } from 'xstate';
import { z } from 'zod';
import { childWorkflow, defineWorkflow } from '../../engine/index.js';

export const callback = defineWorkflow({
  name: 'callback',
  version: 1,
  input: z.object({ phone: z.string() }),
  events: { ANSWERED: z.object({}) },
  machine: setup({ types: { input: {} as { phone: string }, context: {} as { phone: string } } }).createMachine({
    context: ({ input }) => ({ phone: input.phone }),
    initial: 'ringing',
    states: { ringing: { on: { ANSWERED: 'answered' } }, answered: { type: 'final' } },
  }),
});

export const escalation = defineWorkflow({
  name: 'escalation',
  version: 1,
  input: z.object({ phone: z.string() }),
  events: { DROP: z.object({}) },
  machine: setup({ types: { input: {} as { phone: string }, context: {} as { phone: string } }, actors: { callback: childWorkflow(callback) } }).createMachine({
    context: ({ input }) => ({ phone: input.phone }),
    initial: 'calling',
    states: {
      calling: { invoke: { id: 'call', src: 'callback', input: ({ context }) => ({ phone: context.phone }), onDone: 'reached' }, on: { DROP: 'dropped' } },
      reached: { type: 'final' },
      dropped: { type: 'final' },
    },
  }),
});
