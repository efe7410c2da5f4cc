// Two engines of a site, each with an edge relay, with different lease TTLs: the relay with the
// shorter TTL judged the other's lease by its own, and took it between the other's renewals, again
// and again (both relayed in turn). A relay's lease is now judged by the TTL it declares.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createEngine, type Engine } from '../../engine/index.js';
import { edgeRelay } from '../../adapters/edge/index.js';
import { eventually, memoryLogger, uniqueNamespace } from '../helpers.js';
import { site } from './site-workflow.js';
import { startTopology, type Topology } from './topology.js';

describe('edge relays with different lease TTLs', () => {
  let topo: Topology | undefined;
  const engines: Engine[] = [];
  after(async () => {
    for (const e of engines) await e.close();
    await topo?.dispose();
  });

  it('leave a live relay its lease', async () => {
    topo = await startTopology({ leafJetStream: true });
    const namespace = uniqueNamespace('relaymix');
    // Renews every 2 s; the other would call it silent after 0.5 s.
    const long = edgeRelay({ hubDomain: 'hub', idleMs: 50, hubTimeoutMs: 1_000, leaseTtlMs: 6_000 });
    const short = edgeRelay({ hubDomain: 'hub', idleMs: 50, hubTimeoutMs: 1_000, leaseTtlMs: 500 });
    const base = { servers: topo.leaf.url, namespace, workflows: [site], leaseTtlMs: 1_000, logger: memoryLogger() };
    engines.push(await createEngine({ ...base, extensions: [long] }));
    await eventually(() => assert.equal(long.status().leading, true), 10_000);
    engines.push(await createEngine({ ...base, extensions: [short] }));
    const samples: string[] = [];
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 250));
      samples.push(`${long.status().leading ? 'L' : '-'}${short.status().leading ? 'S' : '-'}`);
    }
    assert.ok(
      samples.every((s) => s === 'L-'),
      `who leads, every 250 ms: ${samples.join(' ')}`,
    );
  });
});
