/**
 * A compact in-memory index of every instance of a namespace, built by one KV watch of the
 * instances bucket at start-up and kept live by the same watch. The list, the counts and the
 * rates are answered from it, so a page view never scans the bucket: with 100,000 instances a
 * list page is a binary search and a short walk over an array (see docs/UI.md, "How it stays fast").
 *
 * Records are read leniently here (a few fields, any status string), not through the record
 * schema: the index must show a record the client cannot read yet (a status a newer engine
 * writes, a version this process does not know) instead of dropping it.
 */
import { performance } from 'node:perf_hooks';
import type { KV, KvWatchEntry } from '@nats-io/kv';
import type { Logger } from '../../engine/index.js';
import type { InstancePage, InstanceRow } from './protocol.js';
import { SortedKeys, lowerBound, upperBound } from './sorted-keys.js';

/** An indexed instance: the row the list shows, plus what filters need. */
export interface IndexEntry extends InstanceRow {
  key: string;
  /** Every state node path the instance is in (`shipping`, `shipping.packed`): the state filter is a lookup. */
  paths: string[];
}

export interface InstanceQuery {
  workflow?: string | undefined;
  status?: string | undefined;
  /** A state node path, dotted: `paid`, `shipping.packed`. */
  state?: string | undefined;
  /** Instance id prefix. */
  prefix?: string | undefined;
  /** Cursor: the page after this key. */
  after?: string | undefined;
  /** Cursor: the page before this key. */
  before?: string | undefined;
  limit: number;
}

const RATE_WINDOW_S = 10;
const RECENT = 20;

interface RateBucket {
  second: number;
  events: number;
  starts: number;
}

const decoder = new TextDecoder();

/**
 * The state value in words and every state node path it holds. `{ a: { b: 'c' }, d: 'e' }` is
 * `a.b.c, d.e` with paths a, a.b, a.b.c, d, d.e.
 */
export function describeState(value: unknown): { state: string; paths: string[] } {
  const paths: string[] = [];
  const leaves: string[] = [];
  const walk = (v: unknown, prefix: string): void => {
    if (typeof v === 'string') {
      const p = prefix ? `${prefix}.${v}` : v;
      paths.push(p);
      leaves.push(p);
    } else if (v && typeof v === 'object') {
      const keys = Object.keys(v);
      if (keys.length === 0 && prefix) leaves.push(prefix);
      for (const k of keys) {
        const p = prefix ? `${prefix}.${k}` : k;
        paths.push(p);
        walk((v as Record<string, unknown>)[k], p);
      }
    }
  };
  walk(value, '');
  return { state: leaves.join(', ') || '?', paths };
}

/** Reads the few fields the index keeps; never throws. */
export function indexEntryOf(key: string, bytes: Uint8Array): IndexEntry {
  const dot = key.indexOf('.');
  const workflow = dot < 0 ? key : key.slice(0, dot);
  const id = dot < 0 ? '' : key.slice(dot + 1);
  let r: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(decoder.decode(bytes));
    if (parsed && typeof parsed === 'object') r = parsed as Record<string, unknown>;
  } catch {
    r = { status: 'unreadable' };
  }
  const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  const snapshot = r['snapshot'] as { value?: unknown } | undefined;
  const { state, paths } = describeState(snapshot?.value);
  return {
    key,
    workflow,
    id,
    version: num(r['version']),
    status: typeof r['status'] === 'string' ? r['status'] : 'unreadable',
    state,
    paths,
    revision: num(r['revision']),
    createdAtMs: num(r['createdAtMs']),
    updatedAtMs: num(r['updatedAtMs']),
  };
}

/**
 * The index. `start()` opens the watch and returns at once; `ready` turns true once the watch has
 * delivered every record that existed when it opened (list answers say so until then).
 *
 * @example
 * ```ts
 * const index = new InstanceIndex(kv, logger);
 * index.start();
 * await index.whenReady();
 * index.query({ workflow: 'order', status: 'running', limit: 50 });
 * ```
 */
