// Events sent from the hub to edge instances while the link is cut wait in the hub's relay stream
// and are applied at the edge in order, once each, when the link returns, over repeated cuts.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createClient, createEngine, type Client, type Engine } from '../../engine/index.js';
import { edgeRelay, type EdgeRelay } from '../../adapters/edge/index.js';
import { eventually, uniqueNamespace } from '../helpers.js';
import { site } from './site-workflow.js';
import { startTopology, type Topology } from './topology.js';

const CUTS = 3;
const PER_CUT = 5;
const ids = ['r-1', 'r-2', 'r-3'];

describe('hub to edge while the link is cut', () => {
  let topo: Topology | undefined;
  let engine: Engine | undefined;
  let cloud: Client | undefined;
  after(async () => {
    await engine?.close();
    await cloud?.close();
    await topo?.dispose();
  });

  it('queues hub sends during each cut and applies them in order, none lost or doubled', async () => {
    topo = await startTopology({ leafJetStream: true });
    const namespace = uniqueNamespace('relay');
    const relay: EdgeRelay = edgeRelay({ hubDomain: 'hub', idleMs: 50, hubTimeoutMs: 1_000 });
    engine = await createEngine({ servers: topo.leaf.url, namespace, workflows: [site], leaseTtlMs: 1_000, extensions: [relay] });
    for (const id of ids) await engine.start(site, { id, input: { label: id } });
    // The cloud side: reads the edge through domain edge, queues its sends in the hub.
    cloud = await createClient({ servers: topo.hub.url, namespace, jsDomain: 'edge', relayDomain: 'hub', workflows: [site] });

    const hubSent = new Map<string, number[]>(ids.map((id) => [id, []]));
    const edgeSent = new Map<string, number[]>(ids.map((id) => [id, []]));
    // With the link up a hub send goes the same way.
    for (const id of ids) {
      await cloud.send(site, id, { type: 'ADD', k: 1 });
      hubSent.get(id)!.push(1);
    }
    for (let cut = 1; cut <= CUTS; cut++) {
      await topo.link.cut();
      for (let i = 0; i < PER_CUT; i++) {
        for (const id of ids) {
          const k = 1_000 * cut + i;
          const sent: { duplicate: boolean } = await cloud.send(site, id, { type: 'ADD', k }, { idempotencyKey: `${id}-${k}` });
          assert.equal(sent.duplicate, false);
          hubSent.get(id)!.push(k);
          // The owner goes on meanwhile: its own events apply at once.
          await engine.send(site, id, { type: 'ADD', k: -k });
          edgeSent.get(id)!.push(-k);
        }
      }
      // A retried hub send (same idempotency key) is taken once.
      const again: { duplicate: boolean } = await cloud.send(site, ids[0]!, { type: 'ADD', k: 1_000 * cut }, { idempotencyKey: `${ids[0]}-${1_000 * cut}` });
      assert.equal(again.duplicate, true);
      for (const id of ids) {
        const edgeView = await engine.waitFor(site, id, (s) => s.context.log.includes(-(1_000 * cut + PER_CUT - 1)), { timeoutMs: 20_000 });
        // Cut off: nothing of this round from the hub has arrived.
        assert.ok(
          !edgeView.context.log.some((k) => k >= 1_000 * cut),
          `${id}: no hub event of cut ${cut} before the link is back: ${edgeView.context.log.join(',')} ${JSON.stringify(relay.status())}`,
        );
      }
      await topo.link.restore();
      for (const id of ids) {
        const want = hubSent.get(id)!;
        await engine.waitFor(site, id, (s) => want.every((k) => s.context.log.includes(k)), { timeoutMs: 30_000 });
      }
    }

    for (const id of ids) {
      const log: number[] = (await engine.get(site, id))!.context.log;
      assert.deepEqual(
        log.filter((k) => k > 0),
        hubSent.get(id),
        `${id}: hub events in the order sent, once each`,
      );
      assert.deepEqual(
        log.filter((k) => k < 0),
        edgeSent.get(id),
        `${id}: edge events in the order sent, once each`,
      );
      assert.equal(log.length, hubSent.get(id)!.length + edgeSent.get(id)!.length);
      // The hub reads the same instance through domain edge.
      await eventually(async () => assert.deepEqual((await cloud!.get(site, id))!.context.log, log), 10_000);
    }
    assert.equal(relay.status().relayed, ids.length * (1 + CUTS * PER_CUT));
    assert.equal(relay.status().leading, true);
  });

  it('another engine of the site takes the relay over when the one relaying closes, still in order and once', async () => {
    assert.ok(topo);
    const namespace = uniqueNamespace('handover');
    const relays = [
      edgeRelay({ hubDomain: 'hub', idleMs: 50, leaseTtlMs: 1_000, batch: 8, readAhead: 4 }),
      edgeRelay({ hubDomain: 'hub', idleMs: 50, leaseTtlMs: 1_000, batch: 8, readAhead: 4 }),
    ];
    const engines = await Promise.all(
      relays.map((relay) => createEngine({ servers: topo!.leaf.url, namespace, workflows: [site], leaseTtlMs: 1_000, extensions: [relay] })),
    );
    try {
      for (const id of ids) await engines[0]!.start(site, { id, input: { label: id } });
      const hub = await createClient({ servers: topo.hub.url, namespace, jsDomain: 'edge', relayDomain: 'hub', workflows: [site] });
      const sent = new Map<string, number[]>(ids.map((id) => [id, []]));
      try {
        await topo.link.cut();
        for (let k = 1; k <= 40; k++) {
          const id = ids[k % ids.length]!;
          await hub.send(site, id, { type: 'ADD', k });
          sent.get(id)!.push(k);
        }
      } finally {
        await hub.close();
      }
      await topo.link.restore();
      // Close whichever relays first, as soon as it started: the other finishes the queue.
      await eventually(() => assert.ok(relays.some((r) => r.status().relayed > 0)), 30_000, 5);
      const first = relays.findIndex((r) => r.status().relayed > 0);
      await engines[first]!.close();
      const other = engines[1 - first]!;
      for (const id of ids) {
        const want = sent.get(id)!;
        const done = await other.waitFor(site, id, (s) => s.context.log.length >= want.length && want.every((k) => s.context.log.includes(k)), {
          timeoutMs: 30_000,
        });
        assert.deepEqual(done.context.log, want, `${id}: in order, once each`);
      }
      assert.equal(relays[1 - first]!.status().leading, true);
    } finally {
      for (const e of engines) await e.close();
    }
  });

  it('events queued in the hub survive a SIGKILL of the hub during the cut', async () => {
    assert.ok(topo);
    const namespace = uniqueNamespace('hubkill');
    const relay = edgeRelay({ hubDomain: 'hub', idleMs: 50, hubTimeoutMs: 1_000 });
    const edge = await createEngine({ servers: topo.leaf.url, namespace, workflows: [site], leaseTtlMs: 1_000, extensions: [relay] });
    try {
      await edge.start(site, { id: 'k-1', input: { label: 'k' } });
      const hub = await createClient({ servers: topo.hub.url, namespace, jsDomain: 'edge', relayDomain: 'hub', workflows: [site] });
      const want = Array.from({ length: 12 }, (_, i) => i + 1);
      try {
        await topo.link.cut();
        for (const k of want) await hub.send(site, 'k-1', { type: 'ADD', k });
      } finally {
        await hub.close();
      }
      await topo.hub.kill();
      await topo.hub.restart();
      await topo.link.restore();
      const done = await edge.waitFor(site, 'k-1', (s) => s.context.log.length >= want.length, { timeoutMs: 30_000 });
      assert.deepEqual(done.context.log, want);
    } finally {
      await edge.close();
    }
  });
});
