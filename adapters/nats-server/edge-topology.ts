/**
 * A hub nats-server and one leaf node on loopback (tests, benchmarks, `scripts/edge-dev.sh`): the
 * hub runs JetStream in domain `hub` and accepts leaf nodes; the leaf runs none (it uses the
 * hub's) or its own in domain `edge` (or `leafDomain`). The leaf reaches the hub through a
 * {@link LinkProxy}, so the link can be cut while both servers run; `hub.kill()` cuts it the hard
 * way. With `auth`, both servers require users (docs/EDGE.md, "Permissions").
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

/** A NATS user and password, and the inbox prefix its permissions let it subscribe to. */
export interface EdgeUser {
  user: string;
  pass: string;
  inboxPrefix?: string;
}

/** Users of both servers, for a topology with narrowed NATS permissions. */
export interface EdgeTopologyAuth {
  /** Config lines of the hub: its `authorization { users: [...] }` (leaf node connections log in as one of them). */
  hubConfig: string;
  /** Config lines of the leaf: the users of the site's processes. */
  leafConfig: string;
  /** The hub user the leaf node connection logs in as: its permissions are what the link carries. */
  leafNode: EdgeUser;
  /**
   * Users that {@link EdgeTopology.linked} asks with, on each side: they need `$JS.<other
   * domain>.API.INFO` and their inbox, and the link must carry the request and the answer.
   */
  probe: { hub: EdgeUser; leaf: EdgeUser };
}

export interface EdgeTopologyOptions {
  /** The leaf runs its own JetStream in domain `edge` (else it uses the hub's). */
  leafJetStream: boolean;
  /** The leaf's JetStream domain (and server name) when it runs JetStream; `edge` when absent. */
  leafDomain?: string;
  /** Servers that require users; without it anyone may connect and do anything. */
  auth?: EdgeTopologyAuth;
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
  const leafDomain = options.leafDomain ?? 'edge';
  const auth = options.auth;
  const hub = await NatsServer.start({
    ...common,
    serverName: 'hub',
    domain: 'hub',
    leafListenPort,
    leafAdvertisePort: link.port,
    ...(auth ? { extraConfig: auth.hubConfig } : {}),
    ...(options.hubStoreDir ? { storeDir: options.hubStoreDir } : {}),
    ...(options.hubPort ? { port: options.hubPort } : {}),
  });
  const leaf = await NatsServer.start({
    ...common,
    serverName: leafDomain,
    ...(options.leafJetStream ? { domain: leafDomain } : { jetstream: false }),
    leafRemotePorts: [link.port],
    ...(auth ? { extraConfig: auth.leafConfig, leafRemoteAuth: auth.leafNode } : {}),
    ...(options.leafStoreDir ? { storeDir: options.leafStoreDir } : {}),
    ...(options.leafPort ? { port: options.leafPort } : {}),
  });
  const topology: EdgeTopology = {
    hub,
    leaf,
    link,
    async linked(domain = 'hub', timeoutMs = 30_000) {
      // Asked from the side that does not hold `domain`, so the answer crossed the link.
      const probe = auth && (domain === 'hub' ? auth.probe.leaf : auth.probe.hub);
      const nc = await connect({
        servers: (domain === 'hub' ? leaf : hub).url,
        ...(probe ? { user: probe.user, pass: probe.pass, ...(probe.inboxPrefix ? { inboxPrefix: probe.inboxPrefix } : {}) } : {}),
      });
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
  try {
    await topology.linked(options.leafJetStream ? leafDomain : 'hub');
  } catch (e) {
    // A link that never came up (a wrong user or permissions, typically) leaves no servers behind.
    await topology.stop();
    throw e;
  }
  return topology;
}
