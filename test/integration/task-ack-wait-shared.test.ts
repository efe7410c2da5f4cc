// Engines of one workflow share the tasks stream's durable consumer, each with its own
// acknowledgement wait (from its leaseTtlMs), and each keeps the messages it runs alive at a third
// of its own wait. An engine started with a shorter wait set the consumer's to it: a task running
// on the first engine came back after the shorter wait and ran a second time beside itself.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { createClient, createEngine, type Engine } from '../../engine/index.js';
import { memoryLogger, natsForSuite, oneTaskWorkflow, uniqueNamespace } from '../helpers.js';

const attempts: number[] = [];
let running!: () => void;
const firstRunning = new Promise<void>((r) => (running = r));

/** One activity of 3 s, run from the tasks stream (not in process). */
const slow = oneTaskWorkflow(
  'slow',
  async ({ attempt }) => {
    attempts.push(attempt);
    running();
    await new Promise((r) => setTimeout(r, 3_000));
    return 'ok';
  },
  { inProcess: false, timeoutMs: 60_000 },
);

describe('a second engine with a shorter acknowledgement wait', () => {
  const suite = natsForSuite();

  it("does not shorten the shared consumer's wait under a task the first engine runs", async () => {
    const namespace = uniqueNamespace('ackwait');
    const options = { servers: suite.nats.url, namespace, workflows: [slow], logger: memoryLogger() };
    const first = await createEngine({ ...options, localTasks: 0, leaseTtlMs: 30_000 });
    const client = await createClient(options);
    let second: Engine | undefined;
    try {
      await client.start(slow, { id: 's1', input: {} });
      await firstRunning;
      second = await createEngine({ ...options, localTasks: 0, leaseTtlMs: 1_000 });
      await client.waitFor(slow, 's1', (i) => i.status === 'done', { timeoutMs: 20_000 });
      assert.deepEqual(attempts, [1], 'one attempt, on one engine');
      const nc = await connect({ servers: suite.nats.url });
      try {
        const consumers = await (await jetstreamManager(nc)).consumers.list(`${namespace}_tasks`).next();
        assert.deepEqual(
          consumers.map((c) => c.config.ack_wait),
          [30_000 * 1_000_000],
          'the longest wait an engine asked for',
        );
      } finally {
        await nc.close();
      }
    } finally {
      await client.close();
      await second?.close();
      await first.close();
    }
  });
});
