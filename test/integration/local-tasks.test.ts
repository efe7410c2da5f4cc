// Tasks run in the engine's process (`activity({ inProcess })`, the default): a quick one's outcome
// is applied as a local event, without a round trip through the streams; one that outlives
// `localHoldMs` is handed to the tasks stream, and its outcome then comes back through the inbox
// (a stream event), so the write it causes is repaired after a crash like any other.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow, type ActivityContext, type Engine } from '../../engine/index.js';
import { startNats, uniqueNamespace } from '../helpers.js';

const runs = new Map<string, number>();
const count = (key: string): void => void runs.set(key, (runs.get(key) ?? 0) + 1);

const HOLD_MS = 100;

const chain = defineWorkflow({
  name: 'chain',
  version: 1,
  input: z.object({ slowMs: z.number() }),
  events: {},
  machine: setup({
    types: { context: {} as { slowMs: number; quick?: number; slow?: number }, input: {} as { slowMs: number } },
    actors: {
      quick: activity(async (ctx: ActivityContext<unknown>) => {
        count(`quick:${ctx.task.id}`);
        return 1;
      }),
      slow: activity(async (ctx: ActivityContext<{ ms: number }>) => {
        count(`slow:${ctx.task.id}`);
        await new Promise((r) => setTimeout(r, ctx.input.ms));
        return 2;
      }),
    },
  }).createMachine({
    context: ({ input }) => ({ slowMs: input.slowMs }),
    initial: 'first',
    states: {
      first: { invoke: { src: 'quick', onDone: { target: 'second', actions: assign({ quick: ({ event }) => event.output as number }) } } },
      second: {
        invoke: {
          src: 'slow',
          input: ({ context }) => ({ ms: context.slowMs }),
          onDone: { target: 'third', actions: assign({ slow: ({ event }) => event.output as number }) },
        },
      },
      third: { invoke: { src: 'quick', onDone: 'done' } },
      done: { type: 'final' },
    },
  }),
});

describe('tasks run in the engine process', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace: uniqueNamespace('localtasks'), workflows: [chain], localHoldMs: HOLD_MS });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('applies a quick outcome locally, and one that outlived the hold through the stream, each task run once', async () => {
    await engine.start(chain, { id: 'c-1', input: { slowMs: HOLD_MS * 4 } });
    const done = await engine.waitFor(chain, 'c-1', (s) => s.status === 'done', { timeoutMs: 15_000 });
    assert.deepEqual(done.context, { slowMs: HOLD_MS * 4, quick: 1, slow: 2 });
    const outcomes = (await engine.history(chain, 'c-1')).filter((h) => h.kind === 'event');
    assert.equal(outcomes.length, 3, 'three task outcomes applied');
    const [first, second, third] = outcomes;
    assert.equal(first!.seq, 0, 'the quick task ran in process and its outcome was applied locally');
    assert.ok(second!.seq > 0, `the task that outlived the hold came back through the stream (seq ${second!.seq})`);
    assert.equal(third!.seq, 0, 'the next quick task ran in process again');
    // The hand-over published the slow task, claimed by this engine: it must not run a second time.
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(runs.get('slow:c-1'), 1, 'the slow task ran once');
    assert.equal(runs.get('quick:c-1'), 2, 'each quick step ran once');
    assert.equal((await engine.verify(chain, 'c-1')).ok, true);
  });
});
