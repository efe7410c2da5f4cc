/**
 * The jetstate side of the peer benchmark: the engine in its own process (jetstate-engine.ts, the
 * service, as Restate's service is its own process) and the client in this one (the load
 * generator), on a fresh nats-server (temporary store, deleted afterwards) per measurement, driven
 * by the closed loop. `engine: 'inline'` runs the engine in this process instead.
 *
 *  - A: an invocation is `client.start()` of a new `peer_steps` instance, complete when its record
 *    is `done` (10 activity steps later).
 *  - B: each lane owns one `peer_tally` instance, started before the loop; an invocation is 10
 *    `client.send()`s of `ADD { i }` at once, complete when the instance's record has applied all
 *    10 of them (count reaches 10 more than before).
 *
 * Completion (`wait: 'auto'`, the default) is seen as a service that follows its instances would,
 * on a connection of its own: for A, by one subscription to the completion notices the engine
 * publishes when an instance finishes (`<ns>.done.peer_steps.>`, core NATS); for B, whose
 * instances do not finish, by one KV watch over the workflow's keys in the instances buckets.
 * `wait: 'watch'` uses the KV watch for A too (every record write of every step reaches the load
 * generator); `client.waitFor()` opens a watch per call and costs more (`wait: 'waitFor'`).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { writeFile, mkdir, rm } from 'node:fs/promises';
import { Session } from 'node:inspector';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { jetstream } from '@nats-io/jetstream';
import { Kvm, KvWatchInclude } from '@nats-io/kv';
import { NatsServer } from '../../adapters/nats-server/launcher.js';
import { createClient, createEngine, type Client, type Engine } from '../../engine/index.js';
import { connectFast, pool } from '../core.js';
import { closedLoop, windowOptions, type LoopResult, type Window } from './closed-loop.js';
import { PEERS_NAMESPACE, STEPS, peerSteps, peerTally } from './jetstate-workflows.js';
import { track, trackChild } from './cleanup.js';
import { cpuMeter, type CpuUse } from './machine.js';

export type Workload = 'A' | 'B';

export interface Measurement {
  loop: LoopResult;
  cpu: CpuUse;
  /** Calls that timed out and were sent again (jetstate: start/send, idempotent by id and key). */
  retries: number;
}

export interface JetstateRunOptions {
  syncAlways: boolean;
  workload: Workload;
  concurrency: number;
  window: Window;
  /** Completion by the completion notices (A) or the shared KV watch (B) (`auto`), the KV watch for both, or `client.waitFor()` per invocation. */
  wait: 'auto' | 'watch' | 'waitFor';
  /** Write a CPU profile of the engine's process over the measured window to this file. */
  profileFile?: string;
  /** The engine in its own process (default) or in the load generator's. */
  engine?: 'process' | 'inline';
}

interface EngineProcess {
  pid: number;
  /** Starts a CPU profile of the engine's process, to be written to `file` by the returned stop. */
  profile(file: string): Promise<() => Promise<void>>;
  stop(): Promise<void>;
}

/** Forks jetstate-engine.ts on `url` and resolves once its engine runs. */
async function startEngineProcess(url: string): Promise<EngineProcess> {
  const script = fileURLToPath(new URL('./jetstate-engine.ts', import.meta.url));
  // The parent's exec arguments carry the TypeScript loader.
  const child: ChildProcess = fork(script, [url], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const stop = trackChild(child, 10_000);
  const reply = (key: string): Promise<void> =>
    new Promise((resolve) => {
      const on = (m: Record<string, unknown>): void => {
        if (key in m) {
          child.off('message', on);
          resolve();
        }
      };
      child.on('message', on);
    });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the jetstate engine process did not start within 30 s')), 30_000);
      child.once('exit', (code) => reject(new Error(`the jetstate engine process exited (${code}) before it ran`)));
      createInterface({ input: child.stdout! }).once('line', (line) => {
        clearTimeout(timer);
        if (line === 'ready') resolve();
        else reject(new Error(`the jetstate engine process printed '${line}' instead of 'ready'`));
      });
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    pid: child.pid!,
    async profile(file) {
      const started = reply('profiling');
      child.send({ profile: file });
      await started;
      return async () => {
        const done = reply('profiled');
        child.send({ profile: null });
        await done;
      };
    },
    stop,
  };
}

