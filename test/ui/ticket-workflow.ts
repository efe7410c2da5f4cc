/**
 * A support ticket for the web view's tests: a parallel state with two nested regions (triage and
 * its SLA timer), a final state, and rules on who may do what (every start and event needs a
 * token; closing needs the 'lead' role).
 */
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow, identityOf } from '../../engine/index.js';

export const ticket = defineWorkflow({
  name: 'ticket',
  version: 1,
  input: z.object({ title: z.string().min(1) }),
  events: {
    ASSIGN: z.object({ to: z.string().min(1) }),
    CLOSE: z.object({ note: z.string().default('') }),
  },
  requireIdentity: true,
  permissions: { start: ['agent'], events: { CLOSE: ['lead'] }, default: ['agent'] },
  machine: setup({
    types: {
      input: {} as { title: string },
      context: {} as { title: string; assignee?: string; closedBy?: string; note?: string },
      events: {} as { type: 'ASSIGN'; to: string } | { type: 'CLOSE'; note: string },
    },
  }).createMachine({
    id: 'ticket',
    initial: 'open',
    context: ({ input }) => ({ title: input.title }),
    states: {
      open: {
        type: 'parallel',
        on: { CLOSE: { target: 'closed', actions: assign({ closedBy: ({ event }) => identityOf(event)?.subject, note: ({ event }) => event.note }) } },
        states: {
          triage: {
            initial: 'new',
            states: {
              new: { on: { ASSIGN: { target: 'assigned', actions: assign({ assignee: ({ event }) => event.to }) } } },
              assigned: {},
            },
          },
          sla: { initial: 'ok', states: { ok: { after: { 3_600_000: 'breached' } }, breached: {} } },
        },
      },
      closed: { type: 'final' },
    },
  }),
});
