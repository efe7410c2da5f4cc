/**
 * Applies the events of one workflow partition: intake, per-instance queues and the checkpoint.
 * The reader delivers the partition's events in stream order; they are queued per instance, so
 * each instance sees its events in order while different instances progress concurrently; the
 * pending events of one instance go through the pipeline (apply.ts) as one batch. The checkpoint
 * is the highest sequence below which every event is finished; a new owner resumes there and
 * skips what records show as applied.
 *
 * An event that is not addressed to an instance of this partition (a subject another partition
 * owns, a malformed subject) is refused and dead-lettered here, before it can touch a record.
 */
import { NAME_PATTERN, parseEventSubject, partitionOf } from '../protocol/names.js';
import { BlockedError, ConflictError, NotYetError } from '../errors.js';
import { encodeJson } from '../protocol/json.js';
import type { Runtime } from '../store/runtime.js';
import { deadLetter } from '../store/dead-letters.js';
import { rawEvent, type RawEvent } from '../gate/event-gate.js';
import type { InstanceRecord } from '../protocol/record.js';
import type { TaskChange } from '../step/plan.js';
import { carrierFor, type TraceSource } from '../telemetry/telemetry.js';
import { PartitionReader, type ReadEvent } from './partition-reader.js';
import { applyBatch, type ApplyContext } from './apply.js';

export interface WorkerOptions {
  maxPending: number;
  maxBatch: number;
  /** Names this engine's consumers. */
  engineId: string;
}

interface InstanceQueue {
  id: string;
  events: RawEvent[];
  running: boolean;
  /** Set when the instance cannot be processed: its events stay unfinished, in order. */
  blocked?: string;
  /**
   * Tasks of this instance running in this process whose outcome is not written yet and that are
   * not in the tasks stream either: while there are any, the instance's applied events stay
   * unfinished (`held`), so that a crash leads to their redelivery and the repair of the last
   * write publishes the pending tasks.
   */
  holding: Set<string>;
  held: number[];
  /**
   * Applied batches whose writes' history the stream has not stored yet: their events are held
   * too (not finished), so that a crash leads to their redelivery and a repair that publishes it.
   * `after` may be replaced by a later promise while it is waited for (see `hold`).
   */
  waits: Array<{ seqs: number[]; after: Promise<void> }>;
}

const RETRY_MIN_MS = 50;
const EMPTY = new Uint8Array(0);
const RETRY_MAX_MS = 2_000;
/** A step failing the same way again is said again (at warn) only this long after it was last said. */
const RETRY_SAY_AGAIN_MS = 60_000;
/** How long a stopping worker waits for the history of its last writes (see `stop`). */
const HISTORY_DRAIN_MS = 1_000;

export class PartitionWorker {
  private readonly reader: PartitionReader;
  private readonly queues = new Map<string, InstanceQueue>();
  private readonly order: number[] = [];
  private head = 0;
  private readonly done = new Set<number>();
  private pendingCount = 0;
  private checkpointSeq: number;
  private stopping = false;
  private aborted = false;
  /** Aborted with {@link aborted}: another engine owns the partition now, or soon will. */
  private readonly owner = new AbortController();
  private idleWaiters: Array<() => void> = [];
  private readonly reported = new Set<string>();
  private readonly parked = new Set<string>();
  private readonly label: string;

  private readonly ctx: ApplyContext;

  constructor(
    private readonly rt: Runtime,
    ctx: ApplyContext,
    readonly workflow: string,
    readonly partition: number,
    startAfterSeq: number,
    private readonly options: WorkerOptions,
  ) {
    this.checkpointSeq = startAfterSeq;
    this.ctx = { ...ctx, local: this, owned: this.owner.signal };
    this.label = `workflow '${workflow}' partition ${partition}`;
    this.reader = new PartitionReader(rt, {
      stream: ctx.stream,
      label: this.label,
      batch: Math.min(1_024, options.maxPending),
      consumerPrefix: `r_${options.engineId}_${partition}`,
      onEvent: (e) => this.dispatch(e),
      onLost: (from, to) => {
        rt.telemetry.rejected.add(to - from + 1, { 'jetstate.workflow': workflow, 'jetstate.reason': 'lost' });
        // Nothing to wait for in the gap: it counts as finished (at once when nothing before it waits).
        if (this.head === this.order.length) {
          this.checkpointSeq = Math.max(this.checkpointSeq, to);
          return;
        }
        for (let s = from; s <= to; s++) {
          this.order.push(s);
          this.done.add(s);
        }
        this.finish([]);
      },
    });
  }

