/**
 * Starts and stops a local nats-server with JetStream: for `jetstate dev`, the tests and the
 * benchmarks. Binds to 127.0.0.1 only, keeps its store in the given folder, and can restart on
 * the same store and port.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NatsServerOptions {
  /** Path of the nats-server binary; found with {@link findNatsServer} when absent. */
  binary?: string;
  /** JetStream store folder; a fresh temporary one when absent. */
  storeDir?: string;
  /** Client port; a free one when absent. */
  port?: number;
  /** `sync_interval: always`: every write is on disk before it is acknowledged. */
  syncAlways?: boolean;
  serverName?: string;
  /** Joins a cluster: this server's route port and the route ports of its peers. */
  cluster?: { name: string; port: number; routes: number[] };
  /** Extra lines for the config file. */
  extraConfig?: string;
  /**
   * Its own process group: a Ctrl-C in the terminal then reaches only the parent, which drains
   * what runs on the server before it stops it (`jetstate dev`). Off for tests, so a test process
   * interrupted takes its servers with it.
   */
  ownProcessGroup?: boolean;
  /** false starts a server without JetStream (a leaf node that uses its hub's). Default true. */
  jetstream?: boolean;
  /** JetStream domain of this server (`jetstream { domain }`): needed on both ends of a leaf node link when both run JetStream. */
  domain?: string;
  /** Accepts leaf node connections on this loopback port (a hub). */
  leafListenPort?: number;
  /** The loopback port the hub tells its leaf nodes to reconnect to (default: the listen port). */
  leafAdvertisePort?: number;
  /** Connects as a leaf node to hubs listening on these loopback ports. */
  leafRemotePorts?: number[];
  /** The user the leaf node connects to its hubs as (the hub's `authorization` users). */
  leafRemoteAuth?: { user: string; pass: string };
}

/** The package's own folder, from its source or from dist/. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}
const root = packageRoot();

/** The nats-server binary: $JETSTATE_NATS_SERVER, the project-local copy, or one on PATH. */
export function findNatsServer(): string {
  const candidates = [process.env['JETSTATE_NATS_SERVER'], join(root, '.jetstate', 'nats', 'usr', 'sbin', 'nats-server'), 'nats-server'];
  for (const c of candidates) {
    if (!c) continue;
    const r = spawnSync(c, ['--version'], { encoding: 'utf8' });
    if (r.status === 0 && /v(\d+)\.(\d+)/.test(r.stdout)) {
      const [, major, minor] = /v(\d+)\.(\d+)/.exec(r.stdout)!;
      if (Number(major) > 2 || (Number(major) === 2 && Number(minor) >= 10)) return c;
    }
  }
  throw new Error(
    'no nats-server 2.10 or newer found: run scripts/ensure-nats.sh (it fetches one into .jetstate/nats) or set JETSTATE_NATS_SERVER to its path',
  );
}

export async function freePort(): Promise<number> {
  return new Promise((ok, ko) => {
    const s = createServer();
    s.once('error', ko);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? ok(addr.port) : ko(new Error('no port'))));
    });
  });
}

/** Attempts to start a server on a port chosen for it, each on another one, while ports are taken meanwhile. */
const PORT_ATTEMPTS = 5;

/** A server that could not listen on one of its ports (taken between choosing it and binding it). */
export function isPortTaken(e: unknown): boolean {
  return e instanceof Error && e.message.includes('address already in use');
}

export class NatsServer {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private logTail = '';

