/**
 * Partition ownership. Each workflow has its own partitions (one events stream each). Every
 * engine heartbeats a member key saying what it can serve (workflow versions, extensions) and
 * holds leases on a fair share of the partitions of the workflows it serves, in the control
 * bucket. Only engines that can serve a workflow take its partitions, so services with different
 * workflows share one NATS and one namespace without touching each other's instances; among
 * them, an engine whose versions of a workflow are a strict subset of another live engine's
 * leaves that workflow to the others (a rolling upgrade moves instances to the new code).
 *
 * A lease whose KV revision has not moved for `ttlMs` (as observed locally, so clocks need not
 * agree) is taken over with compare-and-set. Leases only keep engines from doing the same work
 * twice: correctness does not rest on them, since every owner reads its partition in order and
 * every write is compare-and-set.
 *
 * Leases are renewed on their own clock, apart from the work of taking, starting, moving and
 * releasing partitions: while a server is down that work waits seconds on the JetStream API, and
 * renewals held behind it let the other engines take this one's partitions over as silent, and
 * theirs in turn, so that partitions changed hands every second instead of being read.
 *
 * The owner of a partition also trims its stream: events below its checkpoint are no longer
 * needed (history keeps them), once older than the duplicate window (nats-server rebuilds its
 * `Nats-Msg-Id` table from stored messages when it restarts, so trimming sooner would let a
 * retried send() be stored twice).
 */
import { randomUUID } from 'node:crypto';
import type { KvWatchEntry } from '@nats-io/kv';
import { z } from 'zod';
import { decodeJson, encodeJson } from '../protocol/json.js';
import type { Runtime } from '../store/runtime.js';
import { isCasConflict } from '../store/nats-errors.js';
import { waitAtMost } from '../clock.js';
import type { PartitionWorker } from './partition-worker.js';

/** A lease: its owner, the checkpoint it reached, its trim point, and how long it lasts unrenewed (clients read that). */
const LeaseSchema = z.object({
  owner: z.string(),
  /** The owning engine process (its id may be shared by mistake; see `PartitionManager.run`). */
  run: z.string().optional(),
  checkpoint: z.number().int().nonnegative(),
  safe: z.number().int().nonnegative().default(0),
  ttlMs: z.number().optional(),
});
type Lease = z.infer<typeof LeaseSchema>;

/** What a live engine says of itself in `member.<engineId>`. */
export const MemberSchema = z.object({
  atMs: z.number(),
  /** Its lease TTL: a member silent for longer is gone. */
  ttlMs: z.number().default(5_000),
  workflows: z.record(z.string(), z.array(z.number().int())).default({}),
  extensions: z.array(z.string()).default([]),
  /** The engine process that wrote it (see `PartitionManager.run`). */
  run: z.string().optional(),
  /** The ids (never the keys) of its key ring: an event it sealed under one waits for an engine with that key. */
  keyIds: z.array(z.string()).default([]),
});
export type Member = z.infer<typeof MemberSchema>;

interface Observed {
  revision: number;
  operation: KvWatchEntry['operation'];
  seenAtMs: number;
  value?: Uint8Array;
}

interface Owned {
  workflow: string;
  partition: number;
  /** Made when the lease is taken; its checkpoint is renewed from then on, while it starts too. */
  worker: PartitionWorker;
  /** Its reader runs. */
  started: boolean;
  /** Settles once the worker has started or failed to. */
  starting: Promise<void>;
  /** Being handed over: drained while its lease is still renewed, then released. */
  releasing?: boolean;
  /** Another engine has it (or soon may): its worker is stopped and nothing more is written for it. */
  lost?: boolean;
  /** The renewal under way: a release waits for it, or its delete would miss the new revision. */
  renewal?: Promise<void>;
  trimming?: boolean;
  revision: number;
  renewedAtMs: number;
  /** Checkpoints written to the lease with the (monotonic) time they were written, oldest first. */
  samples: Array<{ atMs: number; checkpoint: number }>;
  /** The newest written checkpoint older than the duplicate window: events up to it may be trimmed. */
  safe: number;
  trimmedTo: number;
  trimmedAtMs: number;
  /**
   * The partition stream's own duplicate window (set when the stream was created, maybe by another
   * process with other options): nothing younger than it is trimmed, so its idempotency keys hold.
   */
  windowMs: number;
}

