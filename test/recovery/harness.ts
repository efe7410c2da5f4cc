/**
 * Helpers of the recovery tests: engine child processes (spawned, SIGKILLed, SIGTERMed, always
 * cleaned up), sends that retry until the stream accepted them, raw reads of the history stream
 * and of partition leases, and bounded waits.
 */
import { readSubject } from '../../engine/store/read.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { ErrorCode, JetstateError, type Client, type HistoryEntry } from '../../engine/index.js';
import { counter } from './counter-workflow.js';
import { listEventsStreams } from './streams.js';
import { nodeArgsFor, testModule } from '../helpers.js';

/** $JETSTATE_RECOVERY_TRACE: a file that collects every child's stderr lines, labelled. */
const traceFile = process.env['JETSTATE_RECOVERY_TRACE'];

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..', '..');
const entry = join(here, 'engine-process.ts');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Rejects with `what` when `p` takes longer than `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, ko) => {
        timer = setTimeout(() => ko(new Error(`${what}: not done within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export interface EngineChildOptions {
  /** A server URL, or several of a cluster, comma-separated. */
  url: string;
  namespace: string;
  leaseTtlMs?: number;
  partitions?: number;
  /** SIGKILL itself right after its N-th state write (before that write's history publish). */
  crashAfterWrites?: number;
  /** SIGKILL itself right before its N-th state write (the event read, nothing written). */
  crashBeforeWrites?: number;
  engineId?: string;
  /** The engine's `maxPendingPerPartition`. */
  maxPending?: number;
  label?: string;
  /** Modules whose exported workflow definitions the engine registers (default: the counter). */
  workflowModules?: string[];
  /** The namespace's duplicate window, if this engine is the one that creates it. */
  duplicateWindowMs?: number;
  /** Replicas of the namespace's streams and buckets, if this engine creates them. */
  replicas?: number;
  /** Extra environment for the child (e.g. where an activity logs its attempts). */
  env?: Record<string, string>;
  /** Called as the child reports each of its state writes, once durable (`--report-writes`). */
  onWrite?: (key: string, revision: number) => void;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface CrashLine {
  key: string;
  revision: number;
  writes: number;
}

/** Every child still alive, so that no test leaves one behind. */
const live = new Set<EngineChild>();

export class EngineChild {
  readonly label: string;
  readonly ready: Promise<{ engineId: string; pid: number; owned?: number[] }>;
  readonly exited: Promise<Exit>;
  /** Resolves with the CRASH line if the child crashed itself through the test hook. */
  readonly crashed: Promise<CrashLine>;
  private readonly child: ChildProcess;
  private stderrTail = '';
  /** The first 500 stderr lines (the engine's warnings and errors). */
  readonly stderrLines: string[] = [];
  private exit: Exit | undefined;
  engineId: string | undefined;

  constructor(readonly options: EngineChildOptions) {
    this.label = options.label ?? 'engine';
    const args = [...nodeArgsFor(entry), '--nats', options.url, '--namespace', options.namespace];
    args.push('--lease-ttl', String(options.leaseTtlMs ?? 1_000), '--partitions', String(options.partitions ?? 16));
    if (options.crashAfterWrites) args.push('--crash-after-writes', String(options.crashAfterWrites));
    if (options.crashBeforeWrites) args.push('--crash-before-writes', String(options.crashBeforeWrites));
    if (options.engineId) args.push('--engine-id', options.engineId);
    if (options.maxPending) args.push('--max-pending', String(options.maxPending));
    if (options.workflowModules?.length) args.push('--workflows', options.workflowModules.map(testModule).join(','));
    if (options.duplicateWindowMs) args.push('--duplicate-window', String(options.duplicateWindowMs));
    if (options.replicas) args.push('--replicas', String(options.replicas));
    if (options.onWrite) args.push('--report-writes');
    // The IPC channel lets an orphaned child notice that the test runner is gone.
    this.child = spawn(process.execPath, args, {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
    });
    live.add(this);
    let onReady!: (v: { engineId: string; pid: number; owned?: number[] }) => void;
    let onCrash!: (v: CrashLine) => void;
    this.ready = new Promise((ok, ko) => {
      onReady = ok;
      this.child.once('exit', (code, signal) => ko(new Error(`${this.label} exited (${code ?? signal}) before it was ready:\n${this.stderrTail}`)));
    });
    this.crashed = new Promise((ok) => (onCrash = ok));
    // Neither may surface as an unhandled rejection when nobody waits on it.
    this.ready.catch(() => {});
    this.exited = new Promise((ok) => {
      this.child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        live.delete(this);
        ok(this.exit);
      });
    });
    let buffered = '';
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buffered += d;
      for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
        const line = buffered.slice(0, i);
        buffered = buffered.slice(i + 1);
        const space = line.indexOf(' ');
        const word = space < 0 ? line : line.slice(0, space);
        const body = space < 0 ? '{}' : line.slice(space + 1);
        try {
          if (word === 'READY') {
            const r = JSON.parse(body) as { engineId: string; pid: number; owned?: number[] };
            this.engineId = r.engineId;
            onReady(r);
          } else if (word === 'CRASH') {
            onCrash(JSON.parse(body) as CrashLine);
          } else if (word === 'WROTE') {
            const w = JSON.parse(body) as { key: string; revision: number };
            options.onWrite?.(w.key, w.revision);
          }
        } catch {
          // not one of our lines
        }
      }
    });
    let errBuffered = '';
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderrTail = (this.stderrTail + d).slice(-6_000);
      errBuffered += d;
      for (let i = errBuffered.indexOf('\n'); i >= 0; i = errBuffered.indexOf('\n')) {
        if (this.stderrLines.length < 500) this.stderrLines.push(errBuffered.slice(0, i));
        if (traceFile) appendFileSync(traceFile, `${this.label} ${errBuffered.slice(0, i)}\n`);
        errBuffered = errBuffered.slice(i + 1);
      }
    });
    this.child.on('error', () => {});
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  get stderr(): string {
    return this.stderrTail;
  }

  /** Waits for the READY line (bounded). */
  async waitReady(ms = 20_000): Promise<{ engineId: string; pid: number; owned?: number[] }> {
    return within(this.ready, ms, `${this.label} (pid ${this.pid}) ready`);
  }

  /** SIGKILL, as a crash would; resolves once the process is gone. */
  async kill(): Promise<Exit> {
    if (this.running) this.child.kill('SIGKILL');
    return within(this.exited, 10_000, `${this.label} (pid ${this.pid}) exit after SIGKILL`);
  }

  /**
   * SIGSTOP for `ms`, then SIGCONT: a process that stalls past its lease TTL (a long GC pause, a
   * frozen VM) and comes back believing it still owns its partitions.
   */
  async freeze(ms: number): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGSTOP');
    try {
      await sleep(ms);
    } finally {
      if (this.running) this.child.kill('SIGCONT');
    }
  }

  /** SIGTERM (clean close), then SIGKILL after `ms`. */
  async stop(ms = 15_000): Promise<Exit> {
    if (!this.running) return this.exited;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), ms);
    try {
      return await this.exited;
    } finally {
      clearTimeout(t);
    }
  }
}

