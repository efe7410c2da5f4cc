// A send waiting for its target's stream when its engine loses the sender's partition is left to
// the partition's next owner: an engine that no longer owns the instance must not deliver it.
// Both would otherwise send it, each at its own time, and two sends further apart than the events
// stream's duplicate window are both applied.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { setup } from 'xstate';
import { z } from 'zod';
import { createClient, createEngine, defineWorkflow, sendToInstance } from '../../engine/index.js';
import { layout, partitionOf } from '../../engine/internal.js';
import { encodeJson } from '../../engine/protocol/json.js';
import { counter } from '../counter-workflow.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const PARTITIONS = 4;

/** GO sends ADD 1 to counter 'a'. */
const pinger = defineWorkflow({
  name: 'pinger',
  version: 1,
  input: z.object({}),
  events: { GO: z.object({}) },
  machine: setup({}).createMachine({
    initial: 'up',
    states: { up: { on: { GO: { actions: sendToInstance({ workflow: 'counter', id: 'a' }, { type: 'ADD', k: 1 } as never) } } } },
  }),
});

describe('a send waiting for its target when its engine loses the partition', () => {
  const suite = natsForSuite();

  it('is left to the next owner, not delivered by the engine that lost it', async () => {
    const namespace = uniqueNamespace('deliverylost');
    const names = layout(namespace);
    const logger = memoryLogger();
    const options = { servers: suite.nats.url, namespace, workflows: [counter, pinger], partitions: PARTITIONS };
    const one = await createEngine({ ...options, logger, duplicateWindowMs: 300, leaseTtlMs: 1_000, drainTimeoutMs: 500 });
    const client = await createClient(options);
    const jsm = await jetstreamManager(suite.nc);
    const stream = names.eventStream('counter', partitionOf('counter', 'a', PARTITIONS));
    let renewing: NodeJS.Timeout | undefined;
    try {
      await client.start(counter, { id: 'a', input: { label: 'a' } });
      await client.start(pinger, { id: 'p', input: {} });
      const config = (await jsm.streams.info(stream)).config;
      await jsm.streams.update(stream, { ...config, subjects: [`${namespace}.parked.counter`] });
      await client.send(pinger, 'p', { type: 'GO' });
      await eventually(() => assert.ok(logger.lines.some((l) => l.includes('not stored yet'))), 10_000);
      // Another engine takes the sender's partition, and keeps it: this engine's renewal finds the lease moved on.
      const control = await new Kvm(suite.nc).open(names.controlBucket);
      const leaseKey = names.leaseKey('pinger', partitionOf('pinger', 'p', PARTITIONS));
      const renew = () => control.put(leaseKey, encodeJson({ owner: 'another-engine', checkpoint: 0, safe: 0, ttlMs: 1_000 }));
      await renew();
      renewing = setInterval(() => void renew().catch(() => {}), 200);
      await eventually(() => assert.ok(logger.lines.some((l) => l.includes('lease lost'))), 10_000);
      await jsm.streams.update(stream, config);
      await sleep(6_000); // longer than the longest wait between two tries
      assert.equal((await client.get(counter, 'a'))!.context.n, 0, 'the engine that lost the partition does not deliver the send');
      // The other engine goes: the partition's next owner sends it, once.
      clearInterval(renewing);
      await control.delete(leaseKey);
      await client.waitFor(counter, 'a', (i) => i.context.n === 1, { timeoutMs: 15_000 });
      await sleep(500);
      assert.equal((await client.get(counter, 'a'))!.context.n, 1, 'sent once');
    } finally {
      clearInterval(renewing);
      await client.close();
      await one.close().catch(() => {});
    }
  });
});
