/**
 * Core benchmark: jetstate against a hand-written JetStream + KV baseline, on a real nats-server
 * started by this script, once with default settings and once with `sync_interval: always`.
 *
 *   npm run bench                 # full run (~65 s on 2 cores)
 *   npm run bench -- --quick      # shorter run (~20 s), smaller figures
 *   npm run bench -- --only=default|always
 *   npm run bench -- --repeat=3   # each throughput measurement 3 times, median shown
 *   npm run bench -- --engine='{"leaseTtlMs":600000}'   # extra engine options (experiments)
 *
 * For each server setting and for both jetstate and the baseline it measures:
 *   1. throughput: N instances with a backlog of E events each, timed from worker start until
 *      every instance's persisted state shows all E events (seen by one KV watch);
 *   2. latency, one instance, sequential sends: from `send()` returning to a KV watcher in this
 *      process seeing the new state;
 *   3. latency under an open-loop, paced load (events/s spread over many instances), same clock.
 *
 * The baseline is what users write by hand: one durable pull consumer over the same kind of event
 * subjects; per message kv.get -> createActor(machine, { snapshot }).start() -> send ->
 * getPersistedSnapshot -> kv.put -> ack, one message at a time.
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { AckPolicy, jetstream, jetstreamManager, type ConsumerMessages, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, KvWatchInclude, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { assign, createActor, setup } from 'xstate';
import { z } from 'zod';
import { NatsServer, findNatsServer } from '../adapters/nats-server/launcher.js';
import { createClient, createEngine, defineWorkflow, partitionOf, type EngineOptions } from '../engine/index.js';
import { layout } from '../engine/internal.js';

// ---------------------------------------------------------------------------------------------
// Configuration

/**
 * True when this file is the script being run (`npm run bench`), false when bench/operations.ts
 * imports its helpers: then it reads no command-line flags and runs nothing by itself.
 */
const isMain = ((): boolean => {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
})();
const args = isMain ? process.argv.slice(2) : [];
const quick = args.includes('--quick');
const only = args.find((a) => a.startsWith('--only='))?.slice('--only='.length);
if (only !== undefined && only !== 'default' && only !== 'always') {
  console.error(`--only must be 'default' or 'always', got '${only}'`);
  process.exit(2);
}
/** Repeats each throughput measurement N times and reports the median run (latencies run once). */
const repeat = Math.max(1, Number(args.find((a) => a.startsWith('--repeat='))?.slice('--repeat='.length) ?? 1) || 1);
/** Extra engine options for experiments, e.g. --engine='{"leaseTtlMs":600000}'. */
const extraEngineOptions = ((): Partial<EngineOptions> => {
  const raw = args.find((a) => a.startsWith('--engine='))?.slice('--engine='.length);
  return raw ? (JSON.parse(raw) as Partial<EngineOptions>) : {};
})();

export const CFG = quick
  ? { instances: 500, eventsPerInstance: 10, soloWarmup: 100, soloEvents: 500, openRate: 1_000, openSeconds: 2, openInstances: 200 }
  : { instances: 1_000, eventsPerInstance: 20, soloWarmup: 200, soloEvents: 2_000, openRate: 1_000, openSeconds: 5, openInstances: 500 };

/** Upper bound of any single wait; a measurement that exceeds it fails instead of hanging. */
const WAIT_LIMIT_MS = 60_000;
/** The whole run stops by itself after this. */
const WATCHDOG_MS = (quick ? 120_000 : 175_000) + (repeat - 1) * (quick ? 15_000 : 45_000);
const SEND_CONCURRENCY = 256;
const PARTITIONS = 16;

/** One server URL, or the URLs of a cluster. */
export type Servers = string | string[];

export const now = (): number => performance.now();
const enc = new TextEncoder();
const dec = new TextDecoder();

// ---------------------------------------------------------------------------------------------
// The workflow used by both sides

export const counterMachine = setup({
  types: { context: {} as { count: number }, events: {} as { type: 'INC' } },
}).createMachine({
  id: 'counter',
  initial: 'active',
  context: { count: 0 },
  states: {
    active: { on: { INC: { actions: assign({ count: ({ context }) => context.count + 1 }) } } },
  },
});

export const counter = defineWorkflow({
  name: 'counter',
  version: 1,
  input: z.object({}),
  events: { INC: z.object({}) },
  machine: counterMachine,
});

const WF = counter.name;
export const keyOf = (id: string): string => `${WF}.${id}`;

/** `count` from a jetstate instance record. */
export const jetstateCount = (b: Uint8Array): number => (JSON.parse(dec.decode(b)) as { snapshot: { context: { count: number } } }).snapshot.context.count;
/** `count` from a baseline value (an XState persisted snapshot). */
const baselineCount = (b: Uint8Array): number => (JSON.parse(dec.decode(b)) as { context: { count: number } }).context.count;

