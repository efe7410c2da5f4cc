// A task's progress (attempts, when to retry, its last error) belongs to one instance: an id
// deleted and started again begins its task at attempt 1, not where the earlier instance left off.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createEngine, type Engine } from '../../engine/index.js';
import { eventually, oneTaskWorkflow, startNats, uniqueNamespace } from '../helpers.js';

const attempts: number[] = [];

const flaky = oneTaskWorkflow(
  'flaky',
  async (ctx) => {
    attempts.push(ctx.attempt);
    throw new Error('down');
  },
  { retry: { maxAttempts: 2, initialIntervalMs: 2_000, jitter: 0 }, heartbeatTimeoutMs: 60_000 },
);

describe('an instance id used again', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine | undefined;
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it("starts its task at attempt 1, whatever the deleted instance's task had done", async () => {
    engine = await createEngine({ servers: nats.url, namespace: uniqueNamespace('reused'), workflows: [flaky], leaseTtlMs: 1_000 });
    await engine.start(flaky, { id: 'f1', input: {} });
    await eventually(() => assert.deepEqual(attempts, [1]), 10_000);
    // Stopped and deleted while its task waits for attempt 2.
    await engine.terminate(flaky, 'f1');
    await engine.waitFor(flaky, 'f1', (i) => i.status !== 'running', { timeoutMs: 10_000 });
    await engine.delete(flaky, 'f1');
    await eventually(async () => assert.equal(await engine!.get(flaky, 'f1'), null), 10_000);

    attempts.length = 0;
    await engine.start(flaky, { id: 'f1', input: {} });
    const end = await engine.waitFor(flaky, 'f1', (i) => i.status !== 'running', { timeoutMs: 20_000 });
    assert.equal(end.value, 'failed');
    assert.deepEqual(attempts, [1, 2], 'both attempts of the new instance');
  });
});
