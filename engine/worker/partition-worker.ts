/**
 * Applies the events of one partition. An ordered consumer reads the partition from its
 * checkpoint in stream order; events are queued per instance, so each instance sees its events
 * in order while different instances progress concurrently. The pending events of one instance
 * are applied in one compare-and-set write. The checkpoint is the highest sequence below which
 * every event is finished; a new owner resumes there and skips what records show as applied.
 */
import { DeliverPolicy, type Consumer, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import { validateEvent } from '../client.js';
import { publishCompletion, publishHistory } from '../store/history.js';
import { parseEventSubject } from '../protocol/names.js';
import { HistoryKind, decodeJson, type HistoryEntry } from '../protocol/record.js';
import type { Runtime } from '../store/runtime.js';
import { applyEvents, isKick, isTaskResult, isTimerFire, type Effect, type OutboxEntry, type StepEvent } from '../step/step.js';
import { publishCancels, publishTasks, tasksStartedBy } from '../effects/tasks.js';
import { isChildResult, isStop } from '../define/child.js';
import { notifyParent } from '../effects/start.js';
import { publishTimers } from '../effects/timers.js';
import { ConflictError, type InstanceStore, type LoadedInstance } from '../store/records.js';
import { carrierFromHeaders, type TraceCarrier } from '../telemetry/telemetry.js';
import { TransitionSpans } from '../telemetry/transition-spans.js';
import { TOKEN_HEADER } from '../client.js';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { SIGNATURE_HEADER } from '../security/signer.js';
import { admit, limitsOf, summarize, type IdentitySummary } from '../gate/admission.js';

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
  subject: string;
  /** An engine's signature (its own events), and a sender's token. */
  sig: string | undefined;
  token: string | undefined;
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
/** Attempts to verify a sender while its identity provider cannot be reached, before the event is rejected. */
const IDENTITY_RETRIES = 8;
const ENGINE_IDENTITY: IdentitySummary = Object.freeze({ method: 'engine', subject: 'jetstate-engine', issuer: 'jetstate', roles: [] as string[] }) as IdentitySummary;

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
  private readonly rates = new Map<string, { tokens: number; atMs: number }>();
  private readonly rateDecisions = new Map<number, boolean>();

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
    const h = m.headers;
    q.events.push({
      seq,
      data: m.data,
      timeMs: Number(m.timestampNanos / 1_000_000n),
      trace: carrierFromHeaders(h),
      subject: m.subject,
      sig: h?.get(SIGNATURE_HEADER) || undefined,
      token: h?.get(TOKEN_HEADER) || undefined,
    });
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
      // start() publishes its kick and its first timers just before creating the record (a short
      // timer can fire before the create lands): give the create a moment.
      const early = (e: Pending): boolean => {
        const v = safeDecode(e.data);
        return isKick(v) || isTimerFire(v);
      };
      if (batch.some(early)) {
        const since = this.missingSince.get(key) ?? Date.now();
        this.missingSince.set(key, since);
        if (Date.now() - since < KICK_WAIT_MS) throw new NotYetError('waiting for the started instance to be written');
        this.missingSince.delete(key);
        if (batch.every(early)) return true; // its start never completed
      }
      const [workflow, id] = key.split('.') as [string, string];
      const entries: HistoryEntry[] = batch.map((e) => ({
        kind: HistoryKind.Rejected, revision: 0, seq: e.seq, event: boundedEvent(readable(e.data), e.data.length), from: null, to: null,
        status: 'failed', timeMs: e.timeMs, reason: 'instance does not exist',
      }));
      this.rt.logger.warn(`events for missing workflow '${workflow}' instance '${id}' were rejected`, { seqs: batch.map((e) => e.seq) });
      tel.rejected.add(entries.length, { 'jetstate.workflow': workflow, 'jetstate.reason': 'missing_instance' });
      await publishHistory(this.rt, workflow, id, entries);
      await this.deadLetter(workflow, id, batch, entries);
      return true;
    }
    this.missingSince.delete(key);
    const { record } = loaded;
    // The write of the last applied event may have been cut off before its history was published
    // and its actions had run: finish that first.
    if (batch.some((e) => e.seq === record.lastSeq)) {
      await publishHistory(this.rt, record.workflow, record.id, record.lastHistory);
      // Rejections before the last applied event are skipped below as applied: copy them now.
      await this.deadLetter(record.workflow, record.id, batch, record.lastHistory);
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
      const admitted = await this.admitEvent(loaded, e, attempt);
      if (admitted === 'kick') {
        // The start's actions; a later write has run its own since.
        if (record.revision === 1) await this.executor.rerun(loaded, record.outbox);
        continue;
      }
      events.push(admitted);
    }
    if (reread > 0) tel.redeliveries.add(reread, { 'jetstate.reason': 'applied' });
    if (events.length === 0) return true;
    const now = Date.now();
    let result = applyEvents(loaded.runner, record, loaded.snapshot, events, now);
    let stored = result.changed ? this.store.encodeSealed(result.record) : undefined;
    const { maxSnapshotBytes } = limitsOf(this.rt, loaded.def);
    while (result.changed && stored!.bytes.length > maxSnapshotBytes) {
      // Reject the first event whose application makes the record too large, and apply the rest.
      const size = stored!.bytes.length;
      let j = events.findIndex((ev, i) => {
        if (ev.rejected !== undefined) return false;
        const partial = applyEvents(loaded.runner, record, loaded.snapshot, events.slice(0, i + 1), now);
        return partial.changed && this.store.encode(partial.record).length > maxSnapshotBytes;
      });
      if (j < 0) j = events.findLastIndex((ev) => ev.rejected === undefined);
      if (j < 0) break;
      const over = events[j]!;
      events[j] = { seq: over.seq, timeMs: over.timeMs, event: over.event, identity: over.identity, rejected: `[limit.snapshot_size] applying it would make the record about ${size} bytes, over the limit of ${maxSnapshotBytes}; keep large data outside the context` };
      result = applyEvents(loaded.runner, record, loaded.snapshot, events, now);
      stored = result.changed ? this.store.encodeSealed(result.record) : undefined;
    }
    const traced = tel.tracingActive() || batch.some(hasTrace);
    const spans = new TransitionSpans(tel, record, result.entries, traceBySeq, attempt, this.partition, startedAt, traced);
    let historyEntries = result.entries;
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
        // The trace context is set after the size check's encoding: encode again only when it is there.
        if (last || record.trace) stored = this.store.encodeSealed(result.record);
        // The history below publishes the entries this write sealed (sealing them again costs as much).
        historyEntries = stored!.sealed.lastHistory;
        written = await this.store.write(key, loaded, result.record, result.snapshot, stored!.bytes);
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
      await publishHistory(this.rt, record.workflow, record.id, historyEntries);
      if (result.entries.some(isRejected)) await this.deadLetter(record.workflow, record.id, batch, result.entries);
      spans.end();
      if (result.effects.length > 0) await this.executor.run(written, result.effects);
      return true;
    } catch (e) {
      spans.fail(e);
      throw e;
    }
  }

  /**
   * What an event read from the stream amounts to: an event for the step (maybe rejected, with
   * the reason), or a start's kick. Everything a sender could have put on the stream subjects is
   * checked here, whatever `send()` checked before: size, JSON, engine signatures on the engine's
   * own event types, the schema, the token and the permissions, the rate, and the secrets.
   */
  private async admitEvent(loaded: LoadedInstance, e: Pending, attempt: number): Promise<StepEvent | 'kick'> {
    const { record, def } = loaded;
    const rt = this.rt;
    const at = { seq: e.seq, timeMs: e.timeMs };
    const reject = (event: unknown, reason: string, size = e.data.length): StepEvent => rejection(e, event, reason, size);
    const limits = limitsOf(rt, def);
    if (e.data.length > limits.maxEventBytes) {
      return reject({ oversized: `${e.data.length} bytes` }, `[limit.event_size] the event is ${e.data.length} bytes, over the limit of ${limits.maxEventBytes}`, 0);
    }
    const raw = safeDecode(e.data);
    if (raw === UNREADABLE) return reject({ unreadable: `${e.data.length} bytes` }, 'the event is not UTF-8 JSON', 0);
    const signed = rt.security.signer.verify(e.subject, e.data, e.sig);
    const internal = isKick(raw) || isTimerFire(raw) || isTaskResult(raw) || isChildResult(raw) || isStop(raw);
    if (internal) {
      // Only engines publish these: without a valid signature it is a forgery.
      if (!signed) return reject({ type: (raw as { type: string }).type }, `[forged] an engine event ('${(raw as { type: string }).type}') without a valid engine signature`);
      if (isKick(raw)) return 'kick';
      if (isTaskResult(raw) || isChildResult(raw)) {
        try {
          const opened = { ...raw, output: rt.security.codec.open(def.name, record.id, 'output', (raw as { output?: unknown }).output) };
          return { ...at, event: opened as { type: string } };
        } catch (err) {
          return reject({ type: (raw as { type: string }).type }, `[secrets.unreadable] ${(err as Error).message}`);
        }
      }
      return { ...at, event: raw as { type: string } };
    }
    // Secrets first: the schema checks plain values.
    let opened: unknown;
    try {
      opened = rt.security.codec.open(def.name, record.id, 'event', raw);
    } catch (err) {
      return reject(raw, `[secrets.unreadable] ${(err as Error).message}`);
    }
    let event: { type: string } & Record<string, unknown>;
    try {
      event = validateEvent(def, record.id, opened);
    } catch (err) {
      return reject(raw, (err as Error).message.replace(/; nothing was sent/g, ''));
    }
    let identity: IdentitySummary | undefined;
    if (signed) {
      // Sent by an instance of this namespace (sendTo, sendParent...): trusted as its engine.
      identity = ENGINE_IDENTITY;
    } else {
      const admitted = admit(rt, def, { kind: 'event', type: event.type }, e.token, 'engine', e.timeMs);
      const admission = admitted instanceof Promise ? await admitted : admitted;
      if (!admission.ok) {
        // An identity provider that cannot be reached: retried a few times before the event is rejected.
        if (admission.retryable && attempt < IDENTITY_RETRIES) throw new Error(`verifying the sender of event ${e.seq} failed (${admission.reason}); retrying`);
        return reject(raw, admission.reason);
      }
      if (admission.identity) identity = summarize(admission.identity);
      if (limits.maxEventsPerSecond !== undefined && !this.rateDecision(e.seq, this.rt.names.instanceKey(def.name, record.id), limits.maxEventsPerSecond, e.timeMs)) {
        return reject(raw, `[limit.rate] instance '${record.id}' takes at most ${limits.maxEventsPerSecond} events per second`);
      }
    }
    return { ...at, event, identity };
  }

  /**
   * Copies rejected events, as they came, to the dead-letter stream with the reason, so an
   * operator can see and replay what was refused; the events stream moves on.
   */
  private async deadLetter(workflow: string, id: string, batch: readonly Pending[], entries: readonly HistoryEntry[]): Promise<void> {
    const rejected = entries.filter((x) => x.kind === HistoryKind.Rejected);
    if (rejected.length === 0) return;
    const subject = this.rt.names.deadLetterSubject(workflow, id);
    await Promise.all(
      rejected.map((r) => {
        const e = batch.find((p) => p.seq === r.seq);
        if (!e) return undefined;
        const h = natsHeaders();
        h.set('Jetstate-Reason', (r.reason ?? 'rejected').slice(0, 1_000).replace(/[\r\n]+/g, ' '));
        h.set('Jetstate-Subject', e.subject);
        h.set('Jetstate-Seq', String(e.seq));
        // An event as large as the server takes has no room left for these headers: keep its
        // head and say how long it was, rather than failing (and retrying) for ever.
        const room = (this.rt.nc.info?.max_payload ?? Infinity) - DEAD_LETTER_HEADROOM;
        let data = e.data;
        if (data.length > room) {
          h.set('Jetstate-Truncated', String(data.length));
          data = data.subarray(0, Math.max(0, room));
        }
        return this.rt.js.publish(subject, data, { msgID: `dlq.${e.seq}`, headers: h });
      }),
    );
  }

  /** A token bucket per instance on the stream's acceptance times, so a backlog replays the same. */
  /** Decided once per event: a retried batch (a conflict, a transient error) gets the same answers. */
  private rateDecision(seq: number, key: string, perSecond: number, timeMs: number): boolean {
    let ok = this.rateDecisions.get(seq);
    if (ok === undefined) {
      ok = this.takeRate(key, perSecond, timeMs);
      this.rateDecisions.set(seq, ok);
      if (this.rateDecisions.size > 100_000) this.rateDecisions.delete(this.rateDecisions.keys().next().value!);
    }
    return ok;
  }

  private takeRate(key: string, perSecond: number, timeMs: number): boolean {
    const burst = Math.max(1, perSecond);
    let b = this.rates.get(key);
    if (!b) {
      if (this.rates.size >= 10_000) this.rates.delete(this.rates.keys().next().value!);
      b = { tokens: burst, atMs: timeMs };
    }
    this.rates.delete(key);
    this.rates.set(key, b);
    b.tokens = Math.min(burst, b.tokens + (Math.max(0, timeMs - b.atMs) / 1_000) * perSecond);
    b.atMs = Math.max(b.atMs, timeMs);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
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

/** Bytes kept free under the server's max_payload for a dead-letter copy's headers. */
const DEAD_LETTER_HEADROOM = 4_096;
/**
 * A rejected event is kept in history (and in the record's `lastHistory`) as it came only up to
 * this size; a larger one as a summary. The dead-letter copy keeps it whole. Without the bound, a
 * burst of large invalid events in one batch could make the history message larger than the
 * server takes, and the record too large for the valid events between them.
 */
const REJECTED_EVENT_MAX_BYTES = 1_024;
/** Reasons (a schema error lists every issue) are cut to this many characters in history. */
const REJECTED_REASON_MAX_CHARS = 1_000;

function boundedEvent(event: unknown, size: number): unknown {
  if (size <= REJECTED_EVENT_MAX_BYTES) return event;
  const type = (event as { type?: unknown } | null)?.type;
  return typeof type === 'string' ? { type: type.slice(0, 128), truncated: `${size} bytes` } : { truncated: `${size} bytes` };
}

function boundedReason(reason: string): string {
  return reason.length <= REJECTED_REASON_MAX_CHARS ? reason : `${reason.slice(0, REJECTED_REASON_MAX_CHARS)}... (${reason.length} characters)`;
}


/** A rejected event for the step; `size`: of what the history keeps of it (0 for a summary made here). */
function rejection(e: Pending, event: unknown, reason: string, size: number): StepEvent {
  return { seq: e.seq, timeMs: e.timeMs, event: boundedEvent(event, size), rejected: boundedReason(reason) };
}

const hasTrace = (e: Pending): boolean => e.trace !== undefined;
const isRejected = (e: HistoryEntry): boolean => e.kind === HistoryKind.Rejected;

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
