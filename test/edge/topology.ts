/**
 * A hub nats-server and one leaf node on loopback, each with a fresh store, for the edge tests.
 * The hub runs JetStream in domain `hub`; the leaf runs none (it uses the hub's) or its own in
 * domain `edge`. `hub.kill()` cuts the link the hard way; `hub.restart()` brings it back on the
 * same store and ports; `link.cut()` cuts the link while both keep running.
 */
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { freePort } from '../../adapters/nats-server/launcher.js';
import { eventually, startNats } from '../helpers.js';
import { LinkProxy } from './link-proxy.js';

export type TestServer = Awaited<ReturnType<typeof startNats>>;

export interface Topology {
  hub: TestServer;
  leaf: TestServer;
  /** The leaf node link runs through this: `link.cut()` / `link.restore()`. */
  link: LinkProxy;
  /** Resolves once a JetStream request from the leaf reaches `domain` and back (the link is up). */
  linked(domain?: string, timeoutMs?: number): Promise<void>;
  dispose(): Promise<void>;
}

export async function startTopology(options: { leafJetStream: boolean }): Promise<Topology> {
  const leafPort = await freePort();
  const link = await LinkProxy.start(leafPort);
  const hub = await startNats({ serverName: 'hub', domain: 'hub', leafListenPort: leafPort, leafAdvertisePort: link.port });
  const leaf = await startNats(
    options.leafJetStream ? { serverName: 'edge', domain: 'edge', leafRemotePorts: [link.port] } : { serverName: 'edge', jetstream: false, leafRemotePorts: [link.port] },
  );
  const topology: Topology = {
    hub,
    leaf,
    link,
    async linked(domain = 'hub', timeoutMs = 30_000) {
      // Asked from the side that does not hold `domain`, so the answer crossed the link.
      const from = domain === 'hub' ? leaf : hub;
      const nc = await connect({ servers: from.url });
      try {
        await eventually(async () => {
          const jsm = await jetstreamManager(nc, { domain, timeout: 1_000 });
          await jsm.getAccountInfo();
        }, timeoutMs, 100);
      } finally {
        await nc.close();
      }
    },
    async dispose() {
      await leaf.dispose();
      await link.cut();
      await hub.dispose();
    },
  };
  await topology.linked(options.leafJetStream ? 'edge' : 'hub');
  return topology;
}
