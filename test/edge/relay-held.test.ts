// A relayed event the site cannot store for now (its stream is full) holds its instance's later
// events behind it, not the other instances': theirs are relayed once each, also when the hold
// lasts many duplicate windows, and once the site takes it again the held ones follow in order.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { z } from 'zod';
import { assign, setup } from 'xstate';
import { createClient, createEngine, defineWorkflow, type Client, type Engine } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { edgeRelay, type EdgeRelay } from '../../adapters/edge/index.js';
import { eventually, memoryLogger, uniqueNamespace } from '../helpers.js';
import { site } from './site-workflow.js';
import { startTopology, type Topology } from './topology.js';

const held = defineWorkflow({
  name: 'held',
  version: 1,
  input: z.object({}),
  events: { ADD: z.object({ k: z.number().int() }) },
  machine: setup({ types: { context: {} as { log: number[] }, events: {} as { type: 'ADD'; k: number } } }).createMachine({
    context: { log: [] },
    on: { ADD: { actions: assign(({ context, event }) => ({ log: [...context.log, event.k] })) } },
  }),
});

describe('a relayed event the site cannot store for now', () => {
  let topo: Topology | undefined;
  let engine: Engine | undefined;
  let cloud: Client | undefined;
  let nc: NatsConnection | undefined;
  after(async () => {
    await engine?.close();
    await cloud?.close();
    await nc?.close();
    await topo?.dispose();
  });

  it("holds its own instance's events, and the others are relayed once each", async () => {
    topo = await startTopology({ leafJetStream: true });
    const namespace = uniqueNamespace('relayheld');
    const logger = memoryLogger();
    const relay: EdgeRelay = edgeRelay({ hubDomain: 'hub', idleMs: 50, hubTimeoutMs: 1_000 });
    engine = await createEngine({
      servers: topo.leaf.url,
      namespace,
      workflows: [site, held],
      leaseTtlMs: 1_000,
      duplicateWindowMs: 500,
      extensions: [relay],
      logger,
    });
    await engine.start(site, { id: 's1', input: { label: 's1' } });
    await engine.start(held, { id: 'h1', input: {} });
    await engine.waitFor(held, 'h1', () => true, { timeoutMs: 10_000 });

    // The site's streams of 'held' take nothing more for now: full (at most 1 byte, new ones refused).
    nc = await connect({ servers: topo.leaf.url });
    const restore = await fill(namespace);

    cloud = await createClient({ servers: topo.hub.url, namespace, jsDomain: 'edge', relayDomain: 'hub', workflows: [site, held] });
    await cloud.send(held, 'h1', { type: 'ADD', k: 10 });
    await cloud.send(site, 's1', { type: 'ADD', k: 1 });
    await cloud.send(held, 'h1', { type: 'ADD', k: 20 });
    await cloud.send(site, 's1', { type: 'ADD', k: 2 });

    await engine.waitFor(site, 's1', (s) => s.context.log.includes(2), { timeoutMs: 20_000 });
    await sleep(2_500); // five duplicate windows of the site while h1's events are held
    assert.deepEqual((await engine.get(site, 's1'))!.context.log, [1, 2], 'once each, not held up by h1');
    assert.deepEqual((await engine.get(held, 'h1'))!.context.log, [], 'held');
    assert.match(relay.status().lastError ?? '', /maximum bytes|exceeded/i, 'the relay says why it waits');

    await restore();
    await engine.waitFor(held, 'h1', (s) => s.context.log.length >= 2, { timeoutMs: 20_000 });
    await sleep(1_000);
    assert.deepEqual((await engine.get(held, 'h1'))!.context.log, [10, 20], 'in order once the site takes them');
    assert.deepEqual((await engine.get(site, 's1'))!.context.log, [1, 2], 'still once each');
    await eventually(() => assert.equal(relay.status().lastError, undefined, 'the relay goes on'), 5_000);
  });

  it('keeps what was relayed above the held event when another engine, reading less at a time, takes over', async () => {
    assert.ok(topo, 'the first case started the hub and the site');
    const namespace = uniqueNamespace('relayheld2');
    const options = (relay: EdgeRelay) => ({
      servers: topo!.leaf.url,
      namespace,
      workflows: [site, held],
      leaseTtlMs: 1_000,
      duplicateWindowMs: 500,
      extensions: [relay],
      logger: memoryLogger(),
    });
    const first = await createEngine(options(edgeRelay({ hubDomain: 'hub', idleMs: 50, hubTimeoutMs: 1_000, batch: 64 })));
    let second: Engine | undefined;
    const client = await createClient({ servers: topo!.hub.url, namespace, jsDomain: 'edge', relayDomain: 'hub', workflows: [site, held] });
    try {
      await first.start(site, { id: 's1', input: { label: 's1' } });
      await first.start(held, { id: 'h1', input: {} });
      await first.waitFor(held, 'h1', () => true, { timeoutMs: 10_000 });
      const restore = await fill(namespace);
      await client.send(held, 'h1', { type: 'ADD', k: 10 });
      const ks = Array.from({ length: 20 }, (_, i) => i + 1);
      for (const k of ks) await client.send(site, 's1', { type: 'ADD', k });
      await first.waitFor(site, 's1', (s) => s.context.log.length >= 20, { timeoutMs: 20_000 });
      await first.close();

      second = await createEngine(options(edgeRelay({ hubDomain: 'hub', idleMs: 50, hubTimeoutMs: 1_000, batch: 4, readAhead: 4 })));
      await sleep(1_500); // s1's events relayed three duplicate windows ago
      await restore();
      await second.waitFor(held, 'h1', (s) => s.context.log.length >= 1, { timeoutMs: 20_000 });
      await sleep(2_000); // four duplicate windows after s1's events were first relayed
      assert.deepEqual((await second.get(site, 's1'))!.context.log, ks, 'once each');
      assert.deepEqual((await second.get(held, 'h1'))!.context.log, [10]);
    } finally {
      await second?.close();
      await first.close();
      await client.close();
    }
  });

  /** Makes the site's events streams of 'held' full; returns what gives them their limits back. */
  async function fill(namespace: string): Promise<() => Promise<void>> {
    const jsm = await jetstreamManager(nc!);
    const names = layout(namespace);
    const ofHeld = new Set(Array.from({ length: 256 }, (_, p) => names.eventStream(held.name, p)));
    const limits = new Map<string, { max_bytes: number; discard: string }>();
    for await (const name of jsm.streams.names()) {
      if (!ofHeld.has(name)) continue;
      const { config } = await jsm.streams.info(name);
      limits.set(name, { max_bytes: config.max_bytes, discard: config.discard });
      await jsm.streams.update(name, { max_bytes: 1, discard: 'new' } as never);
    }
    assert.ok(limits.size > 0, 'the events streams of held');
    return async () => {
      for (const [name, was] of limits) await jsm.streams.update(name, was as never);
    };
  }
});
