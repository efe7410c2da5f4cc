/** Shared test helpers: a real nats-server per suite, unique namespaces, and waiting without sleeps. */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { NatsServer, type NatsServerOptions } from '../adapters/nats-server/launcher.js';

export { NatsServer };

/** Starts a nats-server with a fresh store; `stop()` also removes the store. */
export async function startNats(options: NatsServerOptions = {}): Promise<NatsServer & { dispose(): Promise<void> }> {
  const server = await NatsServer.start(options);
  return Object.assign(server, {
    async dispose() {
      await server.stop();
      if (!options.storeDir) await rm(server.storeDir, { recursive: true, force: true });
    },
  });
}

/** A namespace no other test uses. */
export function uniqueNamespace(label: string): string {
  return `t_${label.replace(/[^A-Za-z0-9]/g, '').slice(0, 20)}_${randomBytes(4).toString('hex')}`;
}

/** Retries `check` until it returns without throwing, or throws its last error after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 10_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }
}

/** A logger that keeps what it was told, for assertions. */
export function memoryLogger(): { lines: string[]; debug(m: string): void; info(m: string): void; warn(m: string): void; error(m: string): void } {
  const lines: string[] = [];
  return {
    lines,
    debug: () => {},
    info: () => {},
    warn: (m) => lines.push(`warn: ${m}`),
    error: (m) => lines.push(`error: ${m}`),
  };
}

/**
 * Three nats-servers clustered on loopback, returned once JetStream can place a 3-replica stream.
 * A fresh cluster sometimes fails to elect a meta leader for a long time; it is then started anew.
 */
export async function startCluster(size = 3, attempts = 3): Promise<NatsServer[]> {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const { freePort } = await import('../adapters/nats-server/launcher.js');
  let lastError = '';
  for (let attempt = 0; attempt < attempts; attempt++) {
    const routePorts: number[] = [];
    for (let i = 0; i < size; i++) routePorts.push(await freePort());
    const servers = await Promise.all(
      routePorts.map((port, i) => NatsServer.start({ serverName: `n${i}`, cluster: { name: 'jetstate_test', port, routes: routePorts.filter((p) => p !== port) } })),
    );
    const nc = await connect({ servers: servers.map((s) => s.url) });
    const deadline = Date.now() + 15_000;
    let ready = false;
    while (!ready && Date.now() < deadline) {
      try {
        const jsm = await jetstreamManager(nc, { timeout: 2_000 });
        await jsm.streams.add({ name: 'cluster_probe', subjects: ['cluster_probe'], num_replicas: size });
        await jsm.streams.delete('cluster_probe');
        ready = true;
      } catch (e) {
        lastError = (e as Error).message;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    await nc.close();
    if (ready) return servers;
    for (const s of servers) {
      await s.stop();
      await rm(s.storeDir, { recursive: true, force: true });
    }
  }
  throw new Error(`a ${size}-server cluster did not become ready for JetStream after ${attempts} attempts: ${lastError}`);
}
