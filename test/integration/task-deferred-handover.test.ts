// An activity run in process that takes longer than the hold time (handed over to the tasks
// stream, claimed by this engine) and then defers its outcome to an extension is not run again
// from the stream: the extension delivers its outcome later (a Step Functions stage whose
// StartExecution took over a second was started twice).
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow, DEFER } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

let calls = 0;

const deferring = defineWorkflow({
  name: 'deferring',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({
    actors: {
      begin: activity(async () => {
        calls++;
        await sleep(800); // longer than the hold time below
        return DEFER as never;
      }),
    },
  }).createMachine({
    initial: 'running',
    states: { running: { invoke: { src: 'begin', onDone: 'done' } }, done: { type: 'final' } },
  }),
});

describe('an activity handed over while it ran, that defers its outcome', () => {
  const suite = natsForSuite();

  it('runs once', async () => {
    const namespace = uniqueNamespace('deferhandover');
    const options = { servers: suite.nats.url, namespace, workflows: [deferring], logger: memoryLogger() };
    const engine = await createEngine({ ...options, localHoldMs: 300 });
    const client = await createClient(options);
    try {
      await client.start(deferring, { id: 'd1', input: {} });
      await sleep(4_000);
      assert.equal(calls, 1, 'the activity ran once; its outcome comes from the extension');
      const inst = await client.get(deferring, 'd1');
      assert.equal(inst?.value, 'running', 'still waiting for the deferred outcome');
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