export interface PartitionManagerOptions {
  engineId?: string | undefined;
  ttlMs: number;
  drainTimeoutMs: number;
  /** The workflows this engine serves, with their versions. */
  workflows(): Map<string, number[]>;
  /** The extensions this engine runs. */
  extensions: readonly string[];
  /** Extensions a workflow's activities need (an engine without them leaves it to one that has them). */
  requiredExtensions(workflow: string): readonly string[];
  /** Builds a worker that resumes after `checkpoint` (the manager starts it). */
  createWorker(workflow: string, partition: number, checkpoint: number): PartitionWorker;
  /** Fault injection for tests: called before a trim. */
  beforeTrim?: ((stream: string, seq: number) => Promise<void> | void) | undefined;
  /** For tests: called before a worker starts (a slow start stands for a slow JetStream API). */
  beforeWorkerStart?: ((workflow: string, partition: number) => Promise<void> | void) | undefined;
  /** For tests: true drops an entry of the lease watch (a stalled watch). */
  dropWatchEntry?: ((generation: number, key: string) => boolean) | undefined;
  /** Other control keys this watch follows (their entries go to `entry`, not to the leases): published secret paths. */
  follow?: { keys: readonly string[]; entry(e: KvWatchEntry): void } | undefined;
}

const now = (): number => performance.now();
/** At most this much slack for the server's clock against ours when judging the duplicate window. */
const TRIM_MARGIN_MS = 10_000;
/** How long one attempt to open the watch of leases and members may take (see openWatch). */
const WATCH_OPEN_MS = 2_000;
const WATCH_OPEN_ATTEMPTS = 8;
/**
 * A watch that has not brought this engine's own heartbeat back this long after it was written is
 * taken as stalled and opened again (at least this, and at least the lease TTL).
 */
const WATCH_STALL_MS = 3_000;
/** At most this long between two trims of one partition. */
const TRIM_INTERVAL_MS = 10_000;

const slot = (workflow: string, partition: number): string => `${workflow}/${partition}`;

export class PartitionManager {
  readonly engineId: string;
  /**
   * This engine process, apart from any other given the same `engineId` by mistake: in its
   * heartbeat and its leases, so that such a process is reported and its leases are not taken
   * for this one's.
   */
  private readonly run = randomUUID();
  private sharedIdSaidAtMs = -Infinity;
  private readonly startedAtMs = Date.now();
  private readonly observed = new Map<string, Observed>();
  private readonly owned = new Map<string, Owned>();
  private watcher: Awaited<ReturnType<Runtime['control']['watch']>> | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private balanceTimer: NodeJS.Timeout | undefined;
  /** The round of each loop under way (a loop skips its turn while its last round runs). */
  private renewing: Promise<void> | undefined;
  private balancing: Promise<void> | undefined;
  private heartbeatFailing = false;
  /** The oldest heartbeat written that the watch has not brought back yet (see {@link checkWatch}). */
  private unseenBeat: { revision: number; atMs: number } | undefined;
  /** Watches opened so far (the test hook's generation). */
  private watchGeneration = 0;
  /** Trims under way (not waited for by the renewals that start them). */
  private readonly trims = new Set<Promise<void>>();
  /** Lost partitions whose workers are stopping: not taken again until they have. */
  private readonly leaving = new Map<string, Promise<void>>();
  private stopped = false;

  constructor(
    private readonly rt: Runtime,
    private readonly options: PartitionManagerOptions,
  ) {
    this.engineId = options.engineId ?? randomUUID().replace(/-/g, '').slice(0, 16);
  }

