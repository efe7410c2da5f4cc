/**
 * Partition ownership. Each engine heartbeats a member key and holds leases on a fair share of
 * the partitions in the control bucket; a lease whose KV revision has not moved for `ttlMs`
 * (as observed locally, so clocks need not agree) is taken over with compare-and-set. Leases
 * only keep engines from doing the same work twice: correctness does not rest on them, since
 * every owner reads its partition in order and every write is compare-and-set.
 */
import { randomUUID } from 'node:crypto';
import type { KvWatchEntry } from '@nats-io/kv';
import { z } from 'zod';
import { decodeJson, encodeJson } from '../protocol/record.js';
import type { Runtime } from '../store/runtime.js';
import type { PartitionWorker } from './partition-worker.js';

/**
 * A lease (or a released partition's last word): its owner, its checkpoint, and `safe`, a
 * checkpoint that is older than the duplicate window, below which events may be purged.
 */
const LeaseSchema = z.object({ owner: z.string(), checkpoint: z.number().int().nonnegative(), safe: z.number().int().nonnegative().default(0) });
type Lease = z.infer<typeof LeaseSchema>;

interface Observed {
  revision: number;
  operation: KvWatchEntry['operation'];
  seenAtMs: number;
  value?: Uint8Array;
}

interface Owned {
  worker: PartitionWorker;
  revision: number;
  renewedAtMs: number;
  /** Checkpoints with the (monotonic) time they were reached, oldest first. */
  samples: Array<{ atMs: number; checkpoint: number }>;
  /** The newest checkpoint reached longer ago than the duplicate window. */
  safe: number;
}

export interface PartitionManagerOptions {
  engineId?: string | undefined;
  ttlMs: number;
  drainTimeoutMs: number;
  /** Builds a started worker that resumes after `checkpoint`. */
  startWorker(partition: number, checkpoint: number): Promise<PartitionWorker>;
}

const now = (): number => performance.now();
/** At most this much slack for the server's clock against ours when judging the duplicate window. */
const PURGE_MARGIN_MS = 10_000;
/** At most this long between two trims of applied events by the purging engine. */
const PURGE_INTERVAL_MS = 10_000;

export class PartitionManager {
  readonly engineId: string;
  private readonly observed = new Map<string, Observed>();
  private readonly owned = new Map<number, Owned>();
  private watcher: Awaited<ReturnType<Runtime['control']['watch']>> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private stopped = false;
  private lastPurgeAtMs = -Infinity;
  /** The events stream's duplicate window, read from its configuration every round. */
  private duplicateWindowMs = 120_000;

  constructor(
    private readonly rt: Runtime,
    private readonly options: PartitionManagerOptions,
  ) {
    this.engineId = options.engineId ?? randomUUID().replace(/-/g, '').slice(0, 16);
  }

