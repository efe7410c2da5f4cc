/**
 * Catch-up of an edge site after a cut: a hub and a leaf node with its own JetStream on loopback
 * (adapters/nats-server/edge-topology.ts), an engine at the edge with the edge relay, and a client
 * on the hub that queues its sends in the hub (`relayDomain`). For each N it cuts the link, sends
 * N events from the hub (spread over 20 instances), restores the link and measures:
 *
 *   - link: from restoring the link to a JetStream request crossing it (the leaf reconnecting);
 *   - catch-up: from the link being up again to every one of the N events applied at the edge;
 *   - rate: N / catch-up;
 *   - relayed by: when the relay's checkpoint covered all N (the rest of catch-up is the engine
 *     applying them).
 *
 *   npx tsx bench/edge.ts                 # N = 100, 1000, 5000
 *   npx tsx bench/edge.ts --n=200,2000    # other sizes
 *
 * It prints figures only: nothing in it passes or fails.
 */
import { startEdgeTopology } from '../adapters/nats-server/edge-topology.js';
import { edgeRelay } from '../adapters/edge/index.js';
import { createClient, createEngine } from '../engine/index.js';
import { site } from '../test/edge/site-workflow.js';

const arg = process.argv.find((a) => a.startsWith('--n='));
const sizes = arg ? arg.slice(4).split(',').map(Number) : [100, 1_000, 5_000];
const INSTANCES = 20;

const topo = await startEdgeTopology({ leafJetStream: true });
const namespace = `bench_edge_${Date.now().toString(36)}`;
const relay = edgeRelay({ hubDomain: 'hub', idleMs: 50 });
const engine = await createEngine({ servers: topo.leaf.url, namespace, workflows: [site], extensions: [relay], name: 'bench-edge' });
const ids = Array.from({ length: INSTANCES }, (_, i) => `b-${i}`);
for (const id of ids) await engine.start(site, { id, input: { label: id } });
const cloud = await createClient({ servers: topo.hub.url, namespace, jsDomain: 'edge', relayDomain: 'hub', workflows: [site] });

const rows: string[] = [];
let k = 0;
try {
  for (const n of sizes) {
    await topo.link.cut();
    const last = new Map<string, number>();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const id = ids[i % INSTANCES]!;
      k++;
      await cloud.send(site, id, { type: 'ADD', k });
      last.set(id, k);
    }
    const queueMs = performance.now() - t0;
    const relayedBefore = relay.status().relayed;
    const r0 = performance.now();
    await topo.link.restore();
    await topo.linked('hub');
    const linkMs = performance.now() - r0;
    const c0 = performance.now();
    let relayDoneMs = NaN;
    const watch = (async () => {
      while (relay.status().relayed - relayedBefore < n) await new Promise((r) => setTimeout(r, 5));
      relayDoneMs = performance.now() - c0;
    })();
    await Promise.all([...last].map(([id, want]) => engine.waitFor(site, id, (s) => s.context.log.includes(want), { timeoutMs: 600_000 })));
    const catchUpMs = performance.now() - c0;
    await watch;
    rows.push(
      `N=${String(n).padStart(5)}  queued on the hub in ${queueMs.toFixed(0)} ms  link back in ${linkMs.toFixed(0)} ms  ` +
        `catch-up ${catchUpMs.toFixed(0)} ms (${((n / catchUpMs) * 1000).toFixed(0)} events/s)  relayed (checkpointed) by ${relayDoneMs.toFixed(0)} ms`,
    );
    process.stdout.write(`${rows.at(-1)}\n`);
  }
} finally {
  await cloud.close();
  await engine.close();
  await topo.stop();
}