  /** Every event of this partition at or below this sequence is finished. */
  get checkpoint(): number {
    return this.checkpointSeq;
  }

  /** Instances whose events wait because their record cannot be processed. */
  blockedInstances(): Array<{ key: string; reason: string }> {
    return [...this.queues].filter(([, q]) => q.blocked).map(([key, q]) => ({ key, reason: q.blocked! }));
  }

  async start(): Promise<void> {
    // Instances an engine reported parked: their notes go once they are applied here.
    void this.loadParked();
    await this.reader.start(this.checkpointSeq + 1);
  }

  private async loadParked(): Promise<void> {
    try {
      for await (const key of await this.rt.control.keys(`parked.${this.workflow}.>`)) {
        const id = key.slice(`parked.${this.workflow}.`.length);
        if (partitionOf(this.workflow, id, this.rt.partitions) === this.partition) this.parked.add(this.rt.names.instanceKey(this.workflow, id));
      }
    } catch {
      // Best effort: a note left behind says too much, never too little.
    }
  }

  /** Re-places the reader's consumer on the stream leader when the leader moved (every lease round). */
  checkPlacement(): Promise<void> {
    return this.reader.checkPlacement();
  }

  /**
   * Stops intake and waits for in-flight events up to `drainTimeoutMs`. With `abort`, in-flight
   * work stops at its next step (the lease was lost: another engine owns the partition now).
   */
  async stop(drainTimeoutMs: number, abort = false): Promise<void> {
    this.stopping = true;
    if (abort) this.abort();
    await this.reader.stop();
    if (abort) return;
    if (this.inFlight() > 0)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.abort();
          resolve();
        }, drainTimeoutMs);
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    // The history of the last writes goes now, and is waited for briefly, so the checkpoint left
    // behind passes their events. What the stream has not stored by then (it may be electing a
    // leader) stays unfinished: the next owner reads those events again and its repair publishes
    // it, rather than the partition waiting here.
    for (const key of this.queues.keys()) this.ctx.committer.publishNow(key);
    const until = performance.now() + Math.min(drainTimeoutMs, HISTORY_DRAIN_MS);
    while (!this.aborted && this.storing() > 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 10));
  }

  /** In-flight work stops at its next step, and deliveries waiting for their targets stop trying. */
  private abort(): void {
    this.aborted = true;
    this.owner.abort();
  }

  private storing(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.waits.length;
    return n;
  }

  private inFlight(): number {
    let n = 0;
    for (const q of this.queues.values()) if (!q.blocked) n += q.events.length + (q.running ? 1 : 0) + q.holding.size;
    return n;
  }

  private dispatch(m: ReadEvent): void {
    if (this.stopping) return;
    const seq = m.seq;
    this.order.push(seq);
    const target = parseEventSubject(m.subject);
    if (
      !target ||
      target.workflow !== this.workflow ||
      target.partition !== this.partition ||
      !NAME_PATTERN.test(target.id) ||
      partitionOf(target.workflow, target.id, this.rt.partitions) !== this.partition
    ) {
      const reason = target
        ? `[misrouted] event on '${m.subject}' is for partition ${target.partition}, but instance '${target.id}' of workflow '${target.workflow}' belongs to partition ${NAME_PATTERN.test(target.id) ? partitionOf(target.workflow, target.id, this.rt.partitions) : '(none: invalid id)'}`
        : `[misrouted] event on '${m.subject}' is not addressed to an instance`;
      void this.refuse(m, target?.workflow ?? this.workflow, target?.id ?? '_', reason);
      return;
    }
    const key = this.rt.names.instanceKey(target.workflow, target.id);
    let q = this.queues.get(key);
    if (!q) this.queues.set(key, (q = { id: target.id, events: [], running: false, holding: new Set(), held: [], waits: [] }));
    q.events.push(rawEvent(seq, m.subject, m.data, m.timeMs, m.headers));
    // Events of a blocked instance wait in memory without holding up the partition's intake.
    if (!q.blocked) this.pendingCount++;
    if (this.pendingCount >= this.options.maxPending) this.reader.pause();
    if (!q.running && !q.blocked) void this.drainQueue(key, q);
  }

  /** Dead-letters an event that must not reach any instance, then finishes it. */
  private async refuse(m: ReadEvent, workflow: string, id: string, reason: string): Promise<void> {
    this.rt.logger.warn(`${this.label}: event ${m.seq} refused: ${reason}`);
    this.rt.telemetry.rejected.add(1, { 'jetstate.workflow': this.workflow, 'jetstate.reason': 'misrouted' });
    let delay = RETRY_MIN_MS;
    while (!this.aborted) {
      try {
        await deadLetter(this.rt, { workflow, id, stream: this.ctx.stream, subject: m.subject, seq: m.seq, data: m.data, reason });
        this.finish([m.seq]);
        return;
      } catch (e) {
        this.rt.logger.warn(`${this.label}: cannot dead-letter event ${m.seq} (${(e as Error).message}); retrying`);
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    }
  }

  private async drainQueue(key: string, q: InstanceQueue): Promise<void> {
    q.running = true;
    try {
      while (q.events.length > 0 && !q.blocked && !this.aborted) {
        const batch = q.events.slice(0, this.options.maxBatch);
        // An outcome's write records the events judged before it as judged: one refused by the
        // state (a delete of the running instance) is not judged again, by a new owner reading the
        // partition from its checkpoint, against the state the outcome made.
        if (batch.some((e) => e.local)) {
          const judged = Math.max(0, ...q.held, ...q.waits.flatMap((w) => w.seqs));
          for (const e of batch) if (e.local) e.local.after = judged;
        }
        const finished = await this.processWithRetry(key, q, batch);
        if (!finished) break;
        q.events.splice(0, batch.length);
        const read = batch.filter((e) => !e.local);
        this.pendingCount -= read.length;
        // An outcome written: its task holds nothing any more.
        for (const e of batch) if (e.local) q.holding.delete(e.local.key);
        const seqs = read.map((e) => e.seq);
        this.hold(key, q, seqs, batch.length > read.length);
      }
    } finally {
      q.running = false;
      this.forgetIfIdle(key, q);
      this.wakeUp();
    }
  }

  /**
   * Holds applied events until the history of the instance's writes so far is stored, then
   * releases them. A batch of in-process task outcomes (`outcomes`) has no sequence of its own,
   * and the event that started such a task is the one a crash must lead back to: the events held
   * for the task, and those still waiting for earlier history, wait for this write's history too.
   */
  private hold(key: string, q: InstanceQueue, seqs: number[], outcomes: boolean): void {
    const stored = this.ctx.committer.stored(key);
    if (!stored) {
      q.held.push(...seqs);
      this.release(q);
      return;
    }
    if (outcomes) for (const w of q.waits) w.after = w.after.then(() => stored);
    const wait = { seqs: [...q.held.splice(0), ...seqs], after: stored };
    q.waits.push(wait);
    const settle = (p: Promise<void>): Promise<void> =>
      p.then(() => {
        if (wait.after !== p) return settle(wait.after);
        q.held.push(...wait.seqs);
        this.release(q);
      });
    void settle(stored)
      .catch(() =>
        // The engine closed first: the events stay unfinished, and the next owner's repair publishes the history.
        this.rt.logger.debug(
          `${this.label}: events ${wait.seqs.join(', ')} of '${key}' left unfinished: their history was not stored before the engine closed`,
        ),
      )
      .finally(() => {
        q.waits.splice(q.waits.indexOf(wait), 1);
        this.forgetIfIdle(key, q);
        this.wakeUp();
      });
  }

  /** Finishes what an instance held once none of its tasks runs here unwritten. */
  private release(q: InstanceQueue): void {
    if (q.holding.size > 0 || q.held.length === 0) return;
    const held = q.held;
    q.held = [];
    this.finish(held);
  }

  private forgetIfIdle(key: string, q: InstanceQueue): void {
    if (q.events.length === 0 && !q.blocked && !q.running && q.holding.size === 0 && q.held.length === 0 && q.waits.length === 0) this.queues.delete(key);
  }

  /** Which of the tasks a write starts this engine runs in process (see TaskService.runLocally). */
  take(record: InstanceRecord, tasks: readonly TaskChange[]): TaskChange[] {
    const service = this.ctx.tasks;
    if (!service || this.stopping) return [];
    return tasks.filter((t) => service.canRunLocally(record.workflow, record.version, t.src));
  }

  /** Starts tasks in process after the write that started them; their outcomes come back as local events. */
  startLocal(key: string, record: InstanceRecord, tasks: readonly TaskChange[], trace: TraceSource): void {
    const service = this.ctx.tasks;
    const q = this.queues.get(key);
    if (!service || !q) return;
    for (const t of tasks) {
      const held = `${t.invokeId}.${t.token}`;
      q.holding.add(held);
      service.runLocally(record, t, carrierFor(trace, t.token), {
        onOutcome: (event, tr) => {
          if (this.stopping) {
            // This engine no longer applies the instance's events: the outcome goes to the inbox.
            // Delivered, it holds the drain no longer; undelivered, the drain times out and the
            // next owner runs the task again.
            void service
              .deliverOutcome({ workflow: record.workflow, id: record.id, invokeId: t.invokeId, token: t.token }, event, tr)
              .then(() => {
                q.holding.delete(held);
                // Its outcome is stored: the events held for it are finished, so that the next
                // owner does not repair the write that started the task and publish it again.
                this.release(q);
                this.wakeUp();
              })
              .catch((e: Error) => this.rt.logger.warn(`${this.label}: task outcome of '${key}' not delivered (${e.message}); the task runs again`));
            return;
          }
          const queue = this.queues.get(key) ?? q;
          if (!this.queues.has(key)) this.queues.set(key, queue);
          queue.events.push({
            seq: 0,
            subject: '',
            data: EMPTY,
            timeMs: Date.now(),
            trace: tr,
            msgId: undefined,
            signature: undefined,
            signedAtMs: undefined,
            token: undefined,
            replyTo: undefined,
            local: { event, key: held },
          });
          if (!queue.running && !queue.blocked) void this.drainQueue(key, queue);
        },
        onDurable: (published) => {
          void published.then(
            () => {
              q.holding.delete(held);
              this.release(q);
              this.forgetIfIdle(key, q);
              this.wakeUp();
            },
            (e: Error) => this.rt.logger.warn(`${this.label}: task of '${key}' not published (${e.message}); its event stays unfinished`),
          );
        },
      });
    }
  }

  /** Returns false when the batch was left unfinished (blocked instance or abort). */
  private async processWithRetry(key: string, q: InstanceQueue, batch: RawEvent[]): Promise<boolean> {
    let delay = RETRY_MIN_MS;
    // The failure last said, and when: the same one is said again only after a while.
    let said: { text: string; atMs: number } | undefined;
    for (let attempt = 0; ; attempt++) {
      if (this.aborted) return false;
      if (attempt > 0) this.rt.telemetry.redeliveries.add(batch.length, { 'jetstate.reason': 'retry' });
      try {
        const outcome = await applyBatch(this.ctx, key, this.workflow, q.id, batch, attempt).catch((e: unknown) => {
          // An event this engine cannot open yet (a key it lacks): the instance waits, like a blocked one.
          if (e instanceof BlockedError) return e.message;
          throw e;
        });
        if (outcome === true) {
          if (this.parked.delete(key)) void this.rt.control.delete(this.rt.names.parkedKey(this.workflow, q.id)).catch(() => {});
          return true;
        }
        q.blocked = outcome;
        this.parked.add(key);
        // For get(), list and the web view: why this instance does not move (best effort).
        void this.rt.control
          .put(this.rt.names.parkedKey(this.workflow, q.id), encodeJson({ reason: outcome, atMs: Date.now(), engine: this.options.engineId }))
          .catch(() => {});
        this.pendingCount -= q.events.length;
        if (!this.reported.has(key)) {
          this.reported.add(key);
          this.rt.logger.error(outcome, { workflow: this.workflow, partition: this.partition });
        }
        return false;
      } catch (e) {
        if (e instanceof ConflictError) {
          this.rt.telemetry.conflicts.add(1);
          continue; // reload and recompute at once
        }
        const text = `instance '${key}': ${(e as Error).message}; retrying`;
        const nowMs = performance.now();
        const again = said?.text === text;
        const quiet = e instanceof NotYetError || (again && nowMs - said!.atMs < RETRY_SAY_AGAIN_MS);
        if (!quiet) said = { text, atMs: nowMs };
        const log = quiet ? this.rt.logger.debug : this.rt.logger.warn;
        log.call(this.rt.logger, again && !quiet ? `${text} (still, after ${attempt + 1} attempts)` : text, { partition: this.partition });
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    }
  }

  private finish(seqs: number[]): void {
    for (const s of seqs) this.done.add(s);
    while (this.head < this.order.length && this.done.has(this.order[this.head]!)) {
      const s = this.order[this.head]!;
      this.done.delete(s);
      this.checkpointSeq = Math.max(this.checkpointSeq, s);
      this.head++;
    }
    if (this.head > 4_096) {
      this.order.splice(0, this.head);
      this.head = 0;
    }
  }

  private wakeUp(): void {
    if (this.pendingCount < this.options.maxPending) this.reader.resume();
    if (this.stopping && this.inFlight() === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}
