// A task run in process that outlives localHoldMs is handed to the tasks stream (claimed by its
// engine) with the attempt under way counted, so that an engine taking it over after this one died
// runs the next. When the engine then closes, the attempt it interrupts must not count (as for a
// task not yet handed over): its hand-over again, with one attempt fewer, had the same message id
// and was dropped as a duplicate, so a deploy used up a retry (with maxAttempts 2, one real
// failure then failed the task).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createEngine, type ActivityContext, type Engine } from '../../engine/index.js';
import { eventually, memoryLogger, natsForSuite, oneTaskWorkflow, uniqueNamespace } from '../helpers.js';

const seen: number[] = [];

/** The first run waits until it is aborted; later ones fail on attempt 2 and up, and succeed on attempt 1. */
async function patient(ctx: ActivityContext<unknown>): Promise<string> {
  seen.push(ctx.attempt);
  if (seen.length > 1) {
    if (ctx.attempt > 1) throw new Error('transient');
    return 'done';
  }
  return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), { once: true }));
}

const chore = oneTaskWorkflow('chore', patient, { retry: { maxAttempts: 2, initialIntervalMs: 100, maxIntervalMs: 100 } });

describe('an in-process task handed over, then interrupted by its engine closing', () => {
  const suite = natsForSuite();

  it('the next engine runs attempt 1 again', async () => {
    const namespace = uniqueNamespace('handint');
    const options = {
      servers: suite.nats.url,
      namespace,
      workflows: [chore],
      leaseTtlMs: 1_000,
      drainTimeoutMs: 300,
      localHoldMs: 300,
      logger: memoryLogger(),
    };
    const first: Engine = await createEngine(options);
    let second: Engine | undefined;
    try {
      await first.start(chore, { id: 'c1', input: {} });
      await eventually(() => assert.equal(seen.length, 1));
      // Past localHoldMs: handed over, claimed by the first engine.
      await new Promise((r) => setTimeout(r, 800));
      await first.close();
      second = await createEngine(options);
      const end = await second.waitFor(chore, 'c1', (i) => i.status !== 'running', { timeoutMs: 30_000 });
      assert.deepEqual(seen, [1, 1], 'the interrupted attempt does not count');
      assert.equal(end.value, 'done');
    } finally {
      await second?.close();
      await first.close();
    }
  });
});