  /** The partitions this engine owns now (started or starting, not being handed over), by workflow. */
  ownedPartitions(workflow?: string): Array<{ workflow: string; partition: number }> {
    return [...this.owned.values()]
      .filter((o) => !o.releasing && (workflow === undefined || o.workflow === workflow))
      .map((o) => ({ workflow: o.workflow, partition: o.partition }))
      .sort((a, b) => a.workflow.localeCompare(b.workflow) || a.partition - b.partition);
  }

  owns(workflow: string, partition: number): boolean {
    const o = this.owned.get(slot(workflow, partition));
    return o !== undefined && !o.releasing;
  }

  /** The workers of the owned partitions that have started. */
  workers(): PartitionWorker[] {
    return [...this.owned.values()].flatMap((o) => (o.started ? [o.worker] : []));
  }

  /**
   * Live members (including this engine) as last seen. Each is judged by the TTL it declares (it
   * renews at a third of its own): engines of one namespace may run with different ones.
   */
  liveMembers(): Map<string, Member> {
    const out = new Map<string, Member>();
    for (const [k, o] of this.observed) {
      if (!k.startsWith('member.') || o.operation !== 'PUT') continue;
      const id = k.slice('member.'.length);
      const m = parse(MemberSchema, o.value);
      if (m && id !== this.engineId && now() - o.seenAtMs < m.ttlMs) out.set(id, m);
    }
    // This engine as it says it is: its key may hold another process's heartbeat (an id used twice).
    out.set(this.engineId, this.member());
    return out;
  }

  /** What this engine's heartbeat says. */
  private member(): Member {
    return {
      atMs: Date.now(),
      ttlMs: this.options.ttlMs,
      workflows: Object.fromEntries(this.options.workflows()),
      extensions: [...this.options.extensions],
      run: this.run,
      keyIds: [...(this.rt.security.codec.ring?.ids ?? [])],
    };
  }

  async start(): Promise<void> {
    let initialised: () => void = () => {};
    const ready = new Promise<void>((r) => (initialised = r));
    this.watcher = await this.openWatch();
    void this.observe(this.watcher, initialised);
    // An empty bucket sends no initial values; our own heartbeat coming back ends the wait. A watch
    // that never delivers it (see checkWatch) is opened again, and the heartbeat written again.
    const stallMs = Math.max(WATCH_STALL_MS, this.options.ttlMs);
    for (;;) {
      await this.heartbeat();
      if (await waitAtMost(ready, stallMs)) break;
      if (this.stopped) return;
      this.rt.logger.warn(`the watch of partition leases did not deliver this engine's first heartbeat within ${stallMs} ms; watching again`);
      // The observe loop opens a new watch once this one ends.
      this.watcher?.stop();
      this.watcher = undefined;
    }
    const every = Math.max(100, Math.floor(this.options.ttlMs / 3));
    // Not once stopped meanwhile (an engine that failed to open is closed while this ran).
    if (this.stopped) return;
    // Renewals first: the first partitions' workers may take long to start.
    this.renewTimer = setInterval(() => void this.renewRound(), every);
    await this.balanceRound();
    if (!this.stopped) this.balanceTimer = setInterval(() => void this.balanceRound(), every);
  }

  /** Heartbeat and renewal of every lease held (starting and draining workers' too); nothing else waits in it. */
  private renewRound(): Promise<void> {
    return (this.renewing ??= (async () => {
      try {
        await Promise.all([
          this.heartbeat().then(
            (revision) => {
              if (this.heartbeatFailing) this.rt.logger.info('engine heartbeat written again');
              this.heartbeatFailing = false;
              this.unseenBeat ??= { revision, atMs: now() };
              this.checkWatch();
            },
            (e: Error) => {
              // Once per failing stretch, not every round.
              if (!this.heartbeatFailing) this.rt.logger.warn(`engine heartbeat failed (${e.message}); retrying every round`);
              this.heartbeatFailing = true;
            },
          ),
          ...[...this.owned.keys()].map((k) => this.renew(k)),
        ]);
      } finally {
        this.renewing = undefined;
      }
    })());
  }

