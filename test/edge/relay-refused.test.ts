// A relayed event the site cannot take (a workflow the site does not serve, an idempotency key a
// site sender took first) is dead-lettered at the site, said, and passed: it does not hold up the
// other instances' events, and those are not relayed again (past the duplicate window they would
// be applied twice).
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { z } from 'zod';
import { setup } from 'xstate';
import { createClient, createEngine, defineWorkflow, type Client, type Engine } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { edgeRelay, type EdgeRelay } from '../../adapters/edge/index.js';
import { eventually, memoryLogger, uniqueNamespace } from '../helpers.js';
import { site } from './site-workflow.js';
import { startTopology, type Topology } from './topology.js';

/** A workflow the site does not serve (the hub's client knows it). */
const returns = defineWorkflow({
  name: 'returns',
  version: 1,
  input: z.object({}),
  events: { OPEN: z.object({}) },
  machine: setup({}).createMachine({ initial: 'open', states: { open: { on: { OPEN: 'opened' } }, opened: {} } }),
});

describe('a relayed event the site cannot take', () => {
  let topo: Topology | undefined;
  let engine: Engine | undefined;
  let cloud: Client | undefined;
  let local: Client | undefined;
  after(async () => {
    await engine?.close();
    await cloud?.close();
    await local?.close();
    await topo?.dispose();
  });

  it('is dead-lettered at the site, and the events after it are applied once each', async () => {
    topo = await startTopology({ leafJetStream: true });
    const namespace = uniqueNamespace('relayrefused');
    const logger = memoryLogger();
    const relay: EdgeRelay = edgeRelay({ hubDomain: 'hub', idleMs: 50, hubTimeoutMs: 1_000 });
    engine = await createEngine({
      servers: topo.leaf.url,
      namespace,
      workflows: [site],
      leaseTtlMs: 1_000,
      duplicateWindowMs: 500,
      extensions: [relay],
      logger,
    });
    await engine.start(site, { id: 's1', input: { label: 's1' } });
    await engine.start(site, { id: 's2', input: { label: 's2' } });
    cloud = await createClient({ servers: topo.hub.url, namespace, jsDomain: 'edge', relayDomain: 'hub', workflows: [site, returns] });
    local = await createClient({ servers: topo.leaf.url, namespace, workflows: [site] });

    // A site sender takes an idempotency key first; the hub's event with the same key is another event.
    await local.send(site, 's2', { type: 'ADD', k: -1 }, { idempotencyKey: 'shared-key' });
    await cloud.send(returns, 'r1', { type: 'OPEN' });
    await cloud.send(site, 's1', { type: 'ADD', k: 1 });
    await cloud.send(site, 's2', { type: 'ADD', k: 2 }, { idempotencyKey: 'shared-key' });
    await cloud.send(site, 's1', { type: 'ADD', k: 3 });

    await engine.waitFor(site, 's1', (s) => s.context.log.includes(3), { timeoutMs: 20_000 });
    await sleep(2_000); // four duplicate windows: nothing relayed again is applied again
    assert.deepEqual((await engine.get(site, 's1'))!.context.log, [1, 3], 'once each, in order, past the refused one');
    assert.deepEqual((await engine.get(site, 's2'))!.context.log, [-1], "the site sender's event; the hub's other event under its key is not applied");

    const nc = await connect({ servers: topo.leaf.url });
    try {
      const jsm = await jetstreamManager(nc);
      await eventually(async () => {
        const info = await jsm.streams.info(layout(namespace).deadLetterStream);
        assert.equal(info.state.messages, 2, 'both refused events dead-lettered');
      }, 10_000);
    } finally {
      await nc.close();
    }
    assert.ok(
      logger.lines.some((l) => l.includes("'returns'") && l.includes('dead letter')),
      `said: ${logger.lines.join('\n')}`,
    );
    assert.ok(
      logger.lines.some((l) => l.includes('shared-key')),
      'the key conflict is said',
    );
    assert.equal(relay.status().lastError, undefined, 'the relay goes on');
  });
});
