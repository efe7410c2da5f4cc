// The hub's relay stream deleted and made again numbers its events from 1: the relay notices the
// new stream (its checkpoint belongs to the old one), says so, and relays the new one's events.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { createClient, createEngine, type Client, type Engine } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { edgeRelay, type EdgeRelay } from '../../adapters/edge/index.js';
import { eventually, memoryLogger, uniqueNamespace } from '../helpers.js';
import { site } from './site-workflow.js';
import { startTopology, type Topology } from './topology.js';

describe('the relay stream made anew in the hub', () => {
  let topo: Topology | undefined;
  let engine: Engine | undefined;
  const clients: Client[] = [];
  after(async () => {
    await engine?.close();
    for (const c of clients) await c.close();
    await topo?.dispose();
  });

  it('is relayed from its start, and the relay says why', async () => {
    topo = await startTopology({ leafJetStream: true });
    const namespace = uniqueNamespace('relayanew');
    const logger = memoryLogger();
    const relay: EdgeRelay = edgeRelay({ hubDomain: 'hub', idleMs: 50, hubTimeoutMs: 1_000 });
    engine = await createEngine({ servers: topo.leaf.url, namespace, workflows: [site], leaseTtlMs: 1_000, extensions: [relay], logger });
    await engine.start(site, { id: 's1', input: { label: 's1' } });
    const cloud = async (): Promise<Client> => {
      const c = await createClient({ servers: topo!.hub.url, namespace, jsDomain: 'edge', relayDomain: 'hub', workflows: [site] });
      clients.push(c);
      return c;
    };

    const first = await cloud();
    for (const k of [1, 2, 3]) await first.send(site, 's1', { type: 'ADD', k });
    await engine.waitFor(site, 's1', (s) => s.context.log.length === 3, { timeoutMs: 20_000 });
    await eventually(() => assert.equal(relay.status().checkpoint, 3), 5_000);

    // An operator deletes the relay stream; the next client makes it again (its first event is sequence 1).
    const nc = await connect({ servers: topo.hub.url });
    try {
      await (await jetstreamManager(nc)).streams.delete(layout(namespace).relayStream);
    } finally {
      await nc.close();
    }
    await (await cloud()).send(site, 's1', { type: 'ADD', k: 4 });

    await engine.waitFor(site, 's1', (s) => s.context.log.length === 4, { timeoutMs: 20_000 });
    assert.deepEqual((await engine.get(site, 's1'))!.context.log, [1, 2, 3, 4]);
    assert.ok(
      logger.lines.some((l) => l.includes('made anew')),
      logger.lines.join('\n'),
    );
  });
});