const INVOCATION_TIMEOUT_MS = 60_000;
const SUM_OF_STEPS = (STEPS * (STEPS + 1)) / 2;

interface Seen {
  status: string;
  context: { sum: number; count?: number };
}

/** Waiters by instance key, resolved by the KV watch when their condition holds. */
class Completions {
  private readonly waiting = new Map<string, { done: (s: Seen) => boolean; resolve: (s: Seen) => void }>();

  /** Registers before the invocation starts, so an update cannot be missed. */
  expect(key: string, done: (s: Seen) => boolean): Promise<Seen> {
    return new Promise((resolve) => this.waiting.set(key, { done, resolve }));
  }

  seen(key: string, s: Seen): void {
    const w = this.waiting.get(key);
    if (w && w.done(s)) {
      this.waiting.delete(key);
      w.resolve(s);
    }
  }
}

const dec = new TextDecoder();

/**
 * Calls `f` again when NATS did not acknowledge in time (the server is saturated: with
 * `sync_interval: always` and thousands of publishes in flight the acknowledgement can take longer
 * than the client's 5 s), as a user would; safe because a start is idempotent by id and a send
 * carries an idempotency key.
 */
async function retryOnTimeout<T>(f: () => Promise<T>, counter: { retries: number }): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await f();
    } catch (e) {
      if ((e as Error).name !== 'TimeoutError' || attempt >= 5) throw e;
      counter.retries++;
    }
  }
}

async function profiler(file: string): Promise<{ open(): Promise<void>; close(): Promise<void> }> {
  const session = new Session();
  session.connect();
  const post = <T>(method: string, params?: object): Promise<T> =>
    new Promise((resolve, reject) => session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res as T))));
  return {
    async open() {
      await post('Profiler.enable');
      await post('Profiler.setSamplingInterval', { interval: 500 });
      await post('Profiler.start');
    },
    async close() {
      const { profile } = await post<{ profile: unknown }>('Profiler.stop');
      session.disconnect();
      await mkdir(join(file, '..'), { recursive: true });
      await writeFile(file, JSON.stringify(profile));
    },
  };
}

