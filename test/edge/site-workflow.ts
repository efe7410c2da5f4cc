/**
 * The workflow of the edge tests: `ADD { k }` appends `k` to `log` (so the context shows order,
 * losses and doubles), `ARM { delayMs }` waits in `armed` for a durable timer that counts a ring.
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow } from '../../engine/index.js';

export interface SiteContext {
  label: string;
  log: number[];
  rings: number;
  delayMs: number;
}

export const site = defineWorkflow({
  name: 'site',
  version: 1,
  input: z.object({ label: z.string().min(1) }),
  events: {
    ADD: z.object({ k: z.number().int() }),
    ARM: z.object({ delayMs: z.number().int().min(0) }),
  },
  machine: setup({
    types: {
      input: {} as { label: string },
      context: {} as SiteContext,
      events: {} as { type: 'ADD'; k: number } | { type: 'ARM'; delayMs: number },
    },
    delays: { ring: ({ context }: { context: SiteContext }) => context.delayMs },
  }).createMachine({
    id: 'site',
    initial: 'counting',
    context: ({ input }) => ({ label: input.label, log: [], rings: 0, delayMs: 0 }),
    on: { ADD: { actions: assign(({ context, event }) => ({ log: [...context.log, (event as { k: number }).k] })) } },
    states: {
      counting: { on: { ARM: { target: 'armed', actions: assign({ delayMs: ({ event }) => (event as { delayMs: number }).delayMs }) } } },
      armed: { after: { ring: { target: 'counting', actions: assign({ rings: ({ context }) => context.rings + 1 }) } } },
    },
  }),
});