export class InstanceIndex {
  private readonly entries = new Map<string, IndexEntry>();
  /** Every entry in key order; an entry object stays the same across updates (changed in place). */
  private readonly order = new SortedKeys<IndexEntry>();
  /** Instances per state path per workflow: the total of a state filter without a walk. */
  private readonly pathCounts = new Map<string, Map<string, number>>();
  /** Instances per workflow name (for id-prefix search over every workflow). */
  private readonly perWorkflow = new Map<string, number>();
  /** Counts by status per `workflow@version`. */
  private readonly counts = new Map<string, Map<string, number>>();
  private readonly rates = new Map<string, RateBucket[]>();
  private readonly recentKeys = new Map<string, true>();
  private readonly listeners = new Set<(key: string, entry: IndexEntry | undefined) => void>();
  private readonly readyWaiters: Array<() => void> = [];
  /** The last revision seen, per bucket. */
  private readonly lastRevision: number[];
  private stopped = false;
  private running: Promise<void> | undefined;
  /** Grows by one per applied change: a cheap "something moved" for pages. */
  version = 0;
  ready = false;

  private readonly watchers: Array<{ stop(): void }> = [];
  private readonly readyBuckets = new Set<number>();

  /** `kv`: the records' bucket, or every bucket they are spread over (`client.recordBuckets`). */
  constructor(
    kv: KV | readonly KV[],
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.kvs = Array.isArray(kv) ? [...(kv as readonly KV[])] : [kv as KV];
    this.lastRevision = this.kvs.map(() => 0);
  }

  private readonly kvs: KV[];

  start(): void {
    this.running ??= Promise.all(this.kvs.map((_, i) => this.run(i))).then(() => {});
  }

  whenReady(): Promise<void> {
    return this.ready ? Promise.resolve() : new Promise((r) => this.readyWaiters.push(r));
  }

  /** Called after every change, with the entry (undefined once deleted). */
  onChange(listener: (key: string, entry: IndexEntry | undefined) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): IndexEntry | undefined {
    return this.entries.get(key);
  }

  /** Workflow names and versions seen in records, with counts by status. */
  countsByVersion(): Array<{ workflow: string; version: number; counts: Record<string, number> }> {
    return [...this.counts].map(([k, m]) => {
      const at = k.lastIndexOf('@');
      return { workflow: k.slice(0, at), version: Number(k.slice(at + 1)), counts: Object.fromEntries(m) };
    });
  }

  /** Events applied and instances started per second, over the last ten seconds. */
  rate(workflow: string): { eventsPerSecond: number; startsPerSecond: number } {
    const now = Math.floor(this.now() / 1000);
    let events = 0;
    let starts = 0;
    for (const b of this.rates.get(workflow) ?? []) {
      if (now - b.second < RATE_WINDOW_S) {
        events += b.events;
        starts += b.starts;
      }
    }
    return { eventsPerSecond: events / RATE_WINDOW_S, startsPerSecond: starts / RATE_WINDOW_S };
  }

  /** The most recently changed instances, newest first. */
  recent(): IndexEntry[] {
    return [...this.recentKeys.keys()].reverse().flatMap((k) => this.entries.get(k) ?? []);
  }

  /** Every status string seen. */
  statuses(): string[] {
    const s = new Set<string>(['running', 'done', 'failed', 'stopped']);
    for (const m of this.counts.values()) for (const k of m.keys()) s.add(k);
    return [...s];
  }

  /**
   * One page of instances in key order (workflow, then id), filtered. Cost: a binary search per
   * workflow range and a walk until the page is full; the total is counted from the status
   * counters, or by a walk over the range when a state or id prefix narrows it.
   */
  query(q: InstanceQuery): InstancePage {
    const { keys, values } = this.order.view();
    const ranges = this.ranges(keys, q);
    const match = (e: IndexEntry): boolean => (q.status === undefined || e.status === q.status) && (q.state === undefined || e.paths.includes(q.state));
    const limit = Math.max(1, Math.min(500, q.limit));
    const rows: IndexEntry[] = [];
    let next: string | null = null;
    let prev: string | null = null;
    if (q.before !== undefined) {
      // Backwards from the cursor, then reversed.
      const from = lowerBound(keys, q.before) - 1;
      outer: for (let r = ranges.length - 1; r >= 0; r--) {
        const [lo, hi] = ranges[r]!;
        for (let i = Math.min(hi - 1, from); i >= lo; i--) {
          const e = values[i]!;
          if (match(e)) {
            if (rows.length === limit) {
              prev = rows[rows.length - 1]!.key;
              break outer;
            }
            rows.push(e);
          }
        }
      }
      rows.reverse();
      if (rows.length > 0) next = rows[rows.length - 1]!.key;
    } else {
      const from = q.after === undefined ? 0 : upperBound(keys, q.after);
      outer: for (const [lo, hi] of ranges) {
        for (let i = Math.max(lo, from); i < hi; i++) {
          const e = values[i]!;
          if (match(e)) {
            if (rows.length === limit) {
              next = rows[rows.length - 1]!.key;
              break outer;
            }
            rows.push(e);
          }
        }
      }
      if (q.after !== undefined && rows.length > 0 && this.anyBefore(values, ranges, lowerBound(keys, rows[0]!.key), match)) prev = rows[0]!.key;
    }
    return { rows: rows.map(toRow), next, prev, total: this.total(values, ranges, q, match), ready: this.ready };
  }

