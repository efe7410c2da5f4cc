/**
 * A hub and an edge site on this machine: two nats-servers on loopback (the hub with JetStream
 * in domain `hub`, the edge a leaf node with its own JetStream in domain `edge`), an engine at the
 * edge running the example order workflow with the edge relay, and (nats-server 2.11+) the hub's
 * read view of the site. Prints CLI commands for both sides; Ctrl-C stops everything. Stores are
 * temporary folders, removed on exit.
 *
 *   npx tsx scripts/edge-dev.ts            # JETSTATE_NATS_SERVER picks the nats-server binary
 *
 * The link between the two can be cut and restored from here: type `cut` or `restore` + Enter.
 */
import { createInterface } from 'node:readline';
import { connect } from '@nats-io/transport-node';
import { startEdgeTopology } from '../adapters/nats-server/edge-topology.js';
import { edgeRelay, ensureHubReadView } from '../adapters/edge/index.js';
import { createEngine } from '../engine/index.js';
import { order } from '../workflows/order.js';

const namespace = process.env['JETSTATE_NAMESPACE'] || 'edge_site1';
const topo = await startEdgeTopology({ leafJetStream: true });
const engine = await createEngine({ servers: topo.leaf.url, namespace, workflows: [order], name: 'edge-dev', extensions: [edgeRelay({ hubDomain: 'hub' })] });
const hubNc = await connect({ servers: topo.hub.url });
let view = 'no read view (the hub needs nats-server 2.11+): read through --domain edge';
try {
  await ensureHubReadView({ connection: hubNc, namespace, siteDomain: 'edge' });
  view = 'read view: mirrors in the hub (reads without --domain work while the link is cut)';
} catch (e) {
  view += ` (${(e as Error).message.split(';')[0]})`;
}
const cli = 'npx jetstate';
const w = '-w workflows/order.ts';
process.stdout.write(
  [
    `hub  nats-server pid ${topo.hub.pid} at ${topo.hub.url} (JetStream domain hub)`,
    `edge nats-server pid ${topo.leaf.pid} at ${topo.leaf.url} (leaf node, JetStream domain edge), link through 127.0.0.1:${topo.link.port}`,
    `engine at the edge, namespace ${namespace}, edge relay from domain hub; ${view}`,
    '',
    'at the edge (the site owns its instances):',
    `  ${cli} start order --id o-1 --input '{"orderId":"o-1","customer":"ada","amount":30}' -s ${topo.leaf.url} -n ${namespace} ${w}`,
    `  ${cli} send order o-1 PAY '{"amount":30}' -s ${topo.leaf.url} -n ${namespace} ${w}`,
    'from the hub (reads through the edge domain):',
    `  ${cli} get order o-1 -s ${topo.hub.url} -n ${namespace} --domain edge ${w}`,
    `  ${cli} history order o-1 -s ${topo.hub.url} -n ${namespace} --domain edge ${w}`,
    'hub sends that wait while the link is cut: createClient({ servers, namespace, jsDomain: "edge", relayDomain: "hub" }) (docs/EDGE.md)',
    '',
    'type "cut" or "restore" + Enter to cut or restore the leaf node link; Ctrl-C stops',
    '',
  ].join('\n'),
);
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'cut') void topo.link.cut().then(() => process.stdout.write('link cut\n'));
  if (cmd === 'restore') void topo.link.restore().then(() => process.stdout.write('link restored\n'));
});
await new Promise<void>((done) => {
  process.once('SIGINT', done);
  process.once('SIGTERM', done);
});
rl.close();
await engine.close();
await hubNc.close();
await topo.stop();
process.stdout.write('stopped\n');
