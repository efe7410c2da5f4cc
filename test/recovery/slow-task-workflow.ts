/**
 * A workflow whose start invokes a slow activity with default options (no heartbeat): each
 * attempt appends `{ pid, attempt, atMs }` to the file named by $TASK_LOG, then takes
 * $SLOW_TASK_MS (default 4000) before it returns the pid that ran it. The recovery tests kill the
 * engine running the first attempt and measure how soon another engine takes the task over.
 */
import { appendFileSync } from 'node:fs';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, defineWorkflow } from '../../engine/index.js';

export interface SlowAttempt {
  pid: number;
  attempt: number;
  atMs: number;
  id: string;
}

export const chore = defineWorkflow({
  name: 'chore',
  version: 1,
  input: z.object({ label: z.string() }),
  events: { NOOP: z.object({}) },
  machine: setup({
    types: { input: {} as { label: string }, context: {} as { label: string; doneBy?: number } },
    actors: {
      slow: activity(async ({ input, attempt, signal, task }) => {
        const log = process.env['TASK_LOG'];
        if (log) appendFileSync(log, JSON.stringify({ pid: process.pid, attempt, atMs: Date.now(), id: task.id } satisfies SlowAttempt) + '\n');
        const ms = Number(process.env['SLOW_TASK_MS'] ?? 4_000);
        await new Promise<void>((ok, ko) => {
          const t = setTimeout(ok, ms);
          signal.addEventListener('abort', () => (clearTimeout(t), ko(signal.reason as Error)), { once: true });
        });
        return { by: process.pid, label: (input as { label: string }).label };
      }),
    },
  }).createMachine({
    id: 'chore',
    context: ({ input }) => ({ label: input.label }),
    initial: 'working',
    states: {
      working: {
        invoke: {
          id: 'slow',
          src: 'slow',
          input: ({ context }: { context: { label: string } }) => ({ label: context.label }),
          onDone: { target: 'finished', actions: assign({ doneBy: ({ event }) => (event.output as { by: number }).by }) },
        },
        on: { NOOP: {} },
      },
      finished: { type: 'final' },
    },
  }),
});