  async close(): Promise<void> {
    this.stopped = true;
    for (const w of this.watchers) w?.stop();
    await this.running?.catch(() => {});
  }

  private anyBefore(values: readonly IndexEntry[], ranges: Array<[number, number]>, pos: number, match: (e: IndexEntry) => boolean): boolean {
    for (let r = ranges.length - 1; r >= 0; r--) {
      const [lo, hi] = ranges[r]!;
      for (let i = Math.min(hi, pos) - 1; i >= lo; i--) if (match(values[i]!)) return true;
    }
    return false;
  }

  /** Matches in every page: from the counters when one filter alone narrows, else a walk of the ranges. */
  private total(values: readonly IndexEntry[], ranges: Array<[number, number]>, q: InstanceQuery, match: (e: IndexEntry) => boolean): number {
    const inScope = (wf: string): boolean => q.workflow === undefined || wf === q.workflow;
    if (q.prefix === undefined && q.state === undefined) {
      if (q.status === undefined) return ranges.reduce((n, [lo, hi]) => n + hi - lo, 0);
      let n = 0;
      for (const [k, m] of this.counts) if (inScope(k.slice(0, k.lastIndexOf('@')))) n += m.get(q.status) ?? 0;
      return n;
    }
    if (q.prefix === undefined && q.status === undefined) {
      let n = 0;
      for (const [wf, m] of this.pathCounts) if (inScope(wf)) n += m.get(q.state!) ?? 0;
      return n;
    }
    let n = 0;
    for (const [lo, hi] of ranges) for (let i = lo; i < hi; i++) if (match(values[i]!)) n++;
    return n;
  }

  /** Position ranges of the keys the query can match: one per workflow, narrowed by the id prefix. */
  private ranges(keys: readonly string[], q: InstanceQuery): Array<[number, number]> {
    const prefix = q.prefix ?? '';
    const names = q.workflow !== undefined ? [q.workflow] : q.prefix !== undefined ? [...this.perWorkflow.keys()].sort() : null;
    if (!names) return [[0, keys.length]];
    return names.map((wf) => [lowerBound(keys, `${wf}.${prefix}`), lowerBound(keys, `${wf}.${prefix}\uffff`)] as [number, number]);
  }

  /** One bucket's part of the index is complete (its watch delivered what it held): all of them, the index. */
  private bucketReady(i: number): void {
    this.readyBuckets.add(i);
    if (this.readyBuckets.size === this.kvs.length) this.markReady();
  }

  private async run(i: number): Promise<void> {
    const kv = this.kvs[i]!;
    while (!this.stopped) {
      try {
        if (!this.ready && this.lastRevision[i] === 0 && (await kv.status()).values === 0) this.bucketReady(i);
        const watcher = await kv.watch(this.lastRevision[i]! > 0 ? { resumeFromRevision: this.lastRevision[i]! + 1 } : {});
        this.watchers[i] = watcher;
        if (this.stopped) watcher.stop();
        let since = performance.now();
        for await (const e of watcher) {
          this.lastRevision[i] = Math.max(this.lastRevision[i]!, e.revision);
          this.apply(e, i);
          // A burst of changes arrives in one go: let page requests in every 20 ms.
          if (performance.now() - since > 20) {
            await new Promise((r) => setImmediate(r));
            since = performance.now();
          }
        }
      } catch (e) {
        if (this.stopped) break;
        this.logger.warn(`ui: the watch of the instances bucket failed (${(e as Error).message}); opening it again`);
      }
      // The watch ended (NATS restarting, a leader election): resume after the last revision seen.
      if (!this.stopped) await new Promise((r) => setTimeout(r, 250));
    }
  }

