// JetStream domains across a leaf node link: an engine on a leaf without JetStream works against
// its hub's; an edge with its own JetStream keeps applying events and firing timers while the hub
// is killed, and the hub reads its instances through the `edge` domain once the link is back.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { createClient, createEngine, ErrorCode, JetstateError, type Client, type Engine, type Instance } from '../../engine/index.js';
import { eventually, uniqueNamespace } from '../helpers.js';
import { site } from './site-workflow.js';
import { startTopology, type Topology } from './topology.js';

/** What must read the same from both sides. */
const shape = (i: Instance | null) => i && { status: i.status, value: i.value, context: i.context, revision: i.revision, timers: i.timers.length };

async function listAll(client: Client): Promise<string[]> {
  const ids: string[] = [];
  for await (const i of client.list(site)) ids.push(`${i.id}:${i.revision}`);
  return ids.sort();
}

describe('engine on a leaf node without JetStream, using the hub domain', () => {
  let topo: Topology | undefined;
  let engine: Engine | undefined;
  let hubClient: Client | undefined;
  after(async () => {
    await engine?.close();
    await hubClient?.close();
    await topo?.dispose();
  });

  it('runs workflows (events, timers) in the hub JetStream; the hub sees them with no domain', async () => {
    topo = await startTopology({ leafJetStream: false });
    const namespace = uniqueNamespace('leafnojs');
    // Without a domain the leaf has no JetStream to talk to: say so plainly.
    await assert.rejects(createEngine({ servers: topo.leaf.url, namespace, workflows: [site], leaseTtlMs: 1_000 }), /jetstream/i);
    engine = await createEngine({ servers: topo.leaf.url, jsDomain: 'hub', namespace, workflows: [site], leaseTtlMs: 1_000 });
    await engine.start(site, { id: 's-1', input: { label: 'leaf' } });
    for (const k of [1, 2, 3]) await engine.send(site, 's-1', { type: 'ADD', k });
    await engine.send(site, 's-1', { type: 'ARM', delayMs: 200 });
    const done = await engine.waitFor(site, 's-1', (s) => s.context.rings === 1 && s.matches('counting'), { timeoutMs: 20_000 });
    assert.deepEqual(done.context.log, [1, 2, 3]);

    hubClient = await createClient({ servers: topo.hub.url, namespace, workflows: [site] });
    assert.deepEqual(shape(await hubClient.get(site, 's-1')), shape(done));
    assert.deepEqual(await listAll(hubClient), [`s-1:${done.revision}`]);
    assert.deepEqual(
      (await hubClient.history(site, 's-1')).map((h) => (h.event as { type: string }).type),
      (await engine.history(site, 's-1')).map((h) => (h.event as { type: string }).type),
    );
    // And its streams live in the hub's JetStream only.
    const nc = await connect({ servers: topo.hub.url });
    try {
      const jsm = await jetstreamManager(nc);
      assert.ok((await jsm.streams.info(`KV_${namespace}_control`)).config.name);
    } finally {
      await nc.close();
    }
  });
});

describe('edge site with its own JetStream (domain edge), hub killed', () => {
  let topo: Topology | undefined;
  let engine: Engine | undefined;
  let hubClient: Client | undefined;
  after(async () => {
    await engine?.close();
    await hubClient?.close();
    await topo?.dispose();
  });

  it('applies events and fires timers at the edge while the hub is down; the hub reads the edge through domain edge', async () => {
    topo = await startTopology({ leafJetStream: true });
    // A site with its own JetStream gets its own namespace: subjects of a namespace that exists in
    // both domains would be stored by both (docs/EDGE.md).
    const namespace = uniqueNamespace('edgesite');
    engine = await createEngine({ servers: topo.leaf.url, namespace, workflows: [site], leaseTtlMs: 1_000 });
    const ids = ['e-1', 'e-2', 'e-3'];
    for (const id of ids) await engine.start(site, { id, input: { label: id } });
    for (const id of ids) await engine.send(site, id, { type: 'ADD', k: 0 });

    await topo.hub.kill();
    // Cut off: events and timers go on at the edge.
    for (const id of ids) {
      for (const k of [1, 2, 3]) await engine.send(site, id, { type: 'ADD', k });
      await engine.send(site, id, { type: 'ARM', delayMs: 300 });
    }
    for (const id of ids) await engine.waitFor(site, id, (s) => s.context.rings === 1 && s.matches('counting'), { timeoutMs: 20_000 });
    const atEdge = await Promise.all(ids.map((id) => engine!.get(site, id)));
    for (const i of atEdge) assert.deepEqual(i!.context.log, [0, 1, 2, 3]);
    assert.equal(topo.hub.running, false);

    await topo.hub.restart();
    await topo.linked('edge');
    hubClient = await createClient({ servers: topo.hub.url, jsDomain: 'edge', namespace, workflows: [site] });
    for (const [n, id] of ids.entries()) {
      assert.deepEqual(shape(await hubClient.get(site, id)), shape(atEdge[n]!));
      assert.deepEqual(await hubClient.history(site, id), await engine.history(site, id));
    }
    assert.deepEqual(await listAll(hubClient), atEdge.map((i) => `${i!.id}:${i!.revision}`).sort());
    // The hub's own JetStream holds nothing of the edge namespace: reads crossed the link.
    const nc = await connect({ servers: topo.hub.url });
    try {
      const jsm = await jetstreamManager(nc);
      await assert.rejects(jsm.streams.info(`KV_${namespace}_control`), /stream not found/);
    } finally {
      await nc.close();
    }
  });

  it('a client naming a domain where the namespace does not exist fails with NAMESPACE_NOT_FOUND and creates nothing', async () => {
    assert.ok(topo);
    const missing = uniqueNamespace('nowhere');
    await assert.rejects(
      createClient({ servers: topo.hub.url, jsDomain: 'edge', namespace: missing, workflows: [site] }),
      (e: unknown) =>
        e instanceof JetstateError && e.code === ErrorCode.NamespaceNotFound && e.message.includes(`'${missing}'`) && e.message.includes("domain 'edge'"),
    );
    const nc = await connect({ servers: topo.hub.url });
    try {
      for (const domain of ['edge', 'hub']) {
        const jsm = await jetstreamManager(nc, { domain });
        const names: string[] = [];
        for await (const s of jsm.streams.names()) names.push(s);
        assert.deepEqual(
          names.filter((n) => n.includes(missing)),
          [],
          `nothing of '${missing}' in domain ${domain}`,
        );
      }
    } finally {
      await nc.close();
    }
    // The edge namespace of the first test is found through the same domain.
    await eventually(async () => assert.ok(hubClient));
  });
});
