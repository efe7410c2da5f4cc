// An attempt that a closing engine interrupts does not count: the engine that takes the task over
// runs it as the same attempt, for a task run in process and for one run from the tasks stream.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow, type ActivityContext, type Engine } from '../../engine/index.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';

const seen: Array<{ id: string; attempt: number }> = [];

/** The first attempt of each instance waits until it is aborted; later ones return at once. */
async function patient(ctx: ActivityContext<unknown>): Promise<string> {
  seen.push({ id: ctx.task.id, attempt: ctx.attempt });
  if (seen.filter((s) => s.id === ctx.task.id).length > 1) return 'done';
  return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), { once: true }));
}

const chore = defineWorkflow({
  name: 'chore',
  version: 1,
  input: z.object({ streamed: z.boolean() }),
  events: {},
  machine: setup({
    types: { context: {} as { streamed: boolean }, input: {} as { streamed: boolean } },
    actors: {
      // In process (the default), and from the tasks stream (it heartbeats).
      local: activity(patient, { retry: { maxAttempts: 1 } }),
      streamed: activity(patient, { retry: { maxAttempts: 1 }, heartbeatTimeoutMs: 60_000 }),
    },
  }).createMachine({
    context: ({ input }) => ({ streamed: input.streamed }),
    initial: 'route',
    states: {
      route: { always: [{ guard: ({ context }) => context.streamed, target: 'streamed' }, { target: 'local' }] },
      local: { invoke: { src: 'local', onDone: 'done', onError: 'failed' } },
      streamed: { invoke: { src: 'streamed', onDone: 'done', onError: 'failed' } },
      done: { type: 'final' },
      failed: { type: 'final' },
    },
  }),
});

describe('an attempt a closing engine interrupted does not count', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await nats?.dispose();
  });

  for (const kind of ['local', 'streamed'] as const) {
    it(`${kind === 'local' ? 'in process' : 'from the tasks stream'}: the next engine runs attempt 1 of 1, and the task succeeds`, async () => {
      const namespace = uniqueNamespace(`attempts${kind}`);
      const options = { servers: nats.url, namespace, workflows: [chore], leaseTtlMs: 1_000, drainTimeoutMs: 300, localHoldMs: 60_000 };
      const first: Engine = await createEngine(options);
      const id = `c-${kind}`;
      let second: Engine | undefined;
      try {
        await first.start(chore, { id, input: { streamed: kind === 'streamed' } });
        await eventually(() =>
          assert.ok(
            seen.some((s) => s.id === id),
            'the first attempt started',
          ),
        );
        await first.close(); // interrupts it after the drain
        second = await createEngine(options);
        const end = await second.waitFor(chore, id, (i) => i.status !== 'running', { timeoutMs: 30_000 });
        assert.equal(end.value, 'done', `attempts: ${JSON.stringify(seen.filter((s) => s.id === id))}`);
        assert.deepEqual(
          seen.filter((s) => s.id === id).map((s) => s.attempt),
          [1, 1],
        );
      } finally {
        await second?.close();
      }
    });
  }
});