  private apply(e: KvWatchEntry, bucket: number): void {
    const old = this.entries.get(e.key);
    let oldRevision: number | undefined;
    if (e.operation !== 'PUT') {
      if (old) {
        this.entries.delete(e.key);
        this.order.remove(e.key);
        this.uncount(old);
        this.perWorkflow.set(old.workflow, (this.perWorkflow.get(old.workflow) ?? 1) - 1);
        if (this.perWorkflow.get(old.workflow) === 0) this.perWorkflow.delete(old.workflow);
        this.recentKeys.delete(e.key);
      }
    } else {
      const fresh = indexEntryOf(e.key, e.value);
      let entry = fresh;
      if (old) {
        // Changed in place: the sorted array holds this same object.
        oldRevision = old.revision;
        this.uncount(old);
        entry = Object.assign(old, fresh);
      } else {
        this.entries.set(e.key, entry);
        this.order.add(e.key, entry);
        this.perWorkflow.set(entry.workflow, (this.perWorkflow.get(entry.workflow) ?? 0) + 1);
      }
      this.count(entry);
      if (this.ready) {
        this.measure(entry, oldRevision);
        this.recentKeys.delete(e.key);
        this.recentKeys.set(e.key, true);
        if (this.recentKeys.size > RECENT) this.recentKeys.delete(this.recentKeys.keys().next().value!);
      }
    }
    this.version++;
    if (!this.ready && (e.isUpdate || e.delta === 0)) this.bucketReady(bucket);
    const now = this.entries.get(e.key);
    for (const l of this.listeners) {
      try {
        l(e.key, now);
      } catch (err) {
        this.logger.warn(`ui: an index listener failed: ${(err as Error).message}`);
      }
    }
  }

  private markReady(): void {
    if (this.ready) return;
    this.ready = true;
    for (const r of this.readyWaiters.splice(0)) r();
  }

  private measure(entry: IndexEntry, oldRevision: number | undefined): void {
    const second = Math.floor(this.now() / 1000);
    let ring = this.rates.get(entry.workflow);
    if (!ring) this.rates.set(entry.workflow, (ring = []));
    let bucket = ring.find((b) => b.second === second);
    if (!bucket) {
      bucket = { second, events: 0, starts: 0 };
      ring.push(bucket);
      while (ring.length > RATE_WINDOW_S) ring.shift();
    }
    if (oldRevision !== undefined) bucket.events += Math.max(0, entry.revision - oldRevision);
    else {
      bucket.starts++;
      bucket.events += Math.max(0, entry.revision - 1);
    }
  }

  private count(e: IndexEntry): void {
    const k = `${e.workflow}@${e.version}`;
    let m = this.counts.get(k);
    if (!m) this.counts.set(k, (m = new Map()));
    m.set(e.status, (m.get(e.status) ?? 0) + 1);
    let p = this.pathCounts.get(e.workflow);
    if (!p) this.pathCounts.set(e.workflow, (p = new Map()));
    for (const path of e.paths) p.set(path, (p.get(path) ?? 0) + 1);
  }

  private uncount(e: IndexEntry): void {
    const k = `${e.workflow}@${e.version}`;
    const m = this.counts.get(k);
    if (!m) return;
    const n = (m.get(e.status) ?? 1) - 1;
    if (n > 0) m.set(e.status, n);
    else m.delete(e.status);
    if (m.size === 0) this.counts.delete(k);
    const p = this.pathCounts.get(e.workflow);
    if (!p) return;
    for (const path of e.paths) {
      const c = (p.get(path) ?? 1) - 1;
      if (c > 0) p.set(path, c);
      else p.delete(path);
    }
    if (p.size === 0) this.pathCounts.delete(e.workflow);
  }
}

function toRow(e: IndexEntry): InstanceRow {
  return {
    workflow: e.workflow,
    id: e.id,
    version: e.version,
    status: e.status,
    state: e.state,
    revision: e.revision,
    createdAtMs: e.createdAtMs,
    updatedAtMs: e.updatedAtMs,
  };
}
