/**
 * Starts a restate-server for the peer benchmark: a single node with all roles, every port on
 * 127.0.0.1 (ingress, admin, node-to-node), its data in a fresh temporary folder that `stop()`
 * deletes. Durability is left at Restate's default: the log server fsyncs its write-ahead log on
 * every append (`log-server.rocksdb-disable-wal-fsync = false`, checked after start).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../adapters/nats-server/launcher.js';
import { track } from './cleanup.js';

export interface RestateServer {
  pid: number;
  ingressUrl: string;
  adminUrl: string;
  /** What was configured, for the report. */
  describe: string;
  /** Registers a service deployment (an HTTP/2 endpoint) and waits until its services are known. */
  register(endpointUrl: string): Promise<void>;
  /** The last lines of its log, for a failure message. */
  logTail(): Promise<string>;
  /** SIGTERM, SIGKILL after 10 s; then deletes its data. Idempotent. */
  stop(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitHttp(url: string, deadlineMs: number, what: string, child: ChildProcess): Promise<void> {
  let last = '';
  while (Date.now() < deadlineMs) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`restate-server exited (${child.exitCode ?? child.signalCode}) before ${what} was ready`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`restate-server: ${what} at ${url} not ready within the deadline (${last})`);
}

/** Starts the server and resolves once its admin API and ingress answer. */
export async function startRestateServer(binary: string): Promise<RestateServer> {
  const dir = await mkdtemp(join(tmpdir(), 'jetstate-restate-'));
  const [nodePort, adminPort, ingressPort] = [await freePort(), await freePort(), await freePort()];
  const config = [
    `node-name = "bench"`,
    `cluster-name = "bench"`,
    `base-dir = ${JSON.stringify(join(dir, 'data'))}`,
    `bind-address = "127.0.0.1:${nodePort}"`,
    `advertised-address = "http://127.0.0.1:${nodePort}/"`,
    // TCP only: no unix sockets in the data folder.
    `listen-mode = "tcp"`,
    `disable-telemetry = true`,
    `log-format = "compact"`,
    `log-disable-ansi-codes = true`,
    ``,
    `[admin]`,
    `bind-address = "127.0.0.1:${adminPort}"`,
    `advertised-admin-endpoint = "http://127.0.0.1:${adminPort}/"`,
    `disable-web-ui = true`,
    ``,
    `[ingress]`,
    `bind-address = "127.0.0.1:${ingressPort}"`,
    `advertised-ingress-endpoint = "http://127.0.0.1:${ingressPort}/"`,
  ].join('\n');
  const configFile = join(dir, 'restate.toml');
  await writeFile(configFile, config + '\n');
  const logFile = join(dir, 'restate.log');
  const log = createWriteStream(logFile);
  await new Promise((r) => log.once('open', r));
  const child = spawn(binary, ['--config-file', configFile, '--no-logo'], {
    cwd: dir,
    stdio: ['ignore', log, log],
    // DO_NOT_TRACK: no usage reports (disable-telemetry says the same in the config).
    env: { ...process.env, DO_NOT_TRACK: '1' },
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    untrack();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    log.end();
    await rm(dir, { recursive: true, force: true });
  };
  const untrack = track(stop);
  const ingressUrl = `http://127.0.0.1:${ingressPort}`;
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const logTail = async (): Promise<string> => (await readFile(logFile, 'utf8').catch(() => '')).split('\n').slice(-30).join('\n');
  try {
    if (child.pid === undefined) throw new Error(`restate-server could not be started from ${binary}`);
    const deadline = Date.now() + 60_000;
    await waitHttp(`${adminUrl}/health`, deadline, 'the admin API', child);
    await waitHttp(`${ingressUrl}/restate/health`, deadline, 'the ingress', child);
    // The effective configuration, to report the durability actually in force.
    const dumped = await new Promise<string>((resolve) => {
      const d = spawn(binary, ['--config-file', configFile, '--dump-config'], {
        stdio: ['ignore', 'pipe', 'ignore'],
        env: { ...process.env, DO_NOT_TRACK: '1' },
      });
      let out = '';
      d.stdout!.on('data', (b: Buffer) => (out += b.toString()));
      d.once('exit', () => resolve(out));
    });
    const walFsync = /\[log-server\][^[]*rocksdb-disable-wal-fsync = (\w+)/.exec(dumped)?.[1];
    const provider = /\[bifrost\][^[]*default-provider = "(\w+)"/.exec(dumped)?.[1];
    const describe =
      `restate-server single node, all roles, 127.0.0.1 ports ingress ${ingressPort} / admin ${adminPort} / node ${nodePort}, ` +
      `data in a temp dir; bifrost provider ${provider ?? '?'}, log-server rocksdb-disable-wal-fsync = ${walFsync ?? '?'} ` +
      `(${walFsync === 'false' ? 'every log append fsynced: the default' : 'NOT the default fsync'}), other settings default`;
    return {
      pid: child.pid,
      ingressUrl,
      adminUrl,
      describe,
      logTail,
      stop,
      async register(endpointUrl: string): Promise<void> {
        const res = await fetch(`${adminUrl}/deployments`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ uri: endpointUrl, force: true }),
          signal: AbortSignal.timeout(30_000),
        });
        if (!res.ok) throw new Error(`restate admin: registering ${endpointUrl} failed with HTTP ${res.status}: ${await res.text()}`);
      },
    };
  } catch (e) {
    const tail = await logTail();
    await stop();
    throw new Error(`${(e as Error).message}\nrestate-server log:\n${tail}`, { cause: e });
  }
}
