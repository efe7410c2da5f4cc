// What a write leads to goes out even when its effects were cut short right after the write (here
// a hook that throws after it, as a crash or a failing publish would): the retry or the next owner
// repairs the write from the record.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

/** GO starts a 200 ms timer; NOTE, in the same write, is a transition after it; PING does nothing. */
const waiter = defineWorkflow({
  name: 'waiter',
  version: 1,
  input: z.object({}),
  events: { GO: z.object({}), NOTE: z.object({}), PING: z.object({}) },
  machine: setup({ types: {} as { context: { notes: number }; events: { type: 'GO' } | { type: 'NOTE' } | { type: 'PING' } } }).createMachine({
    context: { notes: 0 },
    initial: 'idle',
    states: {
      idle: { on: { GO: 'waiting', PING: {} } },
      waiting: { after: { 200: 'done' }, on: { NOTE: { actions: assign({ notes: ({ context }) => context.notes + 1 }) } } },
      done: { type: 'final' },
    },
  }),
});

/** An activity run in process; its outcome's write starts a 200 ms timer. */
const cooler = defineWorkflow({
  name: 'cooler',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({ actors: { quick: activity(async () => 1) } }).createMachine({
    initial: 'working',
    states: {
      working: { invoke: { src: 'quick', onDone: 'cooling' } },
      cooling: { after: { 200: 'done' } },
      done: { type: 'final' },
    },
  }),
});

describe('a write whose effects were cut short', () => {
  const suite = natsForSuite();

  it('a timer set by an earlier transition of the same write is published by the repair', async () => {
    const namespace = uniqueNamespace('repairtimer');
    const options = { servers: suite.nats.url, namespace, workflows: [waiter], logger: memoryLogger() };
    const first = await createEngine(options);
    const client = await createClient(options);
    let second: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(waiter, { id: 'w1', input: {} });
      await first.close();
      // Read by the next engine as a backlog: GO is applied in a batch with NOTE after it (the
      // first batch may take only the first PING), so GO's timer (token 22) is not the revision
      // of the write that holds it.
      for (let i = 0; i < 20; i++) await client.send(waiter, 'w1', { type: 'PING' });
      await client.send(waiter, 'w1', { type: 'GO' });
      await client.send(waiter, 'w1', { type: 'NOTE' });
      const goRevision = 22;
      let cut = false;
      const writes: number[] = [];
      second = await createEngine({
        ...options,
        testHooks: {
          afterStateWrite: (key, revision) => {
            if (key === 'waiter.w1') writes.push(revision);
            if (key === 'waiter.w1' && revision > goRevision && !cut) {
              cut = true;
              throw new Error('cut short after the write');
            }
          },
        },
      });
      const done = await client.waitFor(waiter, 'w1', (i) => i.status === 'done', { timeoutMs: 10_000 });
      assert.equal(cut, true, 'the write was cut short');
      assert.ok(!writes.includes(goRevision), `GO and NOTE in one write: ${JSON.stringify(writes)}`);
      assert.equal(done.context.notes, 1);
    } finally {
      await second?.close();
      await client.close();
      await first.close().catch(() => {});
    }
  });

  it('the write of an in-process task outcome is repaired when it is retried', async () => {
    const namespace = uniqueNamespace('repairlocal');
    let cut = false;
    const options = { servers: suite.nats.url, namespace, workflows: [cooler], logger: memoryLogger() };
    const engine = await createEngine({
      ...options,
      testHooks: {
        afterStateWrite: (key, revision) => {
          if (key === 'cooler.c1' && revision === 2 && !cut) {
            cut = true;
            throw new Error('cut short after the write');
          }
        },
      },
    });
    const client = await createClient(options);
    try {
      await client.start(cooler, { id: 'c1', input: {} });
      await client.waitFor(cooler, 'c1', (i) => i.status === 'done', { timeoutMs: 10_000 });
      assert.equal(cut, true, 'the outcome write was cut short');
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('the write of an in-process task outcome that lands but whose acknowledgement is lost is repaired when retried', async () => {
    const namespace = uniqueNamespace('repairlost');
    const options = { servers: suite.nats.url, namespace, workflows: [cooler], logger: memoryLogger() };
    const engine = await createEngine(options);
    // The record write of the outcome (revision 2) is stored, and then its answer is lost (a
    // timeout): whether it landed is unknown to the engine, which retries the batch.
    const records = (engine as unknown as { rt: { records: { update(key: string, value: Uint8Array, revision: number): Promise<number> } } }).rt.records;
    const update = records.update.bind(records);
    let lost = false;
    records.update = async (key, value, revision) => {
      const seq = await update(key, value, revision);
      if (key === 'cooler.c1' && !lost) {
        lost = true;
        throw Object.assign(new Error('timeout'), { name: 'TimeoutError' });
      }
      return seq;
    };
    const client = await createClient(options);
    try {
      await client.start(cooler, { id: 'c1', input: {} });
      await client.waitFor(cooler, 'c1', (i) => i.status === 'done', { timeoutMs: 10_000 });
      assert.equal(lost, true, "the outcome write's answer was lost");
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