  /** Partitions this engine owns now. */
  ownedPartitions(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  workers(): PartitionWorker[] {
    return [...this.owned.values()].map((o) => o.worker);
  }

  async start(): Promise<void> {
    let initialised: () => void = () => {};
    const ready = new Promise<void>((r) => (initialised = r));
    this.watcher = await this.rt.control.watch({ key: ['lease.>', 'member.>'] });
    void this.observe(this.watcher, initialised);
    // An empty bucket sends no initial values; our own heartbeat coming back ends the wait.
    await this.rt.control.put(`member.${this.engineId}`, encodeJson({ startedAtMs: Date.now() }));
    await ready;
    await this.tick();
    this.timer = setInterval(() => {
      this.ticking = this.ticking.then(() => this.tick()).catch((e: Error) => this.rt.logger.warn(`partition lease round failed: ${e.message}`));
    }, Math.max(100, Math.floor(this.options.ttlMs / 3)));
  }

  /** Follows leases and members; a watch that ends on its own is opened again. */
  private async observe(first: NonNullable<typeof this.watcher>, initialised: () => void): Promise<void> {
    let watcher = first;
    for (;;) {
      try {
        for await (const e of watcher) {
          this.observed.set(e.key, { revision: e.revision, operation: e.operation, seenAtMs: now(), value: e.value });
          if (e.key === `member.${this.engineId}`) initialised();
        }
      } catch (e) {
        this.rt.logger.warn(`watching partition leases failed (${(e as Error).message}); watching again`);
      }
      for (;;) {
        if (this.stopped) return;
        await new Promise((r) => setTimeout(r, 250));
        try {
          watcher = this.watcher = await this.rt.control.watch({ key: ['lease.>', 'member.>'] });
          break;
        } catch {
          // NATS unavailable: try again
        }
      }
    }
  }

  /** Drains and releases every partition, then leaves the membership. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    await this.ticking.catch(() => {});
    await Promise.all([...this.owned.keys()].map((p) => this.release(p)));
    await this.rt.control.delete(`member.${this.engineId}`).catch(() => {});
    this.watcher?.stop();
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    await this.rt.control.put(`member.${this.engineId}`, encodeJson({ atMs: Date.now() }));
    const stream = await this.rt.jsm.streams.info(this.rt.names.eventsStream).catch(() => null);
    if (stream?.config.duplicate_window) this.duplicateWindowMs = stream.config.duplicate_window / 1_000_000;
    if (stream) await Promise.all(this.workers().map((w) => w.liftIfIdle(stream.state.last_seq).catch(() => {})));
    await Promise.all([...this.owned.keys()].map((p) => this.renew(p)));
    const alive = [...this.observed]
      .filter(([k, o]) => k.startsWith('member.') && o.operation === 'PUT' && (k === `member.${this.engineId}` || now() - o.seenAtMs < this.options.ttlMs))
      .map(([k]) => k.slice('member.'.length))
      .sort();
    if (stream && alive[0] === this.engineId) await this.purge(stream.state.first_seq);
    const share = Math.ceil(this.rt.partitions / Math.max(1, alive.length));
    const extra = this.owned.size - share;
    if (extra > 0) {
      const release = this.ownedPartitions().slice(-extra);
      await Promise.all(release.map((p) => this.release(p)));
      return;
    }
    // In waves of as many partitions as are missing, so a starting engine claims them in parallel.
    const free = Array.from({ length: this.rt.partitions }, (_, p) => p).filter((p) => !this.owned.has(p));
    while (free.length > 0 && this.owned.size < share && !this.stopped) {
      await Promise.all(free.splice(0, share - this.owned.size).map((p) => this.tryAcquire(p)));
    }
  }

  private async tryAcquire(p: number): Promise<void> {
    const key = `lease.${p}`;
    const seen = this.observed.get(key);
    const value = (l: Lease): Uint8Array => encodeJson({ owner: this.engineId, checkpoint: l.checkpoint, safe: l.safe });
    let last: Lease = { owner: '', checkpoint: 0, safe: 0 };
    let revision: number;
    try {
      if (!seen || seen.operation !== 'PUT') {
        // Free: never taken, or released; a released partition leaves its checkpoint behind.
        last = await this.releasedLease(p);
        revision = await this.rt.control.create(key, value(last));
      } else if (now() - seen.seenAtMs >= this.options.ttlMs) {
        last = this.parseLease(seen.value) ?? last;
        revision = await this.rt.control.update(key, value(last), seen.revision);
        this.rt.logger.info(`took over partition ${p} from a silent engine`, { checkpoint: last.checkpoint });
      } else {
        return;
      }
    } catch {
      return; // someone else was faster
    }
    try {
      const worker = await this.options.startWorker(p, last.checkpoint);
      // The previous owner's `safe` checkpoint is already past the duplicate window.
      this.owned.set(p, { worker, revision, renewedAtMs: now(), samples: [{ atMs: -Infinity, checkpoint: last.safe }], safe: last.safe });
    } catch (e) {
      this.rt.logger.warn(`partition ${p}: could not start its consumer: ${(e as Error).message}`);
      await this.rt.control.delete(key, { previousSeq: revision }).catch(() => {});
    }
  }

  /** A released partition's checkpoint lives in the `checkpoint.<p>` key written on release. */
  private async releasedLease(p: number): Promise<Lease> {
    const entry = await this.rt.control.get(`checkpoint.${p}`);
    const parsed = entry && entry.operation === 'PUT' ? this.parseLease(entry.value) : null;
    return parsed ?? { owner: '', checkpoint: 0, safe: 0 };
  }

  private parseLease(bytes: Uint8Array | undefined): Lease | null {
    if (!bytes || bytes.length === 0) return null;
    try {
      const r = LeaseSchema.safeParse(decodeJson(bytes));
      return r.success ? r.data : null;
    } catch {
      return null;
    }
  }

  private async renew(p: number): Promise<void> {
    const owned = this.owned.get(p);
    if (!owned) return;
    const checkpoint = owned.worker.checkpoint;
    this.age(owned, checkpoint);
    try {
      owned.revision = await this.rt.control.update(`lease.${p}`, encodeJson({ owner: this.engineId, checkpoint, safe: owned.safe }), owned.revision);
      owned.renewedAtMs = now();
    } catch (e) {
      const lost = /wrong last sequence/i.test((e as Error).message);
      if (lost || now() - owned.renewedAtMs > this.options.ttlMs * 0.8) {
        // Another engine has it, or soon may: stop at once rather than work beside it.
        this.owned.delete(p);
        this.rt.logger.warn(`partition ${p}: lease ${lost ? 'lost' : 'expired'}; stopping its worker`);
        await owned.worker.stop(0, true);
      }
      return;
    }
  }

  /** Records the checkpoint and advances `safe` to the newest one older than the duplicate window. */
  private age(owned: Owned, checkpoint: number): void {
    const t = now();
    owned.samples.push({ atMs: t, checkpoint });
    const horizon = t - this.duplicateWindowMs - Math.min(PURGE_MARGIN_MS, this.duplicateWindowMs / 10);
    while (owned.samples.length > 1 && owned.samples[1]!.atMs <= horizon) owned.samples.shift();
    if (owned.samples[0]!.atMs <= horizon) owned.safe = Math.max(owned.safe, owned.samples[0]!.checkpoint);
  }

  /**
   * Applied events are no longer needed in the events stream (history keeps them). One engine,
   * the live member with the lowest id, trims the stream up to the lowest `safe` checkpoint of
   * all partitions with one unfiltered purge: subject-filtered purges delete message by message
   * and stall publishes under `sync_interval: always`. `safe` lags the duplicate window, because
   * nats-server rebuilds its `Nats-Msg-Id` table from the stored messages when it restarts;
   * purging sooner would let a send() retried after a restart be stored, and applied, twice.
   */
  private async purge(firstSeq: number): Promise<void> {
    if (now() - this.lastPurgeAtMs < Math.min(PURGE_INTERVAL_MS, this.duplicateWindowMs)) return;
    this.lastPurgeAtMs = now();
    let floor = Infinity;
    for (let p = 0; p < this.rt.partitions; p++) {
      const mine = this.owned.get(p);
      const seen = this.observed.get(`lease.${p}`);
      const safe = mine ? mine.safe : seen?.operation === 'PUT' ? this.parseLease(seen.value)?.safe : undefined;
      if (safe === undefined) return; // a partition between owners: try again next round
      floor = Math.min(floor, safe);
    }
    if (floor + 1 <= firstSeq) return;
    try {
      await this.rt.jsm.streams.purge(this.rt.names.eventsStream, { seq: floor + 1 });
    } catch (e) {
      this.rt.logger.warn(`purge of applied events failed: ${(e as Error).message}`);
    }
  }

  private async release(p: number): Promise<void> {
    const owned = this.owned.get(p);
    if (!owned) return;
    this.owned.delete(p);
    await owned.worker.stop(this.options.drainTimeoutMs);
    const checkpoint = owned.worker.checkpoint;
    try {
      this.age(owned, checkpoint);
      await this.rt.control.put(`checkpoint.${p}`, encodeJson({ owner: this.engineId, checkpoint, safe: owned.safe }));
      await this.rt.control.delete(`lease.${p}`, { previousSeq: owned.revision });
    } catch (e) {
      this.rt.logger.warn(`partition ${p}: release failed (${(e as Error).message}); it will be taken over after its lease expires`);
    }
  }
}
