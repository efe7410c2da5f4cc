// Durable tasks: invoked activities run after the state is written, retry with backoff, stop on a
// terminal error, time out, notice a missing heartbeat, abort when their state is exited, and
// reach the instance as xstate.done.actor / xstate.error.actor exactly once.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow, TerminalError, type ActivityContext, type Engine } from '../../engine/index.js';
import { startNats, uniqueNamespace } from '../helpers.js';

type Input = { mode: string; n: number };
const attempts = new Map<string, Array<{ attempt: number; atMs: number; key: string }>>();
const aborted = new Set<string>();

async function work(ctx: ActivityContext<Input>): Promise<unknown> {
  const { mode, n } = ctx.input;
  const log = attempts.get(`${mode}-${n}`) ?? [];
  attempts.set(`${mode}-${n}`, log);
  log.push({ attempt: ctx.attempt, atMs: Date.now(), key: ctx.idempotencyKey });
  switch (mode) {
    case 'ok':
      return { doubled: n * 2 };
    case 'flaky':
      if (ctx.attempt < 3) throw new Error(`flaky failure ${ctx.attempt}`);
      return { doubled: n * 2 };
    case 'fail':
      throw new Error('always fails');
    case 'terminal':
      throw new TerminalError('card declined');
    default: // 'hang': waits until aborted
      return new Promise((_, reject) =>
        ctx.signal.addEventListener('abort', () => {
          aborted.add(`${mode}-${n}`);
          reject(ctx.signal.reason);
        }),
      );
  }
}

const job = defineWorkflow({
  name: 'job',
  version: 1,
  input: z.object({ mode: z.string(), n: z.number() }),
  events: { CANCEL: z.object({}) },
  machine: setup({
    types: { context: {} as Input & { result?: unknown; error?: string }, input: {} as Input },
    actors: {
      work: activity(work, { retry: { maxAttempts: 3, initialIntervalMs: 150, backoffCoefficient: 2, jitter: 0 }, timeoutMs: 5_000 }),
      slow: activity(work, { retry: { maxAttempts: 2, initialIntervalMs: 50, jitter: 0 }, timeoutMs: 200 }),
      silent: activity(work, { retry: { maxAttempts: 1 }, heartbeatTimeoutMs: 300, timeoutMs: 5_000 }),
    },
  }).createMachine({
    context: ({ input }) => ({ ...input }),
    initial: 'route',
    states: {
      route: {
        always: [
          { guard: ({ context }) => context.mode === 'slow', target: 'slow' },
          { guard: ({ context }) => context.mode === 'silent', target: 'silent' },
          { target: 'working' },
        ],
      },
      working: {
        invoke: {
          id: 'work',
          src: 'work',
          input: ({ context }) => ({ mode: context.mode, n: context.n }),
          onDone: { target: 'done', actions: assign({ result: ({ event }) => event.output }) },
          onError: { target: 'failed', actions: assign({ error: ({ event }) => (event.error as { message: string }).message }) },
        },
        on: { CANCEL: 'cancelled' },
      },
      slow: {
        invoke: {
          id: 'slow',
          src: 'slow',
          input: () => ({ mode: 'hang', n: 1 }),
          onError: { target: 'failed', actions: assign({ error: ({ event }) => (event.error as { message: string }).message }) },
        },
      },
      silent: {
        invoke: {
          id: 'silent',
          src: 'silent',
          input: () => ({ mode: 'hang', n: 2 }),
          onError: { target: 'failed', actions: assign({ error: ({ event }) => (event.error as { message: string }).message }) },
        },
      },
      done: { type: 'final' },
      failed: { type: 'final' },
      cancelled: { type: 'final' },
    },
  }),
});

