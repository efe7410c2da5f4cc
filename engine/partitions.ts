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
import { decodeJson, encodeJson } from './record.js';
import { DUPLICATE_WINDOW_MS, type Runtime } from './runtime.js';
import type { PartitionWorker } from './partition-worker.js';

const LeaseSchema = z.object({ owner: z.string(), checkpoint: z.number().int().nonnegative() });

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
  purgedBelow: number;
  /** Checkpoints with the (monotonic) time they were reached, oldest first. */
  samples: Array<{ atMs: number; checkpoint: number }>;
}

export interface PartitionManagerOptions {
  engineId?: string | undefined;
  ttlMs: number;
  drainTimeoutMs: number;
  /** Builds a started worker that resumes after `checkpoint`. */
  startWorker(partition: number, checkpoint: number): Promise<PartitionWorker>;
}

const now = (): number => performance.now();
/** Slack for the server's clock against ours when judging the duplicate window. */
const PURGE_MARGIN_MS = 10_000;

export class PartitionManager {
  readonly engineId: string;
  private readonly observed = new Map<string, Observed>();
  private readonly owned = new Map<number, Owned>();
  private watcher: Awaited<ReturnType<Runtime['control']['watch']>> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private stopped = false;

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
    await Promise.all([...this.owned.keys()].map((p) => this.renew(p)));
    const alive = [...this.observed].filter(
      ([k, o]) => k.startsWith('member.') && o.operation === 'PUT' && (k === `member.${this.engineId}` || now() - o.seenAtMs < this.options.ttlMs),
    ).length;
    const share = Math.ceil(this.rt.partitions / Math.max(1, alive));
    const extra = this.owned.size - share;
    if (extra > 0) {
      const release = this.ownedPartitions().slice(-extra);
      await Promise.all(release.map((p) => this.release(p)));
      return;
    }
    for (let p = 0; p < this.rt.partitions && this.owned.size < share && !this.stopped; p++) {
      if (this.owned.has(p)) continue;
      await this.tryAcquire(p);
    }
  }

  private async tryAcquire(p: number): Promise<void> {
    const key = `lease.${p}`;
    const seen = this.observed.get(key);
    const value = (checkpoint: number): Uint8Array => encodeJson({ owner: this.engineId, checkpoint });
    let checkpoint = 0;
    let revision: number;
    try {
      if (!seen || seen.operation !== 'PUT') {
        // Free: never taken, or released. A released lease keeps its checkpoint in the last PUT.
        checkpoint = await this.lastCheckpoint(key);
        revision = await this.rt.control.create(key, value(checkpoint));
      } else if (now() - seen.seenAtMs >= this.options.ttlMs) {
        checkpoint = this.parseLease(seen.value)?.checkpoint ?? 0;
        revision = await this.rt.control.update(key, value(checkpoint), seen.revision);
        this.rt.logger.info(`took over partition ${p} from a silent engine`, { checkpoint });
      } else {
        return;
      }
    } catch {
      return; // someone else was faster
    }
    try {
      const worker = await this.options.startWorker(p, checkpoint);
      this.owned.set(p, { worker, revision, renewedAtMs: now(), purgedBelow: checkpoint, samples: [] });
    } catch (e) {
      this.rt.logger.warn(`partition ${p}: could not start its consumer: ${(e as Error).message}`);
      await this.rt.control.delete(key, { previousSeq: revision }).catch(() => {});
    }
  }

  /** The checkpoint of a deleted lease lives in the `checkpoint.<p>` key written on release. */
  private async lastCheckpoint(leaseKey: string): Promise<number> {
    const entry = await this.rt.control.get(`checkpoint.${leaseKey.slice('lease.'.length)}`);
    if (!entry || entry.operation !== 'PUT') return 0;
    return this.parseLease(entry.value)?.checkpoint ?? 0;
  }

  private parseLease(bytes: Uint8Array | undefined): z.infer<typeof LeaseSchema> | null {
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
    try {
      owned.revision = await this.rt.control.update(`lease.${p}`, encodeJson({ owner: this.engineId, checkpoint }), owned.revision);
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
    await this.purge(p, owned);
  }

  /**
   * Applied events are no longer needed in the events stream (history keeps them), but only once
   * their idempotency keys have left the duplicate window: nats-server rebuilds its dedupe table
   * from the messages still stored when it restarts, so purging earlier would let a retried
   * send() after a server restart be stored, and applied, a second time.
   */
  private async purge(p: number, owned: Owned): Promise<void> {
    const t = now();
    owned.samples.push({ atMs: t, checkpoint: owned.worker.checkpoint });
    const horizon = t - DUPLICATE_WINDOW_MS - PURGE_MARGIN_MS;
    let safe = -1;
    while (owned.samples.length > 0 && owned.samples[0]!.atMs <= horizon) safe = owned.samples.shift()!.checkpoint;
    if (safe < 0) return;
    // Keep the newest sample old enough so the next round can use it again.
    owned.samples.unshift({ atMs: horizon, checkpoint: safe });
    const below = safe + 1;
    if (below <= owned.purgedBelow + 1) return;
    try {
      await this.rt.jsm.streams.purge(this.rt.names.eventsStream, { filter: this.rt.names.partitionFilter(p), seq: below });
      owned.purgedBelow = below - 1;
    } catch (e) {
      this.rt.logger.warn(`partition ${p}: purge of applied events failed: ${(e as Error).message}`);
    }
  }

  private async release(p: number): Promise<void> {
    const owned = this.owned.get(p);
    if (!owned) return;
    this.owned.delete(p);
    await owned.worker.stop(this.options.drainTimeoutMs);
    const checkpoint = owned.worker.checkpoint;
    try {
      await this.rt.control.put(`checkpoint.${p}`, encodeJson({ owner: this.engineId, checkpoint }));
      await this.rt.control.delete(`lease.${p}`, { previousSeq: owned.revision });
    } catch (e) {
      this.rt.logger.warn(`partition ${p}: release failed (${(e as Error).message}); it will be taken over after its lease expires`);
    }
  }
}
