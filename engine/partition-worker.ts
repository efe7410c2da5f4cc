/**
 * Applies the events of one partition. An ordered consumer reads the partition from its
 * checkpoint in stream order; events are queued per instance, so each instance sees its events
 * in order while different instances progress concurrently. The pending events of one instance
 * are applied in one compare-and-set write. The checkpoint is the highest sequence below which
 * every event is finished; a new owner resumes there and skips what records show as applied.
 */
import { DeliverPolicy, type Consumer, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import { validateEvent } from './client.js';
import { publishCompletion, publishHistory } from './history.js';
import { parseEventSubject } from './names.js';
import { HistoryKind, decodeJson, type HistoryEntry } from './record.js';
import type { Runtime } from './runtime.js';
import { applyEvents, isKick, isTaskResult, isTimerFire, type Effect, type OutboxEntry, type StepEvent } from './step.js';
import { publishCancels, publishTasks, tasksStartedBy } from './tasks.js';
import { isChildResult, isStop } from './child.js';
import { notifyParent } from './start.js';
import { publishTimers } from './timers.js';
import { ConflictError, type InstanceStore, type LoadedInstance } from './store.js';
import { carrierFromHeaders, type TraceCarrier } from './telemetry.js';
import { TransitionSpans } from './transition-spans.js';

export interface EffectExecutor {
  /** Runs after the state that produced the effects is durable. */
  run(instance: LoadedInstance, effects: Effect[]): Promise<void>;
  /** Runs a persisted outbox again, after a crash may have cut its first run short. */
  rerun(instance: LoadedInstance, outbox: readonly OutboxEntry[]): Promise<void>;
}

export interface WorkerOptions {
  maxPending: number;
  maxBatch: number;
  afterStateWrite?: ((key: string, revision: number) => void) | undefined;
  beforeStateWrite?: ((key: string, revision: number) => void) | undefined;
}

interface Pending {
  seq: number;
  data: Uint8Array;
  /** When the stream accepted the event. */
  timeMs: number;
  /** The sender's trace context, from the event's headers. */
  trace: TraceCarrier | undefined;
}

interface InstanceQueue {
  events: Pending[];
  running: boolean;
  /** Set when the instance cannot be processed: its events stay unfinished, in order. */
  blocked?: string;
}

/** An expected, short wait (a start's kick that arrived before its record), logged at debug. */
class NotYetError extends Error {}

const RETRY_MIN_MS = 50;
/** How long a start's kick waits for the instance record before it is dropped. */
const KICK_WAIT_MS = 5_000;
const RETRY_MAX_MS = 2_000;

export class PartitionWorker {
  private messages: ConsumerMessages | undefined;
  private consumer: Consumer | undefined;
  private readonly queues = new Map<string, InstanceQueue>();
  private readonly order: number[] = [];
  private head = 0;
  private readonly done = new Set<number>();
  private pendingCount = 0;
  private lastRead: number;
  private checkpointSeq: number;
  private stopping = false;
  private aborted = false;
  private idleWaiters: Array<() => void> = [];
  private roomWaiters: Array<() => void> = [];
  private loop: Promise<void> | undefined;
  private readonly reported = new Set<string>();
  private readonly missingSince = new Map<string, number>();

  constructor(
    private readonly rt: Runtime,
    private readonly store: InstanceStore,
    private readonly executor: EffectExecutor,
    readonly partition: number,
    startAfterSeq: number,
    private readonly options: WorkerOptions,
  ) {
    this.checkpointSeq = startAfterSeq;
    this.lastRead = startAfterSeq;
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
    this.messages = await this.consume(this.checkpointSeq + 1);
    this.loop = this.intake(this.messages);
  }

  /**
   * Raises the checkpoint of an idle partition to `streamLastSeq` (read by the caller before this
   * call): when nothing is in flight and the consumer has neither undelivered events nor
   * delivered ones we have not read, no event of this partition at or below it is unfinished.
   * Without this, a quiet partition's checkpoint would hold back the stream-wide purge.
   */
  async liftIfIdle(streamLastSeq: number): Promise<void> {
    const idle = (): boolean => !this.stopping && this.inFlight() === 0 && this.checkpointSeq === this.lastRead;
    if (!this.consumer || streamLastSeq <= this.checkpointSeq || !idle()) return;
    const info = await this.consumer.info(false);
    if (info.num_pending === 0 && info.delivered.stream_seq <= this.lastRead && idle()) this.checkpointSeq = streamLastSeq;
  }

  private async consume(fromSeq: number): Promise<ConsumerMessages> {
    const consumer = (this.consumer = await this.rt.js.consumers.get(this.rt.names.eventsStream, {
      filter_subjects: this.rt.names.partitionFilter(this.partition),
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: fromSeq,
    }));
    // Short pull expiry: heartbeats every second, so a lost consumer is noticed and recreated quickly.
    return consumer.consume({ max_messages: Math.min(1_024, this.options.maxPending), expires: 2_000 });
  }

  /**
   * Stops intake and waits for in-flight events up to `drainTimeoutMs`. With `abort`, in-flight
   * work stops at its next step (the lease was lost: another engine owns the partition now).
   */
  async stop(drainTimeoutMs: number, abort = false): Promise<void> {
    this.stopping = true;
    if (abort) this.aborted = true;
    this.messages?.stop();
    // Intake may be parked waiting for room; let it see that it is stopping.
    const parked = this.roomWaiters;
    this.roomWaiters = [];
    for (const w of parked) w();
    await this.loop?.catch(() => {});
    if (abort || this.inFlight() === 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.aborted = true;
        resolve();
      }, drainTimeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private inFlight(): number {
    let n = 0;
    for (const q of this.queues.values()) if (!q.blocked) n += q.events.length + (q.running ? 1 : 0);
    return n;
  }

  /** Reads the partition in order; if the subscription ends on its own, resumes after the last event read. */
  private async intake(first: ConsumerMessages): Promise<void> {
    let messages = first;
    let delay = RETRY_MIN_MS;
    for (;;) {
      try {
        for await (const m of messages) {
          if (this.stopping) return;
          this.dispatch(m);
          delay = RETRY_MIN_MS;
          if (this.pendingCount >= this.options.maxPending) {
            await new Promise<void>((r) => this.roomWaiters.push(r));
            if (this.stopping) return;
          }
        }
      } catch (e) {
        this.rt.logger.warn(`partition ${this.partition}: reading events failed (${(e as Error).message}); resuming`);
      }
      if (this.stopping) return;
      for (;;) {
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, RETRY_MAX_MS);
        if (this.stopping) return;
        try {
          messages = this.messages = await this.consume(this.lastRead + 1);
          break;
        } catch (e) {
          this.rt.logger.warn(`partition ${this.partition}: cannot resume reading events (${(e as Error).message}); retrying`);
        }
      }
    }
  }

  private dispatch(m: JsMsg): void {
    const seq = m.seq;
    if (seq <= this.lastRead) return; // already read before the subscription was recreated
    this.lastRead = seq;
    this.order.push(seq);
    const target = parseEventSubject(m.subject);
    if (!target) {
      this.rt.logger.warn(`event ${seq} on '${m.subject}' is not addressed to an instance; skipped`);
      this.finish([seq]);
      return;
    }
    const key = this.rt.names.instanceKey(target.workflow, target.id);
    let q = this.queues.get(key);
    if (!q) this.queues.set(key, (q = { events: [], running: false }));
    q.events.push({ seq, data: m.data, timeMs: Number(m.timestampNanos / 1_000_000n), trace: carrierFromHeaders(m.headers) });
    // Events of a blocked instance wait in memory without holding up the partition's intake.
    if (!q.blocked) this.pendingCount++;
    if (!q.running && !q.blocked) void this.drainQueue(key, q);
  }

  private async drainQueue(key: string, q: InstanceQueue): Promise<void> {
    q.running = true;
    try {
      while (q.events.length > 0 && !q.blocked && !this.aborted) {
        const batch = q.events.slice(0, this.options.maxBatch);
        const finished = await this.processWithRetry(key, batch, q);
        if (!finished) break;
        q.events.splice(0, batch.length);
        this.pendingCount -= batch.length;
        this.finish(batch.map((e) => e.seq));
      }
    } finally {
      q.running = false;
      if (q.events.length === 0 && !q.blocked) this.queues.delete(key);
      this.wakeUp();
    }
  }

  /** Returns false when the batch was left unfinished (blocked instance or abort). */
  private async processWithRetry(key: string, batch: Pending[], q: InstanceQueue): Promise<boolean> {
    let delay = RETRY_MIN_MS;
    for (let attempt = 0; ; attempt++) {
      if (this.aborted) return false;
      if (attempt > 0) this.rt.telemetry.redeliveries.add(batch.length, { 'jetstate.reason': 'retry' });
      try {
        const outcome = await this.process(key, batch, attempt);
        if (outcome === true) return true;
        q.blocked = outcome;
        this.pendingCount -= q.events.length;
        if (!this.reported.has(key)) {
          this.reported.add(key);
          this.rt.logger.error(outcome, { partition: this.partition });
        }
        return false;
      } catch (e) {
        if (e instanceof ConflictError) {
          this.rt.telemetry.conflicts.add(1);
          continue; // reload and recompute at once
        }
        const log = e instanceof NotYetError ? this.rt.logger.debug : this.rt.logger.warn;
        log.call(this.rt.logger, `instance '${key}': ${(e as Error).message}; retrying`, { partition: this.partition });
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    }
  }

  /** Applies one batch; true when finished, or the reason the instance is blocked. */
  private async process(key: string, batch: Pending[], attempt: number): Promise<true | string> {
    const startedAt = performance.timeOrigin + performance.now();
    const tel = this.rt.telemetry;
    const loaded = await this.store.load(key);
    if ('problem' in loaded) {
      if (loaded.problem !== 'missing') return loaded.message;
      // start() sends its kick just before creating the record: give the create a moment.
      if (batch.every((e) => isKick(safeDecode(e.data)))) {
        const since = this.missingSince.get(key) ?? Date.now();
        this.missingSince.set(key, since);
        if (Date.now() - since < KICK_WAIT_MS) throw new NotYetError('waiting for the started instance to be written');
        this.missingSince.delete(key);
        return true; // its start never completed
      }
      const [workflow, id] = key.split('.') as [string, string];
      const entries: HistoryEntry[] = batch.map((e) => ({
        kind: HistoryKind.Rejected, revision: 0, seq: e.seq, event: readable(e.data), from: null, to: null,
        status: 'failed', timeMs: e.timeMs, reason: 'instance does not exist',
      }));
      this.rt.logger.warn(`events for missing workflow '${workflow}' instance '${id}' were rejected`, { seqs: batch.map((e) => e.seq) });
      tel.rejected.add(entries.length, { 'jetstate.workflow': workflow, 'jetstate.reason': 'missing_instance' });
      await publishHistory(this.rt, workflow, id, entries);
      return true;
    }
    this.missingSince.delete(key);
    const { record } = loaded;
    // The write of the last applied event may have been cut off before its history was published
    // and its actions had run: finish that first.
    if (batch.some((e) => e.seq === record.lastSeq)) {
      await publishHistory(this.rt, record.workflow, record.id, record.lastHistory);
      await publishTasks(this.rt, record.workflow, record.id, tasksStartedBy(record), record.trace);
      await this.executor.rerun(loaded, record.outbox);
      await notifyParent(this.rt, record);
    }
    const events: StepEvent[] = [];
    const traceBySeq = new Map<number, TraceCarrier | undefined>();
    let reread = 0;
    for (const e of batch) {
      if (e.seq <= record.lastSeq) {
        reread++;
        continue;
      }
      traceBySeq.set(e.seq, e.trace);
      const raw = safeDecode(e.data);
      if (isKick(raw)) {
        // The start's actions; a later write has run its own since.
        if (record.revision === 1) await this.executor.rerun(loaded, record.outbox);
        continue;
      }
      if (raw === UNREADABLE) {
        events.push({ seq: e.seq, timeMs: e.timeMs, event: { unreadable: `${e.data.length} bytes` }, rejected: 'the event is not UTF-8 JSON' });
        continue;
      }
      // The engine's own events; each is checked against the record by the step.
      if (isTimerFire(raw) || isTaskResult(raw) || isChildResult(raw) || isStop(raw)) {
        events.push({ seq: e.seq, timeMs: e.timeMs, event: raw as { type: string } });
        continue;
      }
      try {
        events.push({ seq: e.seq, timeMs: e.timeMs, event: validateEvent(loaded.def, record.id, raw) });
      } catch (err) {
        events.push({ seq: e.seq, timeMs: e.timeMs, event: raw, rejected: (err as Error).message.replace(/; nothing was sent/g, '') });
      }
    }
    if (reread > 0) tel.redeliveries.add(reread, { 'jetstate.reason': 'applied' });
    if (events.length === 0) return true;
    const result = applyEvents(loaded.runner, record, loaded.snapshot, events, Date.now());
    const spans = new TransitionSpans(tel, record, result.entries, traceBySeq, attempt, this.partition, startedAt);
    try {
      let written = loaded;
      if (result.changed) {
        const last = spans.last();
        if (last) result.record.trace = last;
        else delete result.record.trace;
        // Timers are inert until due and checked against the record when they fire, so they are
        // published before the write: a crash between the two cannot lose one.
        if (result.timers.length > 0) await publishTimers(this.rt, record.workflow, record.id, result.timers, spans.byRevision);
        this.options.beforeStateWrite?.(key, result.record.revision);
        written = await this.store.write(key, loaded, result.record, result.snapshot);
        // Tasks after it, so a runner finds them pending at once; the redelivery path re-publishes.
        if (result.tasks.length > 0) await publishTasks(this.rt, record.workflow, record.id, result.tasks, spans.byRevision);
        if (result.cancelledTasks.length > 0) publishCancels(this.rt, record.workflow, record.id, result.cancelledTasks);
        if (record.status !== result.record.status) {
          tel.instances.add(-1, { 'jetstate.workflow': record.workflow, 'jetstate.status': record.status });
          tel.instances.add(1, { 'jetstate.workflow': record.workflow, 'jetstate.status': result.record.status });
        }
        if (record.status === 'running' && result.record.status !== 'running') {
          publishCompletion(this.rt, result.record);
          await notifyParent(this.rt, result.record);
        }
        this.options.afterStateWrite?.(key, result.record.revision);
      }
      await publishHistory(this.rt, record.workflow, record.id, result.entries);
      spans.end();
      if (result.effects.length > 0) await this.executor.run(written, result.effects);
      return true;
    } catch (e) {
      spans.fail(e);
      throw e;
    }
  }

  private finish(seqs: number[]): void {
    for (const s of seqs) this.done.add(s);
    while (this.head < this.order.length && this.done.has(this.order[this.head]!)) {
      const s = this.order[this.head]!;
      this.done.delete(s);
      this.checkpointSeq = s;
      this.head++;
    }
    if (this.head > 4_096) {
      this.order.splice(0, this.head);
      this.head = 0;
    }
  }

  private wakeUp(): void {
    if (this.pendingCount < this.options.maxPending) {
      const waiters = this.roomWaiters;
      this.roomWaiters = [];
      for (const w of waiters) w();
    }
    if (this.stopping && this.inFlight() === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}

const UNREADABLE = Symbol('unreadable');

function safeDecode(data: Uint8Array): unknown {
  try {
    return decodeJson(data);
  } catch {
    return UNREADABLE;
  }
}

function readable(data: Uint8Array): unknown {
  const v = safeDecode(data);
  return v === UNREADABLE ? { unreadable: `${data.length} bytes` } : v;
}
