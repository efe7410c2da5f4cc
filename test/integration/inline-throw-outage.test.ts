// An inline action that throws fails its instance by an event of its own (`jetstate.fail`), sent
// after the write that ran it. That event was tried four times over about 2 s and then dropped with
// an error logged: an instance whose events stream refused it for longer (a leader election takes
// 4-8 s) stayed `running`, as if the action had succeeded. It is now sent until its stream stores it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, refuseFor, uniqueNamespace } from '../helpers.js';

/** Set by the test: makes the instance's events stream refuse publishes for a while. */
let outage: (() => Promise<void>) | undefined;

const brittle = defineWorkflow({
  name: 'brittle',
  version: 1,
  input: z.object({}),
  events: { GO: z.object({}) },
  machine: setup({}).createMachine({
    initial: 'idle',
    states: {
      idle: {
        on: {
          GO: {
            actions: async () => {
              await outage?.();
              throw new Error('the check failed');
            },
          },
        },
      },
    },
  }),
});

describe('an inline action that throws while its stream refuses publishes', () => {
  const suite = natsForSuite();

  it('fails the instance once the stream takes the failure', { timeout: 60_000 }, async () => {
    const namespace = uniqueNamespace('inlinethrow');
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [brittle], partitions: 1, logger: memoryLogger() });
    outage = async () => {
      outage = undefined;
      // Full for 4 s: the failure's publish is refused.
      await refuseFor(suite.nc, `${namespace}_evt_brittle_0`, 4_000);
    };
    try {
      await engine.start(brittle, { id: 'b1', input: {} });
      await engine.send(brittle, 'b1', { type: 'GO' });
      const ended = await engine.waitFor(brittle, 'b1', (i) => i.status !== 'running', { timeoutMs: 30_000 }).catch(async () => engine.get(brittle, 'b1'));
      assert.equal(ended?.status, 'failed', `the instance failed (status ${ended?.status})`);
      assert.match(ended?.error ?? '', /the check failed/);
    } finally {
      await engine.close();
    }
  });
});
