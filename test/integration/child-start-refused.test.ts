// A child start its engine refuses (input its schema rejects, a first record over the size limit)
// is told to the parent, whose invoke gets an error: the parent waited for ever, with only a
// warning and a dead letter on the child's side.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { childWorkflow, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const charge = defineWorkflow({
  name: 'charge',
  version: 1,
  input: z.object({ amount: z.number().positive() }),
  events: {},
  machine: setup({}).createMachine({ initial: 'charged', states: { charged: { type: 'final' } } }),
});

const shop = defineWorkflow({
  name: 'shop',
  version: 1,
  input: z.object({ amount: z.number() }),
  events: {},
  machine: setup({
    types: { context: {} as { amount: number; error?: string }, input: {} as { amount: number } },
    actors: { charge: childWorkflow(charge) },
  }).createMachine({
    context: ({ input }) => ({ amount: input.amount }),
    initial: 'charging',
    states: {
      charging: {
        invoke: {
          id: 'pay',
          src: 'charge',
          input: ({ context }) => ({ amount: context.amount }),
          onDone: 'paid',
          onError: { target: 'failed', actions: assign({ error: ({ event }) => (event.error as { message?: string }).message }) },
        },
      },
      paid: { type: 'final' },
      failed: { type: 'final' },
    },
  }),
});

describe('a child start its engine refuses', () => {
  const suite = natsForSuite();

  it('reaches the parent as an error of its invoke', async () => {
    const namespace = uniqueNamespace('childrefused');
    const options = { servers: suite.nats.url, namespace, workflows: [shop, charge], logger: memoryLogger() };
    const engine = await createEngine(options);
    const client = await createClient(options);
    try {
      await client.start(shop, { id: 's-ok', input: { amount: 5 } });
      assert.equal((await client.waitFor(shop, 's-ok', (i) => i.status === 'done', { timeoutMs: 10_000 })).value, 'paid');
      // A negative amount: the child's input schema refuses its start.
      await client.start(shop, { id: 's-bad', input: { amount: -5 } });
      const failed = await client.waitFor(shop, 's-bad', (i) => i.status === 'done', { timeoutMs: 10_000 });
      assert.equal(failed.value, 'failed');
      assert.match(String(failed.context.error), /child workflow 'charge' instance 's-bad_pay' refused its start/);
      assert.match(String(failed.context.error), /input/);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it("reaches the parent as an error of its invoke also when the child's id is held by an instance already", async () => {
    const namespace = uniqueNamespace('childrefusedheld');
    const options = { servers: suite.nats.url, namespace, workflows: [shop, charge], logger: memoryLogger() };
    const engine = await createEngine(options);
    const client = await createClient(options);
    try {
      // The child's id is taken by an instance started on its own; the parent's start of it is
      // refused by the gate (its input), against that existing record.
      await client.start(charge, { id: 's-held_pay', input: { amount: 5 } });
      await client.start(shop, { id: 's-held', input: { amount: -5 } });
      const failed = await client.waitFor(shop, 's-held', (i) => i.status === 'done', { timeoutMs: 10_000 });
      assert.equal(failed.value, 'failed');
      assert.match(String(failed.context.error), /child workflow 'charge' instance 's-held_pay' refused its start/);
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