  /** Moves consumers to their stream leaders, takes and hands over partitions. */
  private balanceRound(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return (this.balancing ??= this.arrange()
      .catch((e: Error) => this.rt.logger.warn(`partition lease round failed: ${e.message}`))
      .finally(() => (this.balancing = undefined)));
  }

  /**
   * The watch of leases and members is what takeovers rest on: a lease is taken over once its
   * revision has not moved for the TTL, as the watch saw it, and with the revision it saw. A watch
   * that stopped delivering without ending (its consumer on a server that died, before the client
   * noticed) shows every lease as silent at an old revision, so every takeover fails its
   * compare-and-set, and nothing says why. This engine's own heartbeat, written every round, must
   * come back through the watch: when it has not for a while, the watch is stopped and opened again.
   */
  private checkWatch(): void {
    const beat = this.unseenBeat;
    if (!beat || !this.watcher || this.stopped) return;
    const stallMs = Math.max(WATCH_STALL_MS, this.options.ttlMs);
    if (now() - beat.atMs < stallMs) return;
    this.rt.logger.warn(`the watch of partition leases has not delivered this engine's heartbeat for ${Math.round(now() - beat.atMs)} ms; watching again`);
    this.unseenBeat = undefined;
    // The observe loop opens a new watch once this one ends.
    this.watcher.stop();
    this.watcher = undefined;
  }

  private heartbeat(): Promise<number> {
    return this.rt.control.put(this.rt.names.memberKey(this.engineId), encodeJson(this.member()));
  }

  /** Another process writes this engine's member key: said as an error, at most once a minute. */
  private sharedId(value: Uint8Array | undefined): void {
    const other = parse(MemberSchema, value);
    if (!other?.run || other.run === this.run || now() - this.sharedIdSaidAtMs < 60_000) return;
    // The last heartbeat of this id's previous process (restarted with a stable engineId) is not another.
    if (other.atMs < this.startedAtMs) return;
    this.sharedIdSaidAtMs = now();
    const theirs = Object.keys(other.workflows).join(', ') || 'none';
    this.rt.logger.error(
      `engineId '${this.engineId}' is used by another engine process too (its workflows: ${theirs}): their heartbeats overwrite each other and their leases look alike; give each engine process its own engineId (or leave it out for a random one)`,
    );
  }