  private constructor(
    readonly binary: string,
    readonly storeDir: string,
    readonly port: number,
    private options: NatsServerOptions,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** True while the server process runs (started and not exited). */
  get running(): boolean {
    const child = this.child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  static async start(options: NatsServerOptions = {}): Promise<NatsServer> {
    const binary = options.binary ?? findNatsServer();
    const storeDir = options.storeDir ?? (await mkdtemp(join(tmpdir(), 'jetstate-nats-')));
    // A free port can be taken by another process between finding it and the server binding it:
    // one chosen here is chosen again then.
    for (let attempt = 1; ; attempt++) {
      const port = options.port ?? (await freePort());
      const server = new NatsServer(binary, storeDir, port, options);
      try {
        await server.launch();
        return server;
      } catch (e) {
        if (options.port === undefined && attempt < PORT_ATTEMPTS && isPortTaken(e)) continue;
        // Neither a server that never got ready nor a store made here for it is left behind.
        if (server.running) await server.stop().catch(() => {});
        if (!options.storeDir) await rm(storeDir, { recursive: true, force: true });
        throw e;
      }
    }
  }

  private get configFile(): string {
    return join(this.storeDir, 'nats-server.conf');
  }

  private async writeConfig(): Promise<void> {
    await mkdir(this.storeDir, { recursive: true });
    const o = this.options;
    const lines = [`listen: 127.0.0.1:${this.port}`, `server_name: ${o.serverName ?? `jetstate_${this.port}`}`];
    if (o.jetstream !== false) {
      lines.push(
        `jetstream { store_dir: ${JSON.stringify(this.storeDir)}${o.syncAlways ? ', sync_interval: always' : ''}${o.domain ? `, domain: ${o.domain}` : ''} }`,
      );
    }
    // A leaf learns the address the hub advertises and reconnects there: the tests put a relay
    // in between (to cut the link) and have the hub advertise the relay's port.
    if (o.leafListenPort !== undefined)
      lines.push(`leafnodes { listen: 127.0.0.1:${o.leafListenPort}${o.leafAdvertisePort ? `, advertise: "127.0.0.1:${o.leafAdvertisePort}"` : ''} }`);
    if (o.leafRemotePorts?.length) {
      const a = o.leafRemoteAuth;
      const credentials = a ? `${encodeURIComponent(a.user)}:${encodeURIComponent(a.pass)}@` : '';
      // Reconnect quickly after the hub comes back (the default waits a few seconds between tries).
      lines.push(
        `leafnodes { reconnect: "250ms", remotes: [${o.leafRemotePorts.map((p) => `{ url: "nats-leaf://${credentials}127.0.0.1:${p}" }`).join(', ')}] }`,
      );
    }
    if (o.cluster) {
      lines.push(
        `cluster { name: ${o.cluster.name}, listen: 127.0.0.1:${o.cluster.port}, routes: [${o.cluster.routes.map((p) => `nats-route://127.0.0.1:${p}`).join(', ')}] }`,
      );
    }
    if (o.extraConfig) lines.push(o.extraConfig);
    await writeFile(this.configFile, lines.join('\n') + '\n');
  }

  private async launch(): Promise<void> {
    await this.writeConfig();
    const o = this.options;
    const child = spawn(this.binary, ['-c', this.configFile], { stdio: ['ignore', 'ignore', 'pipe'], detached: o.ownProcessGroup === true });
    this.child = child;
    this.exited = new Promise((r) => child.once('exit', () => r()));
    let log = '';
    await new Promise<void>((ok, ko) => {
      const timer = setTimeout(() => ko(new Error(`nats-server did not become ready in 20 s:\n${log}`)), 20_000);
      child.stderr!.on('data', (d: Buffer) => {
        log = (log + d.toString()).slice(-8_000);
        if (log.includes('Server is ready')) {
          clearTimeout(timer);
          ok();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        ko(new Error(`nats-server exited with ${code} before it was ready:\n${log}`));
      });
    });
    child.stderr!.removeAllListeners('data');
    this.logTail = log;
    child.stderr!.on('data', (d: Buffer) => (this.logTail = (this.logTail + d.toString()).slice(-16_000)));
    // For diagnosing a test: $JETSTATE_NATS_LOG_DIR keeps every server's whole log, by server name.
    const logDir = process.env['JETSTATE_NATS_LOG_DIR'];
    if (logDir) {
      const file = join(logDir, `${o.serverName ?? `jetstate_${this.port}`}.log`);
      appendFileSync(file, log);
      child.stderr!.on('data', (d: Buffer) => appendFileSync(file, d));
    }
  }

  /** The last 16 kB the server logged, for diagnosing a failed test. */
  log(): string {
    return this.logTail;
  }

  /** Stops the server (SIGTERM, then SIGKILL after 5 s). */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(t);
  }

  /** Kills the server with SIGKILL, as a crash would. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await this.exited;
  }

  /**
   * Rewrites the config with these `extraConfig` lines and has the running server reload it
   * (SIGHUP); resolves once the server says it reloaded. Users and their permissions change for
   * client connections at once; a leaf node connection keeps the permissions it connected with
   * until it reconnects.
   */
  async reload(extraConfig: string): Promise<void> {
    const child = this.child;
    if (!child || !this.running) throw new Error(`nats-server on port ${this.port} is not running; nothing to reload`);
    this.options = { ...this.options, extraConfig };
    await this.writeConfig();
    const reloaded = new Promise<void>((ok, ko) => {
      const timer = setTimeout(() => {
        child.stderr!.off('data', check);
        ko(new Error(`nats-server on port ${this.port} did not reload its config in 10 s:\n${this.logTail.slice(-2_000)}`));
      }, 10_000);
      let seen = '';
      const check = (d: Buffer): void => {
        seen += d.toString();
        if (/Reloaded server configuration/.test(seen)) {
          clearTimeout(timer);
          child.stderr!.off('data', check);
          ok();
        } else if (/Failed to reload server configuration/.test(seen)) {
          clearTimeout(timer);
          child.stderr!.off('data', check);
          ko(new Error(`nats-server on port ${this.port} refused the new config: ${seen.slice(-1_000)}`));
        }
      };
      child.stderr!.on('data', check);
    });
    child.kill('SIGHUP');
    await reloaded;
  }

  /** Starts again on the same store and port. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }
}

export interface ClusterOptions {
  size?: number;
  syncAlways?: boolean;
  name?: string;
  /** Fresh clusters sometimes fail to elect a meta leader for a long time; they are started anew. */
  attempts?: number;
  /** Path of the nats-server binary; found with {@link findNatsServer} when absent. */
  binary?: string;
}

/**
 * Starts `size` nats-servers clustered on loopback and returns them once JetStream can place a
 * stream with `size` replicas.
 */
export async function startCluster(options: ClusterOptions = {}): Promise<NatsServer[]> {
  const { size = 3, syncAlways = false, name = 'jetstate_local', attempts = 3 } = options;
  const binary = options.binary ?? findNatsServer();
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  let lastError = '';
  for (let attempt = 0; attempt < attempts; attempt++) {
    const routePorts: number[] = [];
    for (let i = 0; i < size; i++) routePorts.push(await freePort());
    const started = await Promise.allSettled(
      routePorts.map((port, i) =>
        NatsServer.start({ binary, syncAlways, serverName: `n${i}`, cluster: { name, port, routes: routePorts.filter((p) => p !== port) } }),
      ),
    );
    const servers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      for (const s of servers) {
        await s.stop();
        await rm(s.storeDir, { recursive: true, force: true });
      }
      // A route port taken meanwhile: all of them are chosen again.
      if (!isPortTaken(failed.reason)) throw failed.reason;
      lastError = (failed.reason as Error).message;
      continue;
    }
    const nc = await connect({ servers: servers.map((s) => s.url) });
    // On a loaded machine (other tests' clusters and engines) placement can take longer than 15 s.
    const deadline = Date.now() + 30_000;
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
