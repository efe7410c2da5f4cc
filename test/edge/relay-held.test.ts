// A relayed event the site cannot store for now (its stream is full) holds its instance's later
// events behind it, not the other instances': theirs are relayed once each, also when the hold
// lasts many duplicate windows, and once the site takes it again the held ones follow in order.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
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
    const jsm: JetStreamManager = await jetstreamManager(nc);
    const streams: string[] = [];
    const names = layout(namespace);
    const ofHeld = new Set(Array.from({ length: 256 }, (_, p) => names.eventStream(held.name, p)));
    for await (const name of jsm.streams.names()) if (ofHeld.has(name)) streams.push(name);
    assert.ok(streams.length > 0, 'the events streams of held');
    const limits = new Map<string, { max_bytes: number; discard: string }>();
    for (const name of streams) {
      const { config } = await jsm.streams.info(name);
      limits.set(name, { max_bytes: config.max_bytes, discard: config.discard });
      await jsm.streams.update(name, { max_bytes: 1, discard: 'new' } as never);
    }

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

    for (const [name, was] of limits) await jsm.streams.update(name, was as never);
    await engine.waitFor(held, 'h1', (s) => s.context.log.length >= 2, { timeoutMs: 20_000 });
    await sleep(1_000);
    assert.deepEqual((await engine.get(held, 'h1'))!.context.log, [10, 20], 'in order once the site takes them');
    assert.deepEqual((await engine.get(site, 's1'))!.context.log, [1, 2], 'still once each');
    await eventually(() => assert.equal(relay.status().lastError, undefined, 'the relay goes on'), 5_000);
  });
});