  /**
   * Opens the watch of leases and members. Its consumer may be placed on a server that died and
   * is not yet known as gone, whose create is never answered: an attempt that takes longer than
   * `WATCH_OPEN_MS` is given up (the watch, if it comes later, is stopped) and made again,
   * rather than waiting out the API's 5 s, which kept new engines from starting while a node was
   * down. Throws once the manager stopped.
   */
  private async openWatch(): Promise<NonNullable<typeof this.watcher>> {
    for (let i = 1; ; i++) {
      if (this.stopped) throw new Error('partition manager stopped');
      const attempt = this.rt.control.watch({ key: ['lease.>', 'member.>', ...(this.options.follow?.keys ?? [])] });
      this.watchGeneration++;
      // Bounded: a control bucket that answers nobody fails as it always did.
      if (i >= WATCH_OPEN_ATTEMPTS) return attempt;
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), WATCH_OPEN_MS)));
      const w = await Promise.race([attempt, late]).finally(() => clearTimeout(timer));
      if (w) return w;
      void attempt.then(
        (x) => x.stop(),
        () => {},
      );
    }
  }

  /** Follows leases and members; a watch that ends on its own is opened again. */
  private async observe(first: NonNullable<typeof this.watcher>, initialised: () => void): Promise<void> {
    let watcher = first;
    const own = this.rt.names.memberKey(this.engineId);
    for (;;) {
      try {
        const generation = this.watchGeneration;
        for await (const e of watcher) {
          if (this.options.dropWatchEntry?.(generation, e.key)) continue;
          if (!e.key.startsWith('lease.') && !e.key.startsWith('member.')) {
            this.options.follow?.entry(e);
            continue;
          }
          // A watch opened again delivers the last values anew: one already seen keeps when it was
          // first seen, or a silent lease would look fresh after every new watch.
          const was = this.observed.get(e.key);
          if (!was || was.revision !== e.revision) this.observed.set(e.key, { revision: e.revision, operation: e.operation, seenAtMs: now(), value: e.value });
          if (e.key === own) {
            if (e.operation === 'PUT') this.sharedId(e.value);
            if (this.unseenBeat && e.revision >= this.unseenBeat.revision) this.unseenBeat = undefined;
            initialised();
          }
        }
      } catch (e) {
        this.rt.logger.warn(`watching partition leases failed (${(e as Error).message}); watching again`);
      }
      for (;;) {
        if (this.stopped) return;
        await new Promise((r) => setTimeout(r, 250));
        try {
          watcher = this.watcher = await this.openWatch();
          break;
        } catch {
          // NATS unavailable: try again
        }
      }
    }
  }

  /** Drains and releases every partition (their leases renewed meanwhile), then leaves the membership. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.balanceTimer);
    // Workers still starting stop retrying their consumers: the round that starts them ends.
    for (const o of this.owned.values()) if (!o.started) void o.worker.stop(0, true).catch(() => {});
    await this.balancing;
    await Promise.all([...this.owned.keys()].map((k) => this.release(k)));
    clearInterval(this.renewTimer);
    await this.renewing;
    await Promise.all([...this.trims, ...this.leaving.values()]);
    await this.rt.control.delete(this.rt.names.memberKey(this.engineId)).catch(() => {});
    this.watcher?.stop();
  }

  private async arrange(): Promise<void> {
    await Promise.all(this.workers().map((w) => w.checkPlacement().catch(() => {})));
    const members = this.liveMembers();
    for (const [workflow] of this.options.workflows()) {
      if (this.stopped) return;
      await this.balance(workflow, members);
    }
    // Workflows no longer served here (not expected, but never keep what we do not serve).
    const served = this.options.workflows();
    await Promise.all([...this.owned.values()].filter((o) => !served.has(o.workflow)).map((o) => this.release(slot(o.workflow, o.partition))));
  }

  /**
   * The engines that should serve `workflow`: live members that register it, have the
   * extensions its activities need (when any live member has them), and whose versions of it are
   * not a strict subset of another candidate's.
   */
  eligible(workflow: string, members: Map<string, Member>): string[] {
    let candidates = [...members].filter(([, m]) => m.workflows[workflow] !== undefined);
    const needed = this.options.requiredExtensions(workflow);
    if (needed.length > 0) {
      const equipped = candidates.filter(([, m]) => needed.every((x) => m.extensions.includes(x)));
      if (equipped.length > 0) candidates = equipped;
    }
    const versions = candidates.map(([id, m]) => [id, new Set(m.workflows[workflow])] as const);
    const dominated = (a: Set<number>, b: Set<number>): boolean => a.size < b.size && [...a].every((v) => b.has(v));
    return versions
      .filter(([, a]) => !versions.some(([, b]) => dominated(a, b)))
      .map(([id]) => id)
      .sort();
  }

  private async balance(workflow: string, members: Map<string, Member>): Promise<void> {
    const eligible = this.eligible(workflow, members);
    const mine = this.ownedPartitions(workflow).map((o) => o.partition);
    if (!eligible.includes(this.engineId)) {
      if (mine.length > 0)
        this.rt.logger.info(
          `workflow '${workflow}': another live engine serves more of its versions or has the extensions it needs; handing over its partitions`,
        );
      await Promise.all(mine.map((p) => this.release(slot(workflow, p))));
      return;
    }
    const share = Math.ceil(this.rt.partitions / Math.max(1, eligible.length));
    const extra = mine.length - share;
    if (extra > 0) {
      await Promise.all(mine.slice(-extra).map((p) => this.release(slot(workflow, p))));
      return;
    }
    // In waves of as many partitions as are missing, so a starting engine claims them in parallel.
    const free = Array.from({ length: this.rt.partitions }, (_, p) => p).filter((p) => !this.owned.has(slot(workflow, p)));
    while (free.length > 0 && this.ownedPartitions(workflow).length < share && !this.stopped) {
      await Promise.all(free.splice(0, share - this.ownedPartitions(workflow).length).map((p) => this.tryAcquire(workflow, p, eligible)));
    }
  }

  private async tryAcquire(workflow: string, p: number, eligible: readonly string[]): Promise<void> {
    // A worker of ours for it is still stopping: two would read the same partition.
    if (this.leaving.has(slot(workflow, p))) return;
    const key = this.rt.names.leaseKey(workflow, p);
    const seen = this.observed.get(key);
    const value = (l: Lease): Uint8Array =>
      encodeJson({ owner: this.engineId, run: this.run, checkpoint: l.checkpoint, safe: l.safe, ttlMs: this.options.ttlMs });
    let last: Lease = { owner: '', checkpoint: 0, safe: 0 };
    let revision: number;
    try {
      if (!seen || seen.operation !== 'PUT') {
        // Free: never taken, or released; a released partition leaves its checkpoint behind.
        last = await this.releasedLease(workflow, p);
        revision = await this.rt.control.create(key, value(last));
      } else {
        last = parse(LeaseSchema, seen.value) ?? last;
        // A live owner that should not serve this workflow (any more) hands it over itself;
        // one that went silent (for longer than the TTL it declares) is taken over.
        if (now() - seen.seenAtMs < (last.ttlMs ?? this.options.ttlMs)) return;
        revision = await this.rt.control.update(key, value(last), seen.revision).catch(async (e: unknown) => {
          // The lease moved since the watch saw it: what the watch missed is read now, so a watch
          // that lags cannot keep this engine from taking over a lease that is silent.
          await this.refresh(key, seen.revision);
          throw e;
        });
        this.rt.logger.info(`took over workflow '${workflow}' partition ${p} from a silent engine`, { checkpoint: last.checkpoint, eligible });
      }
    } catch {
      return; // someone else was faster
    }
    // Held (and renewed) from now on, while its worker starts.
    const owned: Owned = {
      workflow,
      partition: p,
      worker: this.options.createWorker(workflow, p, last.checkpoint),
      started: false,
      starting: Promise.resolve(),
      revision,
      renewedAtMs: now(),
      // The previous owner's `safe` checkpoint is already past the duplicate window.
      samples: [{ atMs: -Infinity, checkpoint: last.safe }],
      safe: last.safe,
      trimmedTo: 0,
      trimmedAtMs: -Infinity,
      windowMs: this.rt.duplicateWindowMs,
    };
    this.owned.set(slot(workflow, p), owned);
    owned.starting = this.startOwned(owned);
    await owned.starting;
  }

  /** Reads a lease the watch may have missed a change of; a newer revision counts as seen now. */
  private async refresh(key: string, revision: number): Promise<void> {
    const entry = await this.rt.control.get(key).catch(() => null);
    if (!entry || entry.revision <= revision) return;
    const was = this.observed.get(key);
    if (was && was.revision >= entry.revision) return;
    this.observed.set(key, { revision: entry.revision, operation: entry.operation, seenAtMs: now(), value: entry.value });
  }

  private async startOwned(owned: Owned): Promise<void> {
    const { workflow, partition: p } = owned;
    try {
      const stream = await this.rt.jsm.streams.info(this.rt.names.eventStream(workflow, p));
      owned.windowMs = Math.max(this.rt.duplicateWindowMs, Math.ceil((stream.config.duplicate_window ?? 0) / 1_000_000));
      await this.options.beforeWorkerStart?.(workflow, p);
      // Lost meanwhile: its worker was stopped and must not start.
      if (owned.lost) return;
      await owned.worker.start();
      owned.started = !owned.lost;
    } catch (e) {
      this.rt.logger.warn(`workflow '${workflow}' partition ${p}: could not start its reader: ${(e as Error).message}`);
      if (this.owned.get(slot(workflow, p)) !== owned) return;
      this.owned.delete(slot(workflow, p));
      await owned.renewal;
      // Free at once for another try, with the checkpoint it was taken with: a lease taken over
      // from a silent engine was the only place that checkpoint lived.
      if (!owned.lost) await this.giveBack(owned, owned.worker.checkpoint).catch(() => {});
    }
  }

  /**
   * Frees a lease this engine holds, its checkpoint left in the partition's checkpoint key for the
   * next owner. Writes and deletes nothing when the lease moved on (taken over while this engine
   * stood still past its TTL: the revision differs): its checkpoint, older than the one the next
   * owner leaves there, would send the owner after that back to events applied already.
   */
  private async giveBack(owned: Owned, checkpoint: number): Promise<void> {
    const lease = await this.rt.control.get(this.rt.names.leaseKey(owned.workflow, owned.partition));
    if (lease?.revision !== owned.revision)
      throw new Error(`its lease moved on (revision ${lease?.revision ?? 'none'}, held ${owned.revision}): taken over meanwhile`);
    await this.rt.control.put(this.rt.names.checkpointKey(owned.workflow, owned.partition), encodeJson({ owner: this.engineId, checkpoint, safe: owned.safe }));
    await this.rt.control.delete(this.rt.names.leaseKey(owned.workflow, owned.partition), { previousSeq: owned.revision });
  }

  /**
   * Another engine has the partition, or soon may: stops its worker at its next step (a worker
   * still starting stops retrying its consumer), not waited for by the caller.
   */
  private lose(k: string, owned: Owned): void {
    this.owned.delete(k);
    owned.lost = true;
    const stopping = owned.worker
      .stop(0, true)
      .catch((e: Error) => this.rt.logger.warn(`workflow '${owned.workflow}' partition ${owned.partition}: ${e.message}`))
      .finally(() => this.leaving.delete(k));
    this.leaving.set(k, stopping);
  }

  /** A released partition's checkpoint lives in its checkpoint key, written on release. */
  private async releasedLease(workflow: string, p: number): Promise<Lease> {
    const entry = await this.rt.control.get(this.rt.names.checkpointKey(workflow, p));
    return (entry && entry.operation === 'PUT' ? parse(LeaseSchema, entry.value) : null) ?? { owner: '', checkpoint: 0, safe: 0 };
  }

  private renew(k: string): Promise<void> {
    const owned = this.owned.get(k);
    if (!owned) return Promise.resolve();
    const renewal = this.renewOwned(k, owned).finally(() => {
      if (owned.renewal === renewal) owned.renewal = undefined;
    });
    owned.renewal = renewal;
    return renewal;
  }

  private async renewOwned(k: string, owned: Owned): Promise<void> {
    const checkpoint = owned.worker.checkpoint;
    try {
      owned.revision = await this.rt.control.update(
        this.rt.names.leaseKey(owned.workflow, owned.partition),
        encodeJson({ owner: this.engineId, run: this.run, checkpoint, safe: owned.safe, ttlMs: this.options.ttlMs }),
        owned.revision,
      );
      owned.renewedAtMs = now();
    } catch (e) {
      // A conflict with a lease that still names this engine is a renewal of its own whose reply
      // was lost after the server stored it: its revision is taken, the lease kept.
      if (isCasConflict(e) && (await this.adoptOwnRenewal(owned))) return;
      const lost = isCasConflict(e);
      if (lost || now() - owned.renewedAtMs > this.options.ttlMs * 0.8) {
        // Another engine has it, or soon may: stop at once rather than work beside it.
        if (this.owned.get(k) !== owned) return;
        this.rt.logger.warn(`workflow '${owned.workflow}' partition ${owned.partition}: lease ${lost ? 'lost' : 'expired'}; stopping its worker`);
        // Not waited for: dropping its consumer can take seconds, and other leases wait for renewal.
        this.lose(k, owned);
      }
      return;
    }
    this.age(owned, checkpoint);
    if (owned.started && !owned.releasing) {
      const t = this.trim(owned);
      this.trims.add(t);
      void t.finally(() => this.trims.delete(t));
    }
  }

  /** True when the lease's newest revision is this engine's own (then `owned` takes its revision). */
  private async adoptOwnRenewal(owned: Owned): Promise<boolean> {
    const entry = await this.rt.control.get(this.rt.names.leaseKey(owned.workflow, owned.partition)).catch(() => null);
    if (!entry || entry.operation !== 'PUT' || entry.revision <= owned.revision) return false;
    // This process's: another one with the same engineId (by mistake) may have taken it over.
    const lease = parse(LeaseSchema, entry.value);
    if (lease?.owner !== this.engineId || lease.run !== this.run) return false;
    owned.revision = entry.revision;
    owned.renewedAtMs = now();
    return true;
  }

  /** Records a written checkpoint and advances `safe` to the newest one older than the duplicate window. */
  private age(owned: Owned, checkpoint: number): void {
    const t = now();
    const window = owned.windowMs;
    owned.samples.push({ atMs: t, checkpoint });
    const horizon = t - window - Math.min(TRIM_MARGIN_MS, window / 10);
    while (owned.samples.length > 1 && owned.samples[1]!.atMs <= horizon) owned.samples.shift();
    if (owned.samples[0]!.atMs <= horizon) owned.safe = Math.max(owned.safe, owned.samples[0]!.checkpoint);
  }

  /**
   * Trims the partition's stream up to its `safe` checkpoint, which is never past an event this
   * partition has not finished. A purge with `seq` 1 or 0 would empty the whole stream on
   * nats-server 2.10, so nothing is trimmed until `safe` is at least 1.
   */
  private async trim(owned: Owned): Promise<void> {
    if (owned.trimming || owned.safe < 1 || owned.safe <= owned.trimmedTo) return;
    if (now() - owned.trimmedAtMs < Math.min(TRIM_INTERVAL_MS, owned.windowMs)) return;
    owned.trimmedAtMs = now();
    owned.trimming = true;
    const stream = this.rt.names.eventStream(owned.workflow, owned.partition);
    const seq = owned.safe + 1;
    try {
      await this.options.beforeTrim?.(stream, seq);
      await this.rt.jsm.streams.purge(stream, { seq });
      owned.trimmedTo = seq - 1;
    } catch (e) {
      this.rt.logger.warn(`trimming applied events of '${stream}' failed: ${(e as Error).message}`);
    } finally {
      owned.trimming = false;
    }
  }

  private async release(k: string): Promise<void> {
    const owned = this.owned.get(k);
    if (!owned || owned.releasing) return;
    // Still held, and renewed, while it drains: nobody takes it over as silent meanwhile.
    owned.releasing = true;
    await owned.starting;
    await owned.worker.stop(this.options.drainTimeoutMs);
    // Lost meanwhile, or never started (startOwned gave the lease up): nothing more to write.
    if (this.owned.get(k) !== owned) return;
    this.owned.delete(k);
    await owned.renewal;
    const checkpoint = owned.worker.checkpoint;
    try {
      this.age(owned, checkpoint);
      await this.giveBack(owned, checkpoint);
    } catch (e) {
      this.rt.logger.warn(
        `workflow '${owned.workflow}' partition ${owned.partition}: release failed (${(e as Error).message}); it will be taken over after its lease expires`,
      );
    }
  }
}

function parse<S extends z.ZodType>(schema: S, bytes: Uint8Array | undefined): z.output<S> | null {
  if (!bytes || bytes.length === 0) return null;
  try {
    const r = schema.safeParse(decodeJson(bytes));
    return r.success ? r.data : null;
  } catch {
    return null;
  }
}
