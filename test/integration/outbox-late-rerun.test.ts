// A send is delivered once even when its sender's last event is read again later than the
// events streams' duplicate window: a partition's checkpoint held behind an instance that waits
// for its version, then a new owner. The repair must not send again what was delivered (its
// `Nats-Msg-Id` is no longer remembered by then).
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { jetstream } from '@nats-io/jetstream';
import { setup } from 'xstate';
import { z } from 'zod';
import { createClient, createEngine, defineWorkflow, sendToInstance } from '../../engine/index.js';
import { layout, partitionOf } from '../../engine/internal.js';
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

describe('an outbox run again later than the duplicate window', () => {
  const suite = natsForSuite();

  it('does not deliver a send a second time', async () => {
    const namespace = uniqueNamespace('latererun');
    const options = { servers: suite.nats.url, namespace, workflows: [counter, poker], partitions: 1, logger: memoryLogger() };
    const first = await createEngine({ ...options, duplicateWindowMs: 300, leaseTtlMs: 1_000 });
    const client = await createClient(options);
    let second: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(counter, { id: 'c1', input: { label: 'target' } });
      // An instance of the sender's partition waits for a version no engine has: the
      // partition's checkpoint stays before it.
      const partitions = first.status().partitions;
      const js = jetstream(suite.nc);
      const blocker = layout(namespace).eventSubject(partitionOf('poker', 'p0', partitions), 'poker', 'p0');
      assert.equal(partitionOf('poker', 'p0', partitions), partitionOf('poker', 'p1', partitions), 'one partition');
      await js.publish(blocker, JSON.stringify({ type: 'jetstate.start', input: {}, version: 99 }));

      await client.start(poker, { id: 'p1', input: {} });
      await client.send(poker, 'p1', { type: 'POKE', k: 1 });
      await client.waitFor(counter, 'c1', (i) => i.context.n === 1, { timeoutMs: 10_000 });
      await first.close();

      // Later than the duplicate window, a new owner reads the partition from its checkpoint:
      // p1's POKE again, its last applied event.
      await sleep(1_000);
      second = await createEngine({ ...options, leaseTtlMs: 1_000 });
      await client.send(poker, 'p1', { type: 'POKE', k: 10 });
      const done = await client.waitFor(counter, 'c1', (i) => i.context.n >= 11, { timeoutMs: 15_000 });
      assert.equal(done.context.n, 11, 'ADD 1 applied once, then ADD 10');
    } finally {
      await second?.close();
      await client.close();
      await first.close().catch(() => {});
    }
  });
});
