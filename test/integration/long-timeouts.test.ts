// Timeouts longer than Node's longest timer (2^31 - 1 ms, about 24.8 days): Node runs a longer
// setTimeout after 1 ms, so an activity with a 30-day timeout used to time out at once on every
// attempt, and waitFor() with a 30-day timeout stopped its watch at once, over and over.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow, type Engine } from '../../engine/index.js';
import { longTimeout, MAX_TIMER_MS } from '../../engine/clock.js';
import { memoryLogger, startNats, uniqueNamespace } from '../helpers.js';

const DAYS_30 = 30 * 24 * 3_600_000;
const attempts: number[] = [];

const review = defineWorkflow({
  name: 'review',
  version: 1,
  input: z.object({}),
  events: { APPROVE: z.object({}) },
  machine: setup({
    types: { context: {} as { verdict?: string; heartbeat?: string } },
    actors: {
      // In process, 30-day attempt timeout.
      judge: activity(
        async ({ attempt }) => {
          attempts.push(attempt);
          await new Promise((r) => setTimeout(r, 300));
          return 'fair';
        },
        { timeoutMs: DAYS_30, retry: { maxAttempts: 1 } },
      ),
      // Through the tasks stream (it heartbeats), 30-day heartbeat and attempt timeouts.
      watch: activity(
        async ({ heartbeat }) => {
          await new Promise((r) => setTimeout(r, 300));
          heartbeat();
          return 'calm';
        },
        { timeoutMs: DAYS_30, heartbeatTimeoutMs: DAYS_30, retry: { maxAttempts: 1 } },
      ),
    },
  }).createMachine({
    initial: 'judging',
    states: {
      judging: { invoke: { src: 'judge', onDone: { target: 'watching', actions: assign({ verdict: ({ event }) => event.output as string }) } } },
      watching: { invoke: { src: 'watch', onDone: { target: 'waiting', actions: assign({ heartbeat: ({ event }) => event.output as string }) } } },
      waiting: { on: { APPROVE: 'approved' } },
      approved: { type: 'final' },
    },
  }),
});

describe('timeouts longer than Node’s longest timer', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  const logger = memoryLogger();
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
  before(async () => {
    process.on('warning', onWarning);
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace: uniqueNamespace('longtimeouts'), workflows: [review], logger });
  });
  after(async () => {
    process.off('warning', onWarning);
    await engine?.close();
    await nats?.dispose();
  });

  it('an activity with a 30-day attempt and heartbeat timeout runs to its end, once', async () => {
    await engine.start(review, { id: 'r-1', input: {} });
    const waiting = await engine.waitFor(review, 'r-1', (i) => i.matches('waiting'), { timeoutMs: 20_000 });
    assert.deepEqual(waiting.context, { verdict: 'fair', heartbeat: 'calm' });
    assert.deepEqual(attempts, [1]);
    assert.deepEqual(
      logger.lines.filter((l) => /timed out|no heartbeat/.test(l)),
      [],
    );
  });

  it('waitFor() with a 30-day timeout waits for the state', async () => {
    const waited = engine.waitFor(review, 'r-1', (i) => i.status === 'done', { timeoutMs: DAYS_30 });
    await new Promise((r) => setTimeout(r, 300));
    await engine.send(review, 'r-1', { type: 'APPROVE' });
    assert.equal((await waited).value, 'approved');
    assert.deepEqual(
      warnings.filter((w) => w.startsWith('TimeoutOverflowWarning')),
      [],
    );
  });

  it('longTimeout() chains Node timers past the longest one, and cancels', async () => {
    // A delay past the longest timer is not run at once.
    let fired = false;
    const cancel = longTimeout(() => (fired = true), MAX_TIMER_MS + 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(fired, false);
    cancel();
    // A short one runs, a cancelled one does not.
    let short = 0;
    longTimeout(() => short++, 5);
    longTimeout(() => short++, 5)();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(short, 1);
  });
});