/** One measurement (one workload, one concurrency, one server setting). */
export async function runJetstate(o: JetstateRunOptions): Promise<Measurement> {
  const server = await NatsServer.start({ syncAlways: o.syncAlways });
  const untrack = track(() => server.stop());
  let engine: Engine | undefined;
  let engineProcess: EngineProcess | undefined;
  let client: Client | undefined;
  let stopWatch: (() => void) | undefined;
  const watchConnection = await connectFast(server.url, 'peers-watch');
  try {
    const options = { servers: server.url, namespace: PEERS_NAMESPACE, workflows: [peerSteps, peerTally] };
    if (o.engine === 'inline') engine = await createEngine({ ...options, name: 'peers-engine' });
    else engineProcess = await startEngineProcess(server.url);
    client = await createClient({ ...options, name: 'peers-client' });
    const c = client;
    const workflow = o.workload === 'A' ? peerSteps : peerTally;

    const counter = { retries: 0 };
    const completions = new Completions();
    const notices = o.wait === 'auto' && o.workload === 'A';
    if (notices) {
      // A finished instance's notice: { workflow, id, status, revision, output }.
      const sub = watchConnection.subscribe(`${PEERS_NAMESPACE}.done.${workflow.name}.>`, {
        callback: (err, msg) => {
          if (err) return;
          const n = JSON.parse(dec.decode(msg.data)) as { id: string; status: string; output?: { sum: number } };
          completions.seen(`${workflow.name}.${n.id}`, { status: n.status, context: { sum: n.output?.sum ?? Number.NaN } });
        },
      });
      await watchConnection.flush();
      stopWatch = () => sub.unsubscribe();
    } else if (o.wait !== 'waitFor') {
      // The records are spread over several buckets: watch each.
      const watchers = await Promise.all(
        c.recordBuckets.map(async (b) =>
          (await new Kvm(jetstream(watchConnection)).open(b)).watch({ key: `${workflow.name}.>`, include: KvWatchInclude.UpdatesOnly }),
        ),
      );
      stopWatch = () => watchers.forEach((w) => w.stop());
      for (const watcher of watchers) {
        void (async () => {
          for await (const e of watcher) {
            if (e.operation !== 'PUT') continue;
            const r = JSON.parse(dec.decode(e.value)) as { status: string; snapshot: { context: Seen['context'] } };
            completions.seen(e.key, { status: r.status, context: r.snapshot.context });
          }
        })();
      }
    }

    let invoke: (lane: number, k: number) => Promise<void>;
    if (o.workload === 'A') {
      invoke = async (lane, k) => {
        const id = `a${lane}_${k}`;
        let seen: Seen;
        if (o.wait !== 'waitFor') {
          const done = completions.expect(`${peerSteps.name}.${id}`, (s) => s.status !== 'running');
          await retryOnTimeout(() => c.start(peerSteps, { id, input: {} }), counter);
          seen = await done;
        } else {
          await retryOnTimeout(() => c.start(peerSteps, { id, input: {} }), counter);
          const inst = await c.waitFor(peerSteps, id, (s) => s.status !== 'running', { timeoutMs: INVOCATION_TIMEOUT_MS });
          seen = { status: inst.status, context: inst.context as Seen['context'] };
        }
        if (seen.status !== 'done' || seen.context.sum !== SUM_OF_STEPS) {
          throw new Error(`jetstate A: instance ${id} ended ${seen.status} with sum ${seen.context.sum}, expected done with ${SUM_OF_STEPS}`);
        }
      };
    } else {
      // Each lane's instance exists before the loop, as a Restate virtual object key needs no creation.
      await pool(
        Array.from({ length: o.concurrency }, (_, l) => l),
        64,
        (l) => retryOnTimeout(() => c.start(peerTally, { id: `b${l}`, input: {} }), counter),
      );
      invoke = async (lane, k) => {
        const id = `b${lane}`;
        const target = STEPS * (k + 1);
        const sends = (): Promise<unknown> =>
          Promise.all(
            Array.from({ length: STEPS }, (_, j) =>
              retryOnTimeout(() => c.send(peerTally, id, { type: 'ADD', i: j + 1 }, { idempotencyKey: `${id}_${k}_${j}` }), counter),
            ),
          );
        let seen: Seen;
        if (o.wait !== 'waitFor') {
          const done = completions.expect(`${peerTally.name}.${id}`, (s) => (s.context.count ?? 0) >= target);
          await sends();
          seen = await done;
        } else {
          await sends();
          const inst = await c.waitFor(peerTally, id, (s) => ((s.context as Seen['context']).count ?? 0) >= target, { timeoutMs: INVOCATION_TIMEOUT_MS });
          seen = { status: inst.status, context: inst.context as Seen['context'] };
        }
        if (seen.context.count !== target || seen.context.sum !== SUM_OF_STEPS * (k + 1)) {
          throw new Error(
            `jetstate B: instance ${id} shows count ${seen.context.count} sum ${seen.context.sum}, expected ${target} and ${SUM_OF_STEPS * (k + 1)}`,
          );
        }
      };
    }

    let meter: (() => CpuUse) | undefined;
    let cpu: CpuUse = {};
    const inlineProfile = o.profileFile && !engineProcess ? await profiler(o.profileFile) : undefined;
    let stopProfile: (() => Promise<void>) | undefined;
    const loop = await closedLoop({
      ...windowOptions(o.window, o.concurrency),
      invocationTimeoutMs: INVOCATION_TIMEOUT_MS,
      invoke,
      onWindow: {
        async open() {
          meter = cpuMeter({ 'nats-server': server.pid, ...(engineProcess ? { service: engineProcess.pid } : {}) });
          await inlineProfile?.open();
          if (o.profileFile && engineProcess) stopProfile = await engineProcess.profile(o.profileFile);
        },
        async close() {
          cpu = meter?.() ?? {};
          await inlineProfile?.close();
          await stopProfile?.();
        },
      },
    });
    return { loop, cpu, retries: counter.retries };
  } finally {
    stopWatch?.();
    await client?.close().catch(() => {});
    await engine?.close().catch(() => {});
    await engineProcess?.stop();
    await watchConnection.close().catch(() => {});
    await server.stop();
    untrack();
    await rm(server.storeDir, { recursive: true, force: true });
  }
}
