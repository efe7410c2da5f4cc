// An outbox only partly stored when its engine closed (one send stored, the next one waiting for
// its target's stream) is run again later than the duplicate window by the next owner: the send
// already stored is not sent a second time.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { setup } from 'xstate';
import { z } from 'zod';
import { createClient, createEngine, defineWorkflow, sendToInstance } from '../../engine/index.js';
import { layout, partitionOf } from '../../engine/internal.js';
import { counter } from '../counter-workflow.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const PARTITIONS = 4;
// Two counters in different partitions (so one's stream can be taken away alone).
const first = 'a';
const second = ['b', 'c', 'd', 'e', 'f', 'g'].find((id) => partitionOf('counter', id, PARTITIONS) !== partitionOf('counter', first, PARTITIONS))!;

/** GO sends ADD 1 to one counter, then to the other. */
const fan = defineWorkflow({
  name: 'fan',
  version: 1,
  input: z.object({}),
  events: { GO: z.object({}) },
  machine: setup({}).createMachine({
    initial: 'up',
    states: {
      up: {
        on: {
          GO: {
            actions: [
              sendToInstance({ workflow: 'counter', id: first }, { type: 'ADD', k: 1 } as never),
              sendToInstance({ workflow: 'counter', id: second }, { type: 'ADD', k: 1 } as never),
            ],
          },
        },
      },
    },
  }),
});

describe('an outbox partly stored when its engine closed', () => {
  const suite = natsForSuite();

  it('is run again without what was stored', async () => {
    const namespace = uniqueNamespace('partlystored');
    const options = { servers: suite.nats.url, namespace, workflows: [counter, fan], partitions: PARTITIONS, logger: memoryLogger() };
    const one = await createEngine({ ...options, duplicateWindowMs: 300, leaseTtlMs: 1_000, drainTimeoutMs: 500 });
    const client = await createClient(options);
    const jsm = await jetstreamManager(suite.nc);
    const stream = layout(namespace).eventStream('counter', partitionOf('counter', second, PARTITIONS));
    let two: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(counter, { id: first, input: { label: 'first' } });
      await client.start(counter, { id: second, input: { label: 'second' } });
      await client.start(fan, { id: 'f1', input: {} });
      const config = (await jsm.streams.info(stream)).config;
      await jsm.streams.update(stream, { ...config, subjects: [`${namespace}.parked.counter`] });
      await client.send(fan, 'f1', { type: 'GO' });
      await client.waitFor(counter, first, (i) => i.context.n === 1, { timeoutMs: 10_000 });
      await sleep(500); // the second send waits for its stream
      await one.close();
      await sleep(1_000); // later than the duplicate window
      await jsm.streams.update(stream, config);
      two = await createEngine({ ...options, leaseTtlMs: 1_000 });
      await client.waitFor(counter, second, (i) => i.context.n === 1, { timeoutMs: 15_000 });
      await sleep(500);
      assert.equal((await client.get(counter, first))!.context.n, 1, 'the send stored before the close is not sent again');
    } finally {
      await two?.close();
      await client.close();
      await one.close().catch(() => {});
    }
  });
});
