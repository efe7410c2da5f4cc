/** A workflow whose activity logs each attempt to a file and takes a while, heartbeating. */
import { appendFileSync } from 'node:fs';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, defineWorkflow } from '../../engine/index.js';

export const relay = defineWorkflow({
  name: 'relay',
  version: 1,
  input: z.object({ parcel: z.string() }),
  events: { NOOP: z.object({}) },
  machine: setup({
    types: { context: {} as { parcel: string; shippedBy?: number }, input: {} as { parcel: string } },
    actors: {
      ship: activity(
        async ({ input, attempt, idempotencyKey, heartbeat, signal }) => {
          appendFileSync(
            process.env['TASK_LOG']!,
            JSON.stringify({ pid: process.pid, attempt, key: idempotencyKey, parcel: (input as { parcel: string }).parcel }) + '\n',
          );
          for (let i = 0; i < 15 && !signal.aborted; i++) {
            await new Promise((r) => setTimeout(r, 100));
            heartbeat();
          }
          return { by: process.pid };
        },
        { heartbeatTimeoutMs: 600, timeoutMs: 10_000, retry: { maxAttempts: 3, initialIntervalMs: 100 } },
      ),
    },
  }).createMachine({
    context: ({ input }) => ({ parcel: input.parcel }),
    initial: 'shipping',
    states: {
      shipping: {
        invoke: {
          id: 'ship',
          src: 'ship',
          input: ({ context }: { context: { parcel: string } }) => ({ parcel: context.parcel }),
          onDone: { target: 'shipped', actions: assign({ shippedBy: ({ event }) => (event.output as { by: number }).by }) },
        },
        on: { NOOP: {} },
      },
      shipped: { type: 'final' },
    },
  }),
});
