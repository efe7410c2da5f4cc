/**
 * A hub nats-server and one leaf node on loopback (tests, benchmarks, `scripts/edge-dev.sh`): the
 * hub runs JetStream in domain `hub` and accepts leaf nodes; the leaf runs none (it uses the
 * hub's) or its own in domain `edge`. The leaf reaches the hub through a {@link LinkProxy}, so the
 * link can be cut while both servers run; `hub.kill()` cuts it the hard way.
 */
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { rm } from 'node:fs/promises';
import { NatsServer, freePort, type NatsServerOptions } from './launcher.js';
import { LinkProxy } from './link-proxy.js';

export interface EdgeTopology {
  hub: NatsServer;
  leaf: NatsServer;
  /** The leaf node link runs through this: `link.cut()` / `link.restore()`. */
  link: LinkProxy;
  /** Resolves once a JetStream request crosses the link to `domain` and back (the link is up). */
  linked(domain?: string, timeoutMs?: number): Promise<void>;
  /** Stops both servers and the link; removes the stores it made. */
  stop(): Promise<void>;
}

export interface EdgeTopologyOptions {
  /** The leaf runs its own JetStream in domain `edge` (else it uses the hub's). */
  leafJetStream: boolean;
  binary?: string;
  /** Store folders (fresh temporary ones, removed by stop(), when absent). */
  hubStoreDir?: string;
  leafStoreDir?: string;
  hubPort?: number;
  leafPort?: number;
}

export async function startEdgeTopology(options: EdgeTopologyOptions): Promise<EdgeTopology> {
  const leafListenPort = await freePort();
  const link = await LinkProxy.start(leafListenPort);
  const common: NatsServerOptions = options.binary ? { binary: options.binary } : {};
  const hub = await NatsServer.start({
    ...common,
    serverName: 'hub',
    domain: 'hub',
    leafListenPort,
    leafAdvertisePort: link.port,
    ...(options.hubStoreDir ? { storeDir: options.hubStoreDir } : {}),
    ...(options.hubPort ? { port: options.hubPort } : {}),
  });
  const leaf = await NatsServer.start({
    ...common,
    serverName: 'edge',
    ...(options.leafJetStream ? { domain: 'edge' } : { jetstream: false }),
    leafRemotePorts: [link.port],
    ...(options.leafStoreDir ? { storeDir: options.leafStoreDir } : {}),
    ...(options.leafPort ? { port: options.leafPort } : {}),
  });
  const topology: EdgeTopology = {
    hub,
    leaf,
    link,
    async linked(domain = 'hub', timeoutMs = 30_000) {
      // Asked from the side that does not hold `domain`, so the answer crossed the link.
      const nc = await connect({ servers: (domain === 'hub' ? leaf : hub).url });
      const deadline = Date.now() + timeoutMs;
      try {
        for (;;) {
          try {
            await (await jetstreamManager(nc, { domain, timeout: 1_000 })).getAccountInfo();
            return;
          } catch (e) {
            if (Date.now() > deadline) throw new Error(`the leaf node link to domain '${domain}' did not come up in ${timeoutMs} ms: ${(e as Error).message}`);
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      } finally {
        await nc.close();
      }
    },
    async stop() {
      await leaf.stop();
      await link.cut();
      await hub.stop();
      if (!options.leafStoreDir) await rm(leaf.storeDir, { recursive: true, force: true });
      if (!options.hubStoreDir) await rm(hub.storeDir, { recursive: true, force: true });
    },
  };
  await topology.linked(options.leafJetStream ? 'edge' : 'hub');
  return topology;
}
