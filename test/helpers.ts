/** Shared test helpers: a real nats-server per suite, unique namespaces, and waiting without sleeps. */
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { after, before } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { NatsServer, startCluster as startLocalCluster, type NatsServerOptions } from '../adapters/nats-server/launcher.js';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, defineWorkflow, type ActivityContext, type ActivityOptions } from '../engine/index.js';

export { NatsServer };

const repoRoot = resolve(import.meta.dirname, '..');
/** Where `npm test` bundles the files of test/, a folder per run (scripts/test-files.mjs). */
const bundlesRoot = join(repoRoot, '.jetstate', 'test-bundles') + sep;
/** The run's folder when this test runs from those bundles (made together with the child's, so never stale). */
const bundles = (process.argv[1] ?? '').startsWith(bundlesRoot) ? bundlesRoot + process.argv[1]!.slice(bundlesRoot.length).split(sep)[0] : undefined;

/**
 * The module a child process loads for a TypeScript file of test/ (an engine process, a workflow
 * module it is told to load): its bundle when this test runs from the bundles, else the file.
 */
export function testModule(file: string): string {
  if (bundles === undefined) return file;
  return join(bundles, relative(repoRoot, resolve(file)).replace(/\.ts$/, '.mjs'));
}

/**
 * Node's arguments that run a TypeScript entry of test/ in a child process: its bundle under
 * `npm test` (a plain module: about 0.7 s of CPU less per process than tsx's loader), else tsx
 * on the source.
 */
export function nodeArgsFor(entry: string): string[] {
  const module = testModule(entry);
  return module === entry ? ['--import', 'tsx', entry] : ['--enable-source-maps', module];
}

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

/**
 * A nats-server and a connection to it for the tests of the calling `describe`: started before
 * them, stopped after. Read `nats` and `nc` inside the tests.
 */
export function natsForSuite(): { nats: Awaited<ReturnType<typeof startNats>>; nc: NatsConnection } {
  const suite = {} as { nats: Awaited<ReturnType<typeof startNats>>; nc: NatsConnection };
  before(async () => {
    suite.nats = await startNats();
    suite.nc = await connect({ servers: suite.nats.url });
  });
  after(async () => {
    await suite.nc?.close();
    await suite.nats?.dispose();
  });
  return suite;
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

/** A logger that adds what it is told, info and up, to `lines`, each line starting with `name` (for several engines in one test). */
export function labelledLogger(
  name: string,
  lines: string[],
): { debug(m: string): void; info(m: string): void; warn(m: string): void; error(m: string): void } {
  return {
    debug: () => {},
    info: (m) => lines.push(`${name} info: ${m}`),
    warn: (m) => lines.push(`${name} warn: ${m}`),
    error: (m) => lines.push(`${name} error: ${m}`),
  };
}

/** Three nats-servers clustered on loopback, once JetStream can place a 3-replica stream. */
export function startCluster(size = 3): Promise<NatsServer[]> {
  return startLocalCluster({ size, name: 'jetstate_test' });
}

/** The built CLI (`npm run build` first; `npm test` does it). */
export const CLI = resolve(import.meta.dirname, '../dist/adapters/cli/main.js');

/**
 * Runs the built CLI as a subprocess without blocking this process's event loop (an engine under
 * test may live here); killed after 30 s.
 */
export function runCli(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: options.env ?? { ...process.env, NATS_URL: '' },
      ...(options.cwd ? { cwd: options.cwd } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

/**
 * A workflow of one task: `working` invokes `work` (the activity `run` with `options`), then ends
 * `done`, or `failed` when the task fails for good. No input, no events.
 */
export function oneTaskWorkflow(name: string, run: (ctx: ActivityContext<unknown>) => Promise<unknown>, options?: ActivityOptions) {
  return defineWorkflow({
    name,
    version: 1,
    input: z.object({}),
    events: {},
    machine: setup({ actors: { work: activity(run, options) } }).createMachine({
      initial: 'working',
      states: {
        working: { invoke: { src: 'work', onDone: 'done', onError: 'failed' } },
        done: { type: 'final' },
        failed: { type: 'final' },
      },
    }),
  });
}

/**
 * Makes a stream refuse every publish ("maximum messages exceeded": full at its current count,
 * `discard: new`) for `ms`, then gives it its configuration back. Resolves once it refuses.
 */
export async function refuseFor(nc: NatsConnection, stream: string, ms: number): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  await jsm.streams.update(stream, { ...info.config, max_msgs: info.state.messages, discard: 'new' as never });
  setTimeout(() => void jsm.streams.update(stream, { ...info.config }).catch(() => {}), ms).unref();
}