export function spawnEngine(options: EngineChildOptions): EngineChild {
  return new EngineChild(options);
}

/** SIGKILLs every child still alive; for `after()` hooks, so failures leave nothing behind. */
export async function killAllEngines(): Promise<void> {
  await Promise.all([...live].map((c) => c.kill().catch(() => {})));
}

/** Last resort if the test process exits without its hooks: no child outlives it. */
process.on('exit', () => {
  for (const c of live) {
    try {
      process.kill(c.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

export interface Accepted {
  seq: number;
  duplicate: boolean;
  attempts: number;
}

/**
 * Sends one ADD and retries the very same send (same idempotency key) until the stream accepts
 * it, so that each event is accepted exactly once even when an attempt failed after the server
 * had stored it. Gives up after `deadlineMs`.
 */
export async function sendUntilAccepted(client: Client, id: string, k: number, idempotencyKey: string, deadlineMs = 60_000): Promise<Accepted> {
  const deadline = Date.now() + deadlineMs;
  for (let attempts = 1; ; attempts++) {
    try {
      const r = await client.send(counter, id, { type: 'ADD', k }, { idempotencyKey });
      return { seq: r.seq, duplicate: r.duplicate, attempts };
    } catch (e) {
      if (e instanceof JetstateError && (e.code === ErrorCode.InvalidEvent || e.code === ErrorCode.InstanceNotFound || e.code === ErrorCode.Closed)) throw e;
      if (Date.now() > deadline)
        throw new Error(`send ${idempotencyKey} not accepted within ${deadlineMs} ms (${attempts} attempts): ${(e as Error).message}`, { cause: e });
      await sleep(100 + Math.floor(Math.random() * 100));
    }
  }
}

/** A plain NATS connection of the test, for raw reads beneath the jetstate API. */
export class Raw {
  private constructor(
    readonly nc: NatsConnection,
    private readonly namespace: string,
  ) {}

  static async open(url: string, namespace: string): Promise<Raw> {
    return new Raw(await connect({ servers: url, name: 'recovery-raw', maxReconnectAttempts: -1, reconnectTimeWait: 250 }), namespace);
  }

  /** Every history message of an instance as stored, with no dedupe: one array of entries per message. */
  async historyMessages(workflow: string, id: string): Promise<HistoryEntry[][]> {
    const rt = { js: jetstream(this.nc), jsm: await jetstreamManager(this.nc) };
    const messages = await readSubject(rt, `${this.namespace}_history`, `${this.namespace}.hist.${workflow}.${id}`);
    return messages.map((data) => (JSON.parse(new TextDecoder().decode(data)) as { entries: HistoryEntry[] }).entries);
  }

  /** The KV revision of an engine's member key: it moves at every heartbeat of that engine. */
  async memberRevision(engineId: string): Promise<number> {
    const kv = await new Kvm(this.nc).open(`${this.namespace}_control`);
    const e = await kv.get(`member.${engineId}`);
    return e && e.operation === 'PUT' ? e.revision : 0;
  }

  async lease(partition: number, workflow = 'counter'): Promise<{ owner: string; checkpoint: number } | null> {
    const kv = await new Kvm(this.nc).open(`${this.namespace}_control`);
    const e = await kv.get(`lease.${workflow}.${partition}`);
    if (!e || e.operation !== 'PUT') return null;
    return e.json<{ owner: string; checkpoint: number }>();
  }

  /**
   * Rewrites the leases of `workflow` and the heartbeats of dead engines with a shorter TTL (all
   * else kept), as if they had been written with that one: engines judge a lease and a member by
   * the TTL it declares, so the next owner takes over after `ttlMs` of silence instead of waiting
   * out a long one. Only for engines that are gone.
   */
  async shortenLeases(ttlMs: number, workflow = 'counter'): Promise<void> {
    const kv = await new Kvm(this.nc).open(`${this.namespace}_control`);
    const keys: string[] = [];
    for await (const k of await kv.keys([`lease.${workflow}.*`, 'member.*'])) keys.push(k);
    for (const k of keys) {
      const e = await kv.get(k);
      if (e && e.operation === 'PUT') await kv.update(k, JSON.stringify({ ...e.json<Record<string, unknown>>(), ttlMs }), e.revision);
    }
  }

  /** How many events the events stream still stores (the engines purge applied ones). */
  async eventsStored(): Promise<number> {
    return (await this.eventsState()).messages;
  }

  /**
   * The events streams' state: stored messages, and how many were ever stored (the last sequence;
   * summed over the streams when the namespace has several).
   */
  async eventsState(): Promise<{ messages: number; lastSeq: number }> {
    const jsm = await jetstreamManager(this.nc);
    let messages = 0;
    let lastSeq = 0;
    for (const name of await listEventsStreams(jsm, this.namespace)) {
      const { state } = await jsm.streams.info(name);
      messages += state.messages;
      lastSeq += state.last_seq;
    }
    return { messages, lastSeq };
  }

  async close(): Promise<void> {
    await this.nc.close().catch(() => {});
  }
}

/** Checks a history against the model: start, then one entry per expected event, in order. */
export function historyProblems(history: HistoryEntry[], ks: readonly number[], seqs?: readonly number[]): string[] {
  const problems: string[] = [];
  const kinds = history.map((h) => h.kind);
  if (kinds.filter((k) => k === 'rejected').length > 0) problems.push(`rejected entries: ${JSON.stringify(history.filter((h) => h.kind === 'rejected'))}`);
  const start = history[0];
  if (!start || start.kind !== 'start' || start.revision !== 1) problems.push(`history does not begin with the start at revision 1: ${JSON.stringify(start)}`);
  const events = history.filter((h) => h.kind === 'event');
  const revisions = events.map((h) => h.revision);
  const want = ks.map((_, i) => i + 2);
  if (JSON.stringify(revisions) !== JSON.stringify(want)) problems.push(`event revisions ${JSON.stringify(revisions)}, expected ${JSON.stringify(want)}`);
  const gotKs = events.map((h) => (h.event as { k?: number }).k);
  if (JSON.stringify(gotKs) !== JSON.stringify(ks)) problems.push(`history events k ${JSON.stringify(gotKs)}, expected ${JSON.stringify(ks)}`);
  for (let i = 1; i < events.length; i++) {
    if (events[i]!.seq <= events[i - 1]!.seq) problems.push(`history seq not increasing at revision ${events[i]!.revision}`);
  }
  if (seqs) {
    const gotSeqs = events.map((h) => h.seq);
    if (JSON.stringify(gotSeqs) !== JSON.stringify(seqs)) problems.push(`history seqs ${JSON.stringify(gotSeqs)}, accepted seqs ${JSON.stringify(seqs)}`);
  }
  return problems;
}

/** Runs `fn` over `items` with at most `limit` at a time. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(workers);
  return out;
}
