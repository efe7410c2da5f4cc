/**
 * A workflow that waits for one durable timer: `waiting` moves to `rang` when its delay (given
 * in the input, so many instances can be due at the same moment) has passed. The record shows the
 * timer's due time while it waits and the time of the write that applied the fire afterwards.
 */
import { setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow } from '../../engine/index.js';

export const alarm = defineWorkflow({
  name: 'alarm',
  version: 1,
  input: z.object({ delayMs: z.number().int().min(0) }),
  events: { SNOOZE: z.object({}) },
  machine: setup({
    types: { input: {} as { delayMs: number }, context: {} as { delayMs: number } },
    delays: { ring: ({ context }: { context: { delayMs: number } }) => context.delayMs },
  }).createMachine({
    id: 'alarm',
    context: ({ input }) => ({ delayMs: input.delayMs }),
    initial: 'waiting',
    states: {
      waiting: { after: { ring: 'rang' }, on: { SNOOZE: {} } },
      rang: { on: { SNOOZE: {} } },
    },
  }),
});