// ---------------------------------------------------------------------------------------------
// Helpers

export function uniqueName(label: string): string {
  return `b_${label}_${randomBytes(3).toString('hex')}`;
}

export async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await fn(item);
    }
  });
  await Promise.all(lanes);
}

export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, ko) => {
      timer = setTimeout(() => ko(new Error(`${what}: not done within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export async function connectFast(url: Servers, name: string): Promise<NatsConnection> {
  return connect({ servers: url, name, noAsyncTraces: true });
}

/**
 * One KV watch over a bucket (on its own connection). Calls `onCount(key, count, t)` with the time
 * the watch delivered each update.
 */
export async function watchCounts(
  nc: NatsConnection,
  buckets: string | readonly string[],
  countOf: (b: Uint8Array) => number,
  onCount: (key: string, count: number, t: number) => void,
  key = '>',
): Promise<{ stop(): void; updates(): number }> {
  const kvm = new Kvm(jetstream(nc));
  const watchers = await Promise.all(
    (typeof buckets === 'string' ? [buckets] : buckets).map(async (bucket) => (await kvm.open(bucket)).watch({ key, include: KvWatchInclude.UpdatesOnly })),
  );
  let updates = 0;
  for (const watcher of watchers) {
    void (async () => {
      for await (const e of watcher) {
        const t = now();
        if (e.operation !== 'PUT') continue;
        updates++;
        onCount(e.key, countOf(e.value), t);
      }
    })();
  }
  return { stop: () => watchers.forEach((w) => w.stop()), updates: () => updates };
}

/** The KV buckets holding a namespace's instance records (the engine's default shard count unless told). */
export function recordBuckets(ns: string, shards = 4): string[] {
  const names = layout(ns);
  return Array.from({ length: shards }, (_, s) => names.instancesShard(s));
}

/** Resolves when `n` keys have reached `target`; records the time of the last one. */
export function completion(n: number, target: number): { onCount(key: string, count: number, t: number): void; done: Promise<number>; finished(): number } {
  const reached = new Set<string>();
  let resolve!: (t: number) => void;
  const done = new Promise<number>((r) => (resolve = r));
  return {
    onCount(key, count, t) {
      if (count >= target && !reached.has(key)) {
        reached.add(key);
        if (reached.size === n) resolve(t);
      }
    },
    done,
    finished: () => reached.size,
  };
}

/**
 * Matches sends with the KV update that shows them. The k-th event sent to a key makes its count
 * k (both sides apply each key's events in stream order), so a send with target k is persisted
 * when the watcher first reports a count >= k for that key.
 */
export class LatencyTracker {
  readonly samples: number[] = [];
  /** Persisted state seen before `send()` returned (recorded as 0 ms). */
  early = 0;
  private readonly seen = new Map<string, number>();
  private readonly pending = new Map<string, Array<{ target: number; sentAt: number; resolve: () => void }>>();
  private outstanding = 0;
  private idle: (() => void) | undefined;
  private recording = true;

  setRecording(on: boolean): void {
    this.recording = on;
  }

  onCount = (key: string, count: number, t: number): void => {
    if (count > (this.seen.get(key) ?? -1)) this.seen.set(key, count);
    const list = this.pending.get(key);
    if (!list) return;
    const keep: typeof list = [];
    for (const p of list) {
      if (p.target <= count) this.settle(t - p.sentAt, p.resolve);
      else keep.push(p);
    }
    if (keep.length === 0) this.pending.delete(key);
    else this.pending.set(key, keep);
  };

  /** Call when `send()` returned; resolves once the state is seen persisted. */
  sent(key: string, target: number, sentAt: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.outstanding++;
      if ((this.seen.get(key) ?? -1) >= target) {
        if (this.recording) this.early++;
        this.settle(0, resolve);
        return;
      }
      const list = this.pending.get(key) ?? [];
      list.push({ target, sentAt, resolve });
      this.pending.set(key, list);
    });
  }

  /** Resolves when every recorded send has been seen persisted. */
  drained(): Promise<void> {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise((r) => (this.idle = r));
  }

  private settle(ms: number, resolve: () => void): void {
    if (this.recording) this.samples.push(ms);
    this.outstanding--;
    resolve();
    if (this.outstanding === 0 && this.idle) {
      const i = this.idle;
      this.idle = undefined;
      i();
    }
  }
}

export interface LatencyStats {
  n: number;
  p50: number;
  p99: number;
  max: number;
  early: number;
  /** Duration of the send() calls themselves (publish + ack). */
  sendP50: number;
  sendP99: number;
  /** Events actually offered per second (open loop only). */
  offeredRate?: number;
}

export function stats(samples: number[], sendDurations: number[], early: number, offeredRate?: number): LatencyStats {
  const s = [...samples].sort((a, b) => a - b);
  const d = [...sendDurations].sort((a, b) => a - b);
  const r: LatencyStats = {
    n: s.length,
    p50: percentile(s, 0.5),
    p99: percentile(s, 0.99),
    max: s[s.length - 1] ?? NaN,
    early,
    sendP50: percentile(d, 0.5),
    sendP99: percentile(d, 0.99),
  };
  if (offeredRate !== undefined) r.offeredRate = offeredRate;
  return r;
}

export interface ThroughputStats {
  events: number;
  seconds: number;
  rate: number;
  /** Time until the workers were started (engine created / consumer created). */
  startupMs: number;
  /** KV writes the workers made for these events. */
  writes: number;
  /** Rates of every repetition (with --repeat). */
  runs?: number[];
  /** jetstate only: accepted `send()` calls per second while the backlog was published (256 in flight). */
  sendRate?: number;
}

/** The median repetition, with every repetition's rate attached. */
export function medianRun(runs: ThroughputStats[]): ThroughputStats {
  const sorted = [...runs].sort((a, b) => a.rate - b.rate);
  return { ...sorted[Math.floor((sorted.length - 1) / 2)]!, runs: runs.map((r) => r.rate) };
}

/** The writes so far to the buckets' streams (the sum of their last sequences). */
export async function kvLastSeq(jsm: JetStreamManager, buckets: string | readonly string[]): Promise<number> {
  const all = typeof buckets === 'string' ? [buckets] : buckets;
  const seqs = await Promise.all(all.map(async (b) => (await jsm.streams.info(`KV_${b}`).catch(() => null))?.state.last_seq ?? 0));
  return seqs.reduce((a, b) => a + b, 0);
}

/** Deletes every stream whose name contains `ns` (the measurement is over). */
export async function dropNamespace(jsm: JetStreamManager, ns: string): Promise<void> {
  const names: string[] = [];
  for await (const n of jsm.streams.names()) if (n.includes(ns)) names.push(n);
  await Promise.all(names.map((n) => jsm.streams.delete(n).catch(() => false)));
}

/**
 * Paces `total` sends at `rate` per second (open loop: a slow send does not delay the next one)
 * and returns the achieved offered rate.
 */
async function paced(total: number, rate: number, issue: (i: number) => void): Promise<number> {
  const interval = 1_000 / rate;
  const start = now();
  let i = 0;
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const due = Math.min(total, Math.floor((now() - start) / interval) + 1);
      while (i < due) issue(i++);
      if (i >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  const elapsed = (now() - start) / 1_000;
  return total / Math.max(elapsed, (total - 1) / rate);
}

// ---------------------------------------------------------------------------------------------
// jetstate

function engineOptions(url: Servers, namespace: string, extra: Partial<EngineOptions> = {}): EngineOptions {
  return { servers: url, namespace, workflows: [counter], ...extraEngineOptions, ...extra };
}

/** The engines of a throughput measurement, prepared but not started. */
export interface EngineFleet {
  /** Starts every engine; resolves once all of them are created. This part is timed. */
  start(): Promise<void>;
  close(): Promise<void>;
}

/** Prepares the engines for `options` (untimed); the default is one engine in this process. */
export type FleetFactory = (options: EngineOptions) => Promise<EngineFleet>;

export const oneEngine: FleetFactory = async (options) => {
  let engine: Awaited<ReturnType<typeof createEngine>> | undefined;
  return {
    async start() {
      engine = await createEngine(options);
    },
    async close() {
      await engine?.close();
    },
  };
};

/**
 * Throughput on a backlog: `n` instances with `e` events each are published first (by a client,
 * no workers), then the engines start; timed until one KV watch has seen every instance at `e`.
 * `extra.partitions` and `extra.replicas` also apply to the namespace the client creates;
 * `extra.telemetry` also traces the backlog's sends, so the events carry their trace context.
 */
export async function jetstateThroughput(
  url: Servers,
  admin: Admin,
  extra: Partial<EngineOptions> = {},
  n = CFG.instances,
  e = CFG.eventsPerInstance,
  fleet: FleetFactory = oneEngine,
): Promise<ThroughputStats> {
  const ns = uniqueName('jt');
  const options = engineOptions(url, ns, extra);
  const ids = Array.from({ length: n }, (_, i) => `i${i}`);
  // Backlog first, with a client (no workers).
  const client = await createClient({
    servers: url,
    namespace: ns,
    partitions: options.partitions ?? PARTITIONS,
    workflows: [counter],
    ...(options.replicas !== undefined ? { replicas: options.replicas } : {}),
    ...(options.duplicateWindowMs !== undefined ? { duplicateWindowMs: options.duplicateWindowMs } : {}),
    ...(options.telemetry !== undefined ? { telemetry: options.telemetry } : {}),
  });
  await pool(ids, 64, (id) => client.start(counter, { id, input: {} }));
  const sends: string[] = [];
  for (let r = 0; r < e; r++) sends.push(...ids);
  const tSend = now();
  await pool(sends, SEND_CONCURRENCY, (id) => client.send(counter, id, { type: 'INC' }));
  const sendRate = sends.length / ((now() - tSend) / 1_000);
  await client.close();

  const bucket = recordBuckets(ns);
  const before = await kvLastSeq(admin.jsm, bucket);
  const c = completion(n, e);
  const watch = await watchCounts(admin.nc, bucket, jetstateCount, c.onCount);
  let engines: EngineFleet | undefined;
  try {
    engines = await fleet(options);
    const t0 = now();
    await engines.start();
    const startupMs = now() - t0;
    const t1 = await withTimeout(c.done, WAIT_LIMIT_MS, `jetstate throughput (${c.finished()}/${n} instances done)`);
    const seconds = (t1 - t0) / 1_000;
    const writes = (await kvLastSeq(admin.jsm, bucket)) - before;
    return { events: n * e, seconds, rate: (n * e) / seconds, startupMs, writes, sendRate };
  } finally {
    watch.stop();
    await engines?.close();
    await dropNamespace(admin.jsm, ns);
  }
}

/** Latency, one instance, sequential sends: from `send()` returning to the KV watch seeing the state. */
export async function jetstateSoloLatency(
  url: Servers,
  admin: Admin,
  extra: Partial<EngineOptions> = {},
  warmup = CFG.soloWarmup,
  events = CFG.soloEvents,
): Promise<LatencyStats> {
  const ns = uniqueName('jl');
  const engine = await createEngine(engineOptions(url, ns, extra));
  const tracker = new LatencyTracker();
  const id = 'solo';
  try {
    await engine.start(counter, { id, input: {} });
    const watch = await watchCounts(admin.nc, recordBuckets(ns), jetstateCount, tracker.onCount, keyOf(id));
    const durations: number[] = [];
    try {
      const total = warmup + events;
      for (let k = 1; k <= total; k++) {
        const recording = k > warmup;
        tracker.setRecording(recording);
        const t = now();
        await engine.send(counter, id, { type: 'INC' });
        const sentAt = now();
        if (recording) durations.push(sentAt - t);
        await withTimeout(tracker.sent(keyOf(id), k, sentAt), WAIT_LIMIT_MS, `jetstate solo latency, event ${k}`);
      }
      return stats(tracker.samples, durations, tracker.early);
    } finally {
      watch.stop();
    }
  } finally {
    await engine.close();
    await dropNamespace(admin.jsm, ns);
  }
}

async function jetstateOpenLoop(url: string, admin: Admin): Promise<LatencyStats> {
  const ns = uniqueName('jo');
  const engine = await createEngine(engineOptions(url, ns));
  const tracker = new LatencyTracker();
  const ids = Array.from({ length: CFG.openInstances }, (_, i) => `o${i}`);
  const watch = await watchCounts(admin.nc, recordBuckets(ns), jetstateCount, tracker.onCount);
  try {
    await pool(ids, 64, (id) => engine.start(counter, { id, input: {} }));
    // Warm-up: one event per instance (loads every instance into the engine's cache).
    tracker.setRecording(false);
    await pool(ids, 64, async (id) => {
      await engine.send(counter, id, { type: 'INC' });
      await tracker.sent(keyOf(id), 1, now());
    });
    tracker.setRecording(true);
    return await openLoop(tracker, ids, 1, (id) => engine.send(counter, id, { type: 'INC' }));
  } finally {
    watch.stop();
    await engine.close();
    await dropNamespace(admin.jsm, ns);
  }
}

/** The paced phase shared by both sides; counts already sent per instance start at `sentBefore`. */
async function openLoop(tracker: LatencyTracker, ids: string[], sentBefore: number, send: (id: string) => Promise<unknown>): Promise<LatencyStats> {
  const total = CFG.openRate * CFG.openSeconds;
  const sentCount = new Map(ids.map((id) => [id, sentBefore]));
  const durations: number[] = [];
  const inflight: Promise<void>[] = [];
  let failed = 0;
  const offered = await paced(total, CFG.openRate, (i) => {
    const id = ids[i % ids.length]!;
    const target = sentCount.get(id)! + 1;
    sentCount.set(id, target);
    const t = now();
    inflight.push(
      send(id).then(
        () => {
          const sentAt = now();
          durations.push(sentAt - t);
          void tracker.sent(keyOf(id), target, sentAt);
        },
        () => void failed++,
      ),
    );
  });
  await Promise.all(inflight);
  if (failed > 0) throw new Error(`${failed} sends failed during the open-loop phase`);
  await withTimeout(tracker.drained(), WAIT_LIMIT_MS, 'open-loop latency: waiting for every event to be persisted');
  return stats(tracker.samples, durations, tracker.early, offered);
}

// ---------------------------------------------------------------------------------------------
// Baseline: a hand-written durable pull consumer + KV

interface Baseline {
  nc: NatsConnection;
  js: JetStreamClient;
  kv: KV;
  ns: string;
  subject(id: string): string;
  /** Starts the worker; returns once its consumer exists. */
  startWorker(): Promise<void>;
  close(): Promise<void>;
}

async function openBaseline(url: string, label: string): Promise<Baseline> {
  const ns = uniqueName(label);
  const nc = await connectFast(url, `baseline-${ns}`);
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const stream = `${ns}_events`;
  await jsm.streams.add({ name: stream, subjects: [`${ns}.evt.>`], storage: 'file' as never });
  const kv = await new Kvm(js).create(`${ns}_instances`, { history: 1, storage: 'file' });
  let messages: ConsumerMessages | undefined;
  let loop: Promise<void> | undefined;
  let reported = false;
  return {
    nc,
    js,
    kv,
    ns,
    subject: (id) => `${ns}.evt.${partitionOf(WF, id, PARTITIONS)}.${WF}.${id}`,
    async startWorker() {
      await jsm.consumers.add(stream, { durable_name: 'worker', ack_policy: AckPolicy.Explicit, filter_subject: `${ns}.evt.>` });
      const consumer = await js.consumers.get(stream, 'worker');
      messages = await consumer.consume();
      const msgs = messages;
      loop = (async () => {
        for await (const m of msgs) {
          try {
            const [, , , workflow, id] = m.subject.split('.');
            const key = `${workflow}.${id}`;
            const entry = await kv.get(key);
            if (!entry) throw new Error(`no instance ${key}`);
            const actor = createActor(counterMachine, { snapshot: entry.json() }).start();
            actor.send(m.json());
            const persisted = actor.getPersistedSnapshot();
            actor.stop();
            await kv.put(key, JSON.stringify(persisted));
            m.ack();
          } catch (e) {
            if (!reported) console.error(`baseline worker: ${(e as Error).message}`);
            reported = true;
            m.nak(100);
          }
        }
      })();
    },
    async close() {
      messages?.stop();
      await loop?.catch(() => {});
      await dropNamespace(jsm, ns);
      await nc.close();
    },
  };
}

const initialBaselineSnapshot = (): string => {
  const actor = createActor(counterMachine).start();
  const s = JSON.stringify(actor.getPersistedSnapshot());
  actor.stop();
  return s;
};

async function baselineThroughput(url: string, admin: Admin, n = CFG.instances, e = CFG.eventsPerInstance): Promise<ThroughputStats> {
  const b = await openBaseline(url, 'bt');
  try {
    const ids = Array.from({ length: n }, (_, i) => `i${i}`);
    const initial = initialBaselineSnapshot();
    await pool(ids, 64, (id) => b.kv.create(keyOf(id), initial));
    const sends: string[] = [];
    for (let r = 0; r < e; r++) sends.push(...ids);
    const event = enc.encode(JSON.stringify({ type: 'INC' }));
    await pool(sends, SEND_CONCURRENCY, (id) => b.js.publish(b.subject(id), event));

    const bucket = `${b.ns}_instances`;
    const before = await kvLastSeq(admin.jsm, bucket);
    const c = completion(n, e);
    const watch = await watchCounts(admin.nc, bucket, baselineCount, c.onCount);
    try {
      const t0 = now();
      await b.startWorker();
      const startupMs = now() - t0;
      const t1 = await withTimeout(c.done, WAIT_LIMIT_MS, `baseline throughput (${c.finished()}/${n} instances done)`);
      const seconds = (t1 - t0) / 1_000;
      const writes = (await kvLastSeq(admin.jsm, bucket)) - before;
      return { events: n * e, seconds, rate: (n * e) / seconds, startupMs, writes };
    } finally {
      watch.stop();
    }
  } finally {
    await b.close();
  }
}

async function baselineSoloLatency(url: string, admin: Admin): Promise<LatencyStats> {
  const b = await openBaseline(url, 'bl');
  const tracker = new LatencyTracker();
  const id = 'solo';
  try {
    await b.kv.create(keyOf(id), initialBaselineSnapshot());
    await b.startWorker();
    const watch = await watchCounts(admin.nc, `${b.ns}_instances`, baselineCount, tracker.onCount, keyOf(id));
    const durations: number[] = [];
    const event = enc.encode(JSON.stringify({ type: 'INC' }));
    try {
      const total = CFG.soloWarmup + CFG.soloEvents;
      for (let k = 1; k <= total; k++) {
        const recording = k > CFG.soloWarmup;
        tracker.setRecording(recording);
        const t = now();
        await b.js.publish(b.subject(id), event);
        const sentAt = now();
        if (recording) durations.push(sentAt - t);
        await withTimeout(tracker.sent(keyOf(id), k, sentAt), WAIT_LIMIT_MS, `baseline solo latency, event ${k}`);
      }
      return stats(tracker.samples, durations, tracker.early);
    } finally {
      watch.stop();
    }
  } finally {
    await b.close();
  }
}

async function baselineOpenLoop(url: string, admin: Admin): Promise<LatencyStats> {
  const b = await openBaseline(url, 'bo');
  const tracker = new LatencyTracker();
  const ids = Array.from({ length: CFG.openInstances }, (_, i) => `o${i}`);
  const event = enc.encode(JSON.stringify({ type: 'INC' }));
  try {
    const initial = initialBaselineSnapshot();
    await pool(ids, 64, (id) => b.kv.create(keyOf(id), initial));
    await b.startWorker();
    const watch = await watchCounts(admin.nc, `${b.ns}_instances`, baselineCount, tracker.onCount);
    try {
      tracker.setRecording(false);
      await pool(ids, 64, async (id) => {
        await b.js.publish(b.subject(id), event);
        await tracker.sent(keyOf(id), 1, now());
      });
      tracker.setRecording(true);
      return await openLoop(tracker, ids, 1, (id) => b.js.publish(b.subject(id), event));
    } finally {
      watch.stop();
    }
  } finally {
    await b.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Running and printing

export interface Admin {
  nc: NatsConnection;
  jsm: JetStreamManager;
}

interface SettingResult {
  setting: string;
  /** Steps during which other processes on the machine used noticeable CPU. */
  noisy: string[];
  jt: { tput: ThroughputStats; tput1: ThroughputStats; solo: LatencyStats; open: LatencyStats };
  bl: { tput: ThroughputStats; solo: LatencyStats; open: LatencyStats };
}

export const fmtInt = (v: number): string => Math.round(v).toLocaleString('en-US');
export const fmtMs = (v: number): string => (Number.isFinite(v) ? v.toFixed(2) : '-');

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('   ')).join('\n');
}

const runsOf = (t: ThroughputStats): string => (t.runs ?? [t.rate]).map(fmtInt).join(' ');

function printSetting(r: SettingResult): void {
  const { jt, bl } = r;
  const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}x`;
  const rows: string[][] = [
    ['', 'jetstate', 'baseline', 'jetstate/baseline'],
    [
      `throughput, ${CFG.instances} instances x ${CFG.eventsPerInstance} events (transitions/s)`,
      fmtInt(jt.tput.rate),
      fmtInt(bl.tput.rate),
      ratio(jt.tput.rate, bl.tput.rate),
    ],
    ['  elapsed incl. worker start (s)', jt.tput.seconds.toFixed(2), bl.tput.seconds.toFixed(2), ''],
    ['  worker start (ms)', jt.tput.startupMs.toFixed(0), bl.tput.startupMs.toFixed(0), ''],
    ['  KV writes', fmtInt(jt.tput.writes), fmtInt(bl.tput.writes), ''],
    ...(repeat > 1 ? [[`  all ${repeat} runs (median shown)`, runsOf(jt.tput), runsOf(bl.tput), '']] : []),
    [
      'same backlog, jetstate maxBatch: 1 (one write per event) (transitions/s)',
      fmtInt(jt.tput1.rate),
      fmtInt(bl.tput.rate),
      ratio(jt.tput1.rate, bl.tput.rate),
    ],
    ['  elapsed / worker start (s)', `${jt.tput1.seconds.toFixed(2)} / ${(jt.tput1.startupMs / 1_000).toFixed(2)}`, '', ''],
    ['  KV writes', fmtInt(jt.tput1.writes), '', ''],
    ...(repeat > 1 ? [[`  all ${repeat} runs (median shown)`, runsOf(jt.tput1), '', '']] : []),
    [`latency, 1 instance, ${CFG.soloEvents} sequential events: p50 (ms)`, fmtMs(jt.solo.p50), fmtMs(bl.solo.p50), ratio(jt.solo.p50, bl.solo.p50)],
    ['  p99 (ms)', fmtMs(jt.solo.p99), fmtMs(bl.solo.p99), ratio(jt.solo.p99, bl.solo.p99)],
    ['  max (ms)', fmtMs(jt.solo.max), fmtMs(bl.solo.max), ''],
    ['  send() itself p50 / p99 (ms)', `${fmtMs(jt.solo.sendP50)} / ${fmtMs(jt.solo.sendP99)}`, `${fmtMs(bl.solo.sendP50)} / ${fmtMs(bl.solo.sendP99)}`, ''],
    [
      `latency, open loop ${fmtInt(CFG.openRate)} events/s over ${CFG.openInstances} instances, ${CFG.openSeconds} s: p50 (ms)`,
      fmtMs(jt.open.p50),
      fmtMs(bl.open.p50),
      ratio(jt.open.p50, bl.open.p50),
    ],
    ['  p99 (ms)', fmtMs(jt.open.p99), fmtMs(bl.open.p99), ratio(jt.open.p99, bl.open.p99)],
    ['  max (ms)', fmtMs(jt.open.max), fmtMs(bl.open.max), ''],
    ['  send() itself p50 / p99 (ms)', `${fmtMs(jt.open.sendP50)} / ${fmtMs(jt.open.sendP99)}`, `${fmtMs(bl.open.sendP50)} / ${fmtMs(bl.open.sendP99)}`, ''],
    ['  offered rate (events/s) / samples', `${fmtInt(jt.open.offeredRate ?? NaN)} / ${jt.open.n}`, `${fmtInt(bl.open.offeredRate ?? NaN)} / ${bl.open.n}`, ''],
  ];
  const early = jt.solo.early + jt.open.early + bl.solo.early + bl.open.early;
  console.log(`\n== nats-server ${r.setting} ==`);
  console.log(table(rows));
  if (early > 0) console.log(`(${early} events were seen persisted before send() returned; counted as 0 ms)`);
  if (r.noisy.length > 0) console.log(`other processes used CPU during: ${r.noisy.join('; ')} (those figures are less reliable)`);
}

/**
 * CPU used by other processes (not this one and its finished children, not the given
 * nats-servers) during a step, in cores, from /proc on Linux; undefined elsewhere.
 */
export function otherCpu(serverPids: number | undefined | Array<number | undefined>): () => number | undefined {
  const pids = (Array.isArray(serverPids) ? serverPids : [serverPids]).filter((p): p is number => p !== undefined);
  /** utime + stime (+ cutime + cstime with `children`) of a process, in ticks. */
  const ticks = (pid: number | 'self', children: boolean): number => {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]) + (children ? Number(rest[13]) + Number(rest[14]) : 0);
  };
  const read = (): { busy: number; server: number; own: number; t: number } | undefined => {
    try {
      const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
      // user nice system idle iowait irq softirq steal
      const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!;
      let server = 0;
      for (const pid of pids) server += ticks(pid, false);
      // This process and its children that have exited (an engine child process of bench/operations.ts).
      return { busy, server, own: ticks('self', true), t: now() };
    } catch {
      return undefined;
    }
  };
  const start = read();
  return () => {
    const end = read();
    if (!start || !end) return undefined;
    const hz = 100; // USER_HZ on Linux
    const other = (end.busy - start.busy) / hz - (end.server - start.server) / hz - (end.own - start.own) / hz;
    return Math.max(0, other) / ((end.t - start.t) / 1_000);
  };
}

/**
 * Runs one step of a benchmark, printing its duration and the CPU other processes used meanwhile
 * to stderr; steps with more than 0.1 core of such noise (warm-ups aside) are added to `noisy`.
 */
export function stepper(label: string, serverPid: number | undefined, noisy: string[]): <T>(what: string, f: () => Promise<T>) => Promise<T> {
  return async (what, f) => {
    const t = now();
    process.stderr.write(`[${label}] ${what} ... `);
    const meter = otherCpu(serverPid);
    const r = await f();
    const other = meter();
    process.stderr.write(`${((now() - t) / 1_000).toFixed(1)} s${other !== undefined ? `, other processes ${other.toFixed(2)} cores` : ''}\n`);
    if (other !== undefined && other > 0.1 && !what.startsWith('warm-up')) noisy.push(`${what} (${other.toFixed(2)} cores)`);
    return r;
  };
}

/** Prints the machine, node and nats-server versions, the code's git revision and the load. */
export function printEnvironment(): void {
  const cpus = os.cpus();
  const natsVersion = spawnSync(findNatsServer(), ['--version'], { encoding: 'utf8' }).stdout.trim();
  console.log(
    `machine: ${cpus[0]?.model ?? 'unknown cpu'}, ${cpus.length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.platform()} ${os.release()}`,
  );
  console.log(`node ${process.version}, ${natsVersion}, store in ${os.tmpdir()}`);
  const git = (a: string[]): string => spawnSync('git', a, { encoding: 'utf8', cwd: new URL('..', import.meta.url).pathname }).stdout?.trim() ?? '';
  const rev = git(['rev-parse', '--short', 'HEAD']);
  const dirty = git(['status', '--porcelain', '--', 'engine', 'adapters']);
  if (rev) console.log(`code: git ${rev}${dirty ? ' + uncommitted changes in engine/ or adapters/' : ''}`);
  const load = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  console.log(`load average before the run: ${load} (steps during which other processes used CPU are listed under each table)`);
}

async function runSetting(label: 'default' | 'always'): Promise<SettingResult> {
  const setting = label === 'default' ? 'default settings' : 'sync_interval: always';
  const server = await NatsServer.start({ syncAlways: label === 'always' });
  servers.add(server);
  const nc = await connectFast(server.url, 'bench-admin');
  const admin: Admin = { nc, jsm: await jetstreamManager(nc) };
  const noisy: string[] = [];
  const step = stepper(label, server.pid, noisy);
  try {
    const url = server.url;
    // Alternate sides so that neither always runs on a "fresher" server.
    // Warm-up (not reported): the first engine and consumer in a process and on a fresh server
    // pay for JIT compilation and first-use costs that a long-running service does not.
    await step('warm-up (not reported)', async () => {
      await jetstateThroughput(url, admin, {}, 200, 5);
      await jetstateThroughput(url, admin, { maxBatch: 1 }, 200, 5);
      await baselineThroughput(url, admin, 200, 5);
    });
    const jt: ThroughputStats[] = [];
    const bl: ThroughputStats[] = [];
    const jt1: ThroughputStats[] = [];
    for (let i = 1; i <= repeat; i++) {
      const n = repeat > 1 ? ` (${i}/${repeat})` : '';
      jt.push(await step(`jetstate throughput${n}`, () => jetstateThroughput(url, admin)));
      bl.push(await step(`baseline throughput${n}`, () => baselineThroughput(url, admin)));
      jt1.push(await step(`jetstate throughput, maxBatch 1${n}`, () => jetstateThroughput(url, admin, { maxBatch: 1 })));
    }
    const [jtTput, blTput, jtTput1] = [medianRun(jt), medianRun(bl), medianRun(jt1)];
    const blSolo = await step('baseline latency, 1 instance', () => baselineSoloLatency(url, admin));
    const jtSolo = await step('jetstate latency, 1 instance', () => jetstateSoloLatency(url, admin));
    const jtOpen = await step('jetstate latency, open loop', () => jetstateOpenLoop(url, admin));
    const blOpen = await step('baseline latency, open loop', () => baselineOpenLoop(url, admin));
    return { setting, noisy, jt: { tput: jtTput, tput1: jtTput1, solo: jtSolo, open: jtOpen }, bl: { tput: blTput, solo: blSolo, open: blOpen } };
  } finally {
    await nc.close().catch(() => {});
    await server.stop();
    servers.delete(server);
    await rm(server.storeDir, { recursive: true, force: true });
  }
}

const servers = new Set<NatsServer>();

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    console.error(`bench: still running after ${WATCHDOG_MS / 1_000} s; stopping`);
    void Promise.all([...servers].map((s) => s.stop())).finally(() => process.exit(1));
  }, WATCHDOG_MS);
  watchdog.unref();

  console.log(`jetstate core benchmark ${args.join(' ')}`.trim());
  printEnvironment();
  console.log(
    `workflow: counter (one state, INC increments context.count); jetstate ${PARTITIONS} partitions, engine defaults; ` +
      `baseline: 1 durable pull consumer, sequential get/createActor/send/put/ack`,
  );

  const results: SettingResult[] = [];
  const t = now();
  for (const label of ['default', 'always'] as const) {
    if (only && only !== label) continue;
    const r = await runSetting(label);
    results.push(r);
    printSetting(r);
  }
  console.log(`\nsummary (transitions/s; p50/p99 ms):`);
  const rows: string[][] = [
    ['server', 'jetstate tput', 'baseline tput', 'ratio', 'jt maxBatch 1', 'ratio', 'jt solo p50/p99', 'bl solo p50/p99', 'jt open p50/p99', 'bl open p50/p99'],
  ];
  for (const r of results) {
    rows.push([
      r.setting,
      fmtInt(r.jt.tput.rate),
      fmtInt(r.bl.tput.rate),
      `${(r.jt.tput.rate / r.bl.tput.rate).toFixed(2)}x`,
      fmtInt(r.jt.tput1.rate),
      `${(r.jt.tput1.rate / r.bl.tput.rate).toFixed(2)}x`,
      `${fmtMs(r.jt.solo.p50)} / ${fmtMs(r.jt.solo.p99)}`,
      `${fmtMs(r.bl.solo.p50)} / ${fmtMs(r.bl.solo.p99)}`,
      `${fmtMs(r.jt.open.p50)} / ${fmtMs(r.jt.open.p99)}`,
      `${fmtMs(r.bl.open.p50)} / ${fmtMs(r.bl.open.p99)}`,
    ]);
  }
  console.log(table(rows));
  console.log(
    `total ${((now() - t) / 1_000).toFixed(0)} s; load average after: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  clearTimeout(watchdog);
}

if (isMain) {
  main().then(
    () => process.exit(0),
    async (e: unknown) => {
      console.error(`bench failed: ${(e as Error).stack ?? String(e)}`);
      await Promise.all([...servers].map((s) => s.stop().catch(() => {})));
      process.exit(1);
    },
  );
}