describe('durable tasks', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace: uniqueNamespace('tasks'), workflows: [job], leaseTtlMs: 1_000 });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  const ctx = (inst: { context: unknown }) => inst.context as Input & { result?: unknown; error?: string };

  it('runs an activity and delivers its output as xstate.done.actor', async () => {
    const started = await engine.start(job, { id: 'ok', input: { mode: 'ok', n: 21 } });
    // Run in this process right after the start's write, the task may be done already.
    if (started.revision === 1)
      assert.deepEqual(
        started.tasks.map((t) => [t.id, t.src]),
        [['work', 'work']],
      );
    const done = await engine.waitFor(job, 'ok', (s) => s.status === 'done', { timeoutMs: 5_000 });
    assert.deepEqual(ctx(done).result, { doubled: 42 });
    assert.deepEqual(done.tasks, []);
    assert.equal(done.revision, 2);
    assert.equal(attempts.get('ok-21')!.length, 1);
    assert.equal((await engine.verify(job, 'ok')).ok, true);
  });

  it('retries with exponential backoff and one idempotency key', async () => {
    await engine.start(job, { id: 'flaky', input: { mode: 'flaky', n: 1 } });
    const seen = await (async () => {
      for (let i = 0; i < 100; i++) {
        const t = (await engine.get(job, 'flaky'))?.tasks[0];
        if (t?.attempt) return t;
        await new Promise((r) => setTimeout(r, 20));
      }
      return undefined;
    })();
    assert.equal(seen?.lastError, `flaky failure ${seen?.attempt}`, 'get() shows the failed attempt');
    const done = await engine.waitFor(job, 'flaky', (s) => s.status === 'done', { timeoutMs: 10_000 });
    assert.deepEqual(ctx(done).result, { doubled: 2 });
    const log = attempts.get('flaky-1')!;
    assert.deepEqual(
      log.map((l) => l.attempt),
      [1, 2, 3],
    );
    assert.equal(new Set(log.map((l) => l.key)).size, 1);
    const gaps = [log[1]!.atMs - log[0]!.atMs, log[2]!.atMs - log[1]!.atMs];
    assert.ok(gaps[0]! >= 140 && gaps[0]! < 1_000, `first retry after ${gaps[0]} ms, want about 150`);
    assert.ok(gaps[1]! >= 290 && gaps[1]! < 1_500, `second retry after ${gaps[1]} ms, want about 300`);
    assert.equal(done.revision, 2);
  });

  it('fails the invocation after the last attempt, and at once on a terminal error', async () => {
    await engine.start(job, { id: 'fail', input: { mode: 'fail', n: 1 } });
    await engine.start(job, { id: 'terminal', input: { mode: 'terminal', n: 1 } });
    const failed = await engine.waitFor(job, 'fail', (s) => s.matches('failed'), { timeoutMs: 10_000 });
    assert.equal(ctx(failed).error, 'always fails');
    assert.equal(attempts.get('fail-1')!.length, 3);
    const terminal = await engine.waitFor(job, 'terminal', (s) => s.matches('failed'), { timeoutMs: 5_000 });
    assert.equal(ctx(terminal).error, 'card declined');
    assert.equal(attempts.get('terminal-1')!.length, 1);
  });

  it('detects a timed-out attempt and a lost heartbeat', async () => {
    await engine.start(job, { id: 'slow', input: { mode: 'slow', n: 0 } });
    await engine.start(job, { id: 'silent', input: { mode: 'silent', n: 0 } });
    const slow = await engine.waitFor(job, 'slow', (s) => s.matches('failed'), { timeoutMs: 10_000 });
    assert.match(ctx(slow).error!, /attempt 2 timed out after 200 ms/);
    const silent = await engine.waitFor(job, 'silent', (s) => s.matches('failed'), { timeoutMs: 10_000 });
    assert.match(ctx(silent).error!, /sent no heartbeat for 300 ms/);
  });

  it('aborts the running attempt when the invoking state is exited; its outcome changes nothing', async () => {
    await engine.start(job, { id: 'hang', input: { mode: 'hang', n: 7 } });
    const deadline = Date.now() + 5_000;
    while (!attempts.has('hang-7') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await engine.send(job, 'hang', { type: 'CANCEL' });
    const cancelled = await engine.waitFor(job, 'hang', (s) => s.matches('cancelled'), { timeoutMs: 5_000 });
    const until = Date.now() + 5_000;
    while (!aborted.has('hang-7') && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    assert.ok(aborted.has('hang-7'), 'the attempt saw its signal abort');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await engine.get(job, 'hang'))!.revision, cancelled.revision);
    assert.equal(attempts.get('hang-7')!.length, 1);
  });
});
