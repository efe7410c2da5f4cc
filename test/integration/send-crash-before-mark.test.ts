// A send stored by its target's stream, then its sender's engine gone before it could record so
// (a crash between the send's acknowledgement and the record written without its outbox): the
// next owner, later than the duplicate window, runs the outbox again, and the target must not
// apply the send a second time. The stream's message ids no longer help by then; the target
// remembers, per sender instance, the newest send it applied.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { assign, sendTo, setup } from 'xstate';
import { z } from 'zod';
import { createClient, createEngine, defineWorkflow, sendToInstance } from '../../engine/index.js';
import { counter } from '../counter-workflow.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

/** POKE { k } sends ADD { k } to counter c1. */
const poker = defineWorkflow({
  name: 'poker',
  version: 1,
  input: z.object({}),
  events: { POKE: z.object({ k: z.number() }) },
  machine: setup({ types: {} as { events: { type: 'POKE'; k: number } } }).createMachine({
    initial: 'up',
    states: {
      up: {
        on: {
          POKE: { actions: sendToInstance({ workflow: 'counter', id: 'c1' }, ({ event }) => ({ type: 'ADD', k: event.k })) },
        },
      },
    },
  }),
});

/** KICK { k } sends ADD { k } to itself (sendTo self: a signed jetstate.self event); ADD adds to n. */
const kicker = defineWorkflow({
  name: 'kicker',
  version: 1,
  input: z.object({}),
  events: { KICK: z.object({ k: z.number() }), ADD: z.object({ k: z.number() }) },
  machine: setup({ types: {} as { context: { n: number }; events: { type: 'KICK'; k: number } | { type: 'ADD'; k: number } } }).createMachine({
    context: { n: 0 },
    initial: 'up',
    states: {
      up: {
        on: {
          KICK: {
            actions: sendTo(
              ({ self }) => self,
              ({ event }) => ({ type: 'ADD', k: event.k }),
            ),
          },
          ADD: { actions: assign({ n: ({ context, event }) => context.n + event.k }) },
        },
      },
    },
  }),
});

describe('a send stored, then its engine gone before the record says so', () => {
  const suite = natsForSuite();

  it('is applied once when the next owner sends it again later than the duplicate window', async () => {
    const namespace = uniqueNamespace('sendcrash');
    const options = { servers: suite.nats.url, namespace, workflows: [counter, poker], partitions: 1, logger: memoryLogger() };
    let marks = 0;
    const first = await createEngine({
      ...options,
      duplicateWindowMs: 300,
      leaseTtlMs: 1_000,
      drainTimeoutMs: 300,
      // The engine stands still right after the send's acknowledgement, as a crashed one would.
      testHooks: { beforeOutboxMark: (key) => (key === 'poker.p1' && ++marks === 1 ? new Promise<void>(() => {}) : undefined) },
    });
    const client = await createClient(options);
    let second: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(counter, { id: 'c1', input: { label: 'target' } });
      await client.start(poker, { id: 'p1', input: {} });
      await client.send(poker, 'p1', { type: 'POKE', k: 1 });
      await client.waitFor(counter, 'c1', (i) => i.context.n === 1, { timeoutMs: 10_000 });
      await first.close();

      // Later than the duplicate window, the next owner reads POKE again and runs its outbox.
      await sleep(1_000);
      second = await createEngine({ ...options, leaseTtlMs: 1_000 });
      await client.waitFor(poker, 'p1', (i) => i.revision >= 2, { timeoutMs: 10_000 });
      await client.send(poker, 'p1', { type: 'POKE', k: 10 });
      const done = await client.waitFor(counter, 'c1', (i) => i.context.n >= 11, { timeoutMs: 15_000 });
      assert.equal(done.context.n, 11, 'ADD 1 applied once, then ADD 10');
    } finally {
      await second?.close();
      await client.close();
      await first.close().catch(() => {});
    }
  });

  it('to the instance itself (sendTo self) is applied once too', async () => {
    const namespace = uniqueNamespace('selfcrash');
    const options = { servers: suite.nats.url, namespace, workflows: [kicker], partitions: 1, logger: memoryLogger() };
    let marks = 0;
    const first = await createEngine({
      ...options,
      duplicateWindowMs: 300,
      leaseTtlMs: 1_000,
      drainTimeoutMs: 300,
      testHooks: { beforeOutboxMark: (key) => (key === 'kicker.k1' && ++marks === 1 ? new Promise<void>(() => {}) : undefined) },
    });
    const client = await createClient(options);
    let second: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(kicker, { id: 'k1', input: {} });
      await client.send(kicker, 'k1', { type: 'KICK', k: 1 });
      await sleep(500); // the self-send is stored; the engine stands still before its mark
      await first.close();
      await sleep(1_000);
      second = await createEngine({ ...options, leaseTtlMs: 1_000 });
      await client.send(kicker, 'k1', { type: 'ADD', k: 10 });
      const done = await client.waitFor(kicker, 'k1', (i) => i.context.n >= 11, { timeoutMs: 15_000 });
      await sleep(300);
      assert.equal((await client.get(kicker, 'k1'))!.context.n, 11, 'ADD 1 applied once, then ADD 10');
      assert.equal(done.context.n, 11);
    } finally {
      await second?.close();
      await client.close();
      await first.close().catch(() => {});
    }
  });
});
