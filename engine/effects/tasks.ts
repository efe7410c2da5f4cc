/**
 * Durable tasks: invoked activities. A step that invokes one publishes a task message to the
 * tasks stream right after its state write (again after a crash, from the redelivery path); any
 * engine that registered the workflow consumes it through a durable consumer per workflow and
 * activity. Before running, the engine checks that the task is still pending in the instance's
 * record with the same token (a task cancelled since, or left from a write that never happened,
 * is dropped). Failures are retried with exponential backoff and jitter by NAKing the message
 * with a delay; an attempt whose engine died comes back after the acknowledgement wait (the
 * engine's `leaseTtlMs`, between 1 and 30 s; a running attempt keeps its message in progress). The outcome goes into the instance's event
 * stream with a stable message id, and the instance applies it only while the task is pending: a
 * task that ran twice is applied once.
 */
import { AckPolicy, DeliverPolicy, type JsMsg } from '@nats-io/jetstream';
import { headers as natsHeaders, type Subscription } from '@nats-io/nats-core';
import { context, trace } from '@opentelemetry/api';
import { z } from 'zod';
import { DEFER, type EngineExtension } from '../define/extension.js';
import { findExtension } from './extension-host.js';
import type { TaskRef, TaskResultEvent } from '../protocol/events.js';
import { EngineEvent, isForEarlierInstance, outcomeEvent } from '../protocol/events.js';
import { publishToInstance } from '../store/inbox.js';
import { CancelledError } from '../errors.js';
import { longTimeout, sleepUnless, waitAtMost } from '../clock.js';
import { ensureDurable, readDurable, type DurableReader } from './durable-consumer.js';
import { isCasConflict, isConsumerNotFound, isMessageNotFound, mayStoreLater } from '../store/nats-errors.js';
import {
  SpanKind,
  carrierFor,
  carrierFromHeaders,
  carrierOf,
  contextOf,
  failSpan,
  withTrace,
  type TraceCarrier,
  type TraceSource,
} from '../telemetry/telemetry.js';
import { backoffMs, TerminalError, type ActivityDefinition } from '../define/activity.js';
import { limitsOf } from '../gate/admission.js';
import { BornSchema, bornOf, instanceTag, type InstanceRecord, type InstanceRef } from '../protocol/record.js';
import { readRecord } from '../store/records.js';
import type { Runtime } from '../store/runtime.js';
import type { TaskChange } from '../step/plan.js';
import { decodeJson, encodeJson, shortHash } from '../protocol/json.js';
import type { KvEntry } from '@nats-io/kv';

const TaskMessageSchema = z.object({
  workflow: z.string(),
  id: z.string(),
  invokeId: z.string(),
  token: z.number().int(),
  src: z.string(),
  /** The instance's `born`, when its record has one. */
  born: BornSchema,
  /** Written by jetstate 0.1; the input is now read from the record. */
  input: z.unknown().optional(),
});
type TaskMessage = z.infer<typeof TaskMessageSchema>;

const CancelSchema = z.object({ invokeId: z.string(), token: z.number().int(), born: BornSchema });

/**
 * Control-bucket key of a task's progress (attempts, last error): of one instance, so an id
 * deleted and started again (another `born`) starts its tasks afresh.
 */
export const taskProgressKey = (instance: { workflow: string; id: string; born?: number | undefined }, invokeId: string, token: number): string =>
  `task.${instance.workflow}.${instance.id}${instance.born === undefined ? '' : `.${instance.born}`}.${shortHash(invokeId)}.${token}`;

/**
 * The tasks stream's durable consumer of a workflow's activity: `task_<workflow>_<activity>`. That
 * name is one pair's only while neither name has an underscore (`user_signup`.`email` and
 * `user`.`signup_email` would share it); such a pair gets a hash of itself too, unless a consumer
 * under the plain name reads its subject already (made by an earlier version, whose engines read it).
 */
async function taskDurableName(rt: Runtime, workflow: string, src: string, filter: string): Promise<string> {
  const plain = `task_${workflow}_${src}`;
  if (!workflow.includes('_') && !src.includes('_')) return plain;
  const earlier = await rt.jsm.consumers.info(rt.names.tasksStream, plain).catch((e: unknown) => {
    if (isConsumerNotFound(e)) return undefined;
    throw e;
  });
  return earlier?.config.filter_subject === filter
    ? plain
    : `${plain}_${shortHash(`${workflow}.${src}`)
        .slice(0, 10)
        .replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

/**
 * A task's progress entry: `started`, the attempt last started from the tasks stream (the count
 * of attempts, see `TaskService.countAttempt`); `attempt` and `lastError`, the attempt that last
 * failed, for `get()`.
 */
const TaskProgressSchema = z
  .object({
    started: z.number().int().nonnegative().optional(),
    attempt: z.number().int().nonnegative().optional(),
    lastError: z.string().optional(),
    /** When the failed attempt's retry is due. */
    retryAtMs: z.number().optional(),
    /** The task ran in process after it was handed over, and an extension delivers its outcome. */
    deferred: z.boolean().optional(),
    /** The attempt under way when the task was handed over, then interrupted by its engine's close: it does not count. */
    interrupted: z.number().int().positive().optional(),
    /** The tasks stream's sequence of the message the recorded attempt ran from (see `TaskService.countAttempt`). */
    msg: z.number().int().positive().optional(),
    /** The task's outcome was delivered: another message of it runs nothing. */
    done: z.boolean().optional(),
  })
  .passthrough();

type TaskProgress = z.infer<typeof TaskProgressSchema>;

/** A progress entry's value: undefined for none (or a delete marker), or one that does not parse. */
function progressOf(entry: KvEntry | null): TaskProgress | undefined {
  if (!entry || entry.operation !== 'PUT') return undefined;
  const parsed = TaskProgressSchema.safeParse(decodeJson(entry.value));
  return parsed.success ? parsed.data : undefined;
}

/** A task's progress for `get()`, or null before its first failed attempt. */
export async function readTaskProgress(
  rt: Runtime,
  instance: { workflow: string; id: string; born?: number | undefined },
  invokeId: string,
  token: number,
): Promise<{ attempt: number; lastError: string } | null> {
  const { attempt, lastError } = progressOf(await rt.control.get(taskProgressKey(instance, invokeId, token)).catch(() => null)) ?? {};
  return attempt !== undefined && lastError !== undefined ? { attempt, lastError } : null;
}

const taskKey = (t: { workflow: string; id: string; invokeId: string; token: number }): string => `${t.workflow}.${t.id}.${t.invokeId}.${t.token}`;

/** Publishes the tasks a step started. Idempotent: each task has a stable message id. */
export async function publishTasks(rt: Runtime, instance: InstanceRef, tasks: readonly TaskChange[], trace?: TraceSource, handover?: Handover): Promise<void> {
  const { workflow, id } = instance;
  const tag = instanceTag(instance);
  await Promise.all(
    tasks.map((t) => {
      const options = withTrace({ msgID: rt.security.signer.messageId(`task.${workflow}.${tag}.${t.token}.${t.invokeId}`) }, carrierFor(trace, t.token));
      if (handover && (handover.attempts > 0 || handover.claimedBy || handover.notBeforeMs)) {
        const h = options.headers ?? natsHeaders();
        if (handover.attempts > 0) h.set(ATTEMPTS_HEADER, String(handover.attempts));
        if (handover.claimedBy) h.set(CLAIM_HEADER, handover.claimedBy);
        if (handover.notBeforeMs) h.set(NOT_BEFORE_HEADER, String(handover.notBeforeMs));
        options.headers = h;
      }
      // No input: the runner reads it from the record (sealed there, re-encrypted with it), so
      // nothing secret sits in the tasks stream.
      const message = { workflow, id, invokeId: t.invokeId, token: t.token, src: t.src, ...bornOf(instance) };
      return rt.js.publish(rt.names.taskSubject(workflow, t.src), encodeJson(message), options);
    }),
  );
}

/** What a task that ran in process first carries to the tasks stream. */
export interface Handover {
  /** Attempts it already had. */
  attempts: number;
  /** The engine still running it: others leave it alone while that engine lives. */
  claimedBy?: string | undefined;
  /** Its next attempt is not due before this time. */
  notBeforeMs?: number | undefined;
}

const ATTEMPTS_HEADER = 'Jetstate-Attempts';
const CLAIM_HEADER = 'Jetstate-Claimed-By';
const NOT_BEFORE_HEADER = 'Jetstate-Not-Before';

/** The tasks a record's last write started (to publish again after a crash may have cut that short). */
export function tasksStartedBy(record: InstanceRecord): TaskChange[] {
  return Object.entries(record.tasks)
    .filter(([, t]) => t.token === record.revision)
    .map(([invokeId, t]) => ({ invokeId, token: t.token, src: t.src, input: t.input }));
}

/** Asks every engine to abort these tasks' running attempts (best effort: their outcomes are ignored anyway). */
export function publishCancels(rt: Runtime, instance: InstanceRef, tasks: readonly TaskChange[]): void {
  const born = bornOf(instance);
  for (const t of tasks)
    rt.nc.publish(rt.names.taskCancelSubject(instance.workflow, instance.id), encodeJson({ invokeId: t.invokeId, token: t.token, ...born }));
}

/**
 * A task this engine runs or is about to run. A cancel aborts the attempt's signal and is kept, so
 * an attempt that starts later (the next one, or one still being prepared) is aborted before it runs.
 */
interface Running {
  controller: AbortController;
  done: Promise<void>;
  settle(): void;
  cancelled?: CancelledError;
}

export interface TaskServiceOptions {
  /** This engine's id (it claims the tasks it still runs when they leave for the tasks stream). */
  engineId(): string;
  /** True when the engine with this id is a live member. */
  memberLive(engineId: string): boolean;
  /** Most tasks run in process at once (0: every task goes through the tasks stream). */
  localTasks: number;
  /** How long a task runs (or waits for a retry) in process before it leaves for the tasks stream. */
  localHoldMs: number;
  drainTimeoutMs: number;
  /** How long a pulled task may stay unanswered before another engine gets it (renewed while an attempt runs). */
  ackWaitMs: number;
  extensions?: ReadonlyMap<string, EngineExtension>;
  /** True when some live engine runs the extension (a task needing it waits for that engine). */
  extensionLive?: (name: string) => boolean;
  /** Whether a live engine (this one too) registers this version of the workflow. */
  versionLive?: (workflow: string, version: number) => boolean;
  /** True when this engine owns the instance's partition now (it forgets the tasks its instance cancels). */
  owns?: (workflow: string, id: string) => boolean;
}

const NS = 1_000_000;

export class TaskService {
  private readonly readers: DurableReader[] = [];
  private cancelSub: Subscription | undefined;
  private readonly running = new Map<string, Running>();
  /** When a task left for an engine with its version was last reported (see reportUnserved). */
  private readonly unservedSaid = new Map<string, { atMs: number; live: boolean }>();
  /** Progress entries to remove once their tasks' outcomes are applied (see forgetLater). */
  private readonly forgetting = new Map<NodeJS.Timeout, () => Promise<void>>();
  private stopping = false;
  private readonly cancelListeners = new Set<(ref: TaskRef) => void>();
  private readonly extensions: ReadonlyMap<string, EngineExtension>;
  private localRunning = 0;
  /**
   * Tasks run here after their hand-over whose outcome went to the inbox: their claimed message in
   * the tasks stream waits until the outcome is applied (then it finds the task settled), instead of
   * running the task again.
   */
  private readonly delivered = new Set<string>();
  private readonly engineId = (): string => this.options.engineId();

  constructor(
    private readonly rt: Runtime,
    private readonly options: TaskServiceOptions,
  ) {
    this.extensions = options.extensions ?? new Map();
  }

  /** Tells `listener` of every task cancellation (its invoking state was exited). */
  onCancel(listener: (ref: TaskRef) => void): () => void {
    this.cancelListeners.add(listener);
    return () => this.cancelListeners.delete(listener);
  }

  async start(): Promise<void> {
    const { names } = this.rt;
    this.cancelSub = this.rt.nc.subscribe(`${names.namespace}.taskcancel.>`, {
      callback: (err, msg) => {
        if (err) return;
        const [, , workflow, id] = msg.subject.split('.');
        try {
          const c = CancelSchema.parse(decodeJson(msg.data));
          const ref = { workflow: workflow!, id: id!, ...c };
          const r = this.running.get(taskKey(ref));
          if (r) r.controller.abort((r.cancelled ??= new CancelledError('the invoking state was exited')));
          // Its progress entry, if it ran from the tasks stream or was deferred, is of no more use (the owner removes it).
          if (this.options.owns?.(ref.workflow, ref.id)) this.forgetLater(ref);
          for (const l of this.cancelListeners) l(ref);
        } catch {
          // not a cancel message
        }
      },
    });
    // One durable consumer per workflow and activity, shared by every engine that registers it.
    const kinds = new Map<string, { workflow: string; src: string }>();
    for (const name of this.rt.registry.names()) {
      for (const { runner } of this.rt.registry.versions(name))
        for (const src of runner.activities.keys()) kinds.set(`${name}.${src}`, { workflow: name, src });
    }
    for (const [kind, { workflow, src }] of kinds) {
      const filter = names.taskSubject(workflow, src);
      const config = {
        durable_name: await taskDurableName(this.rt, workflow, src, filter),
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        filter_subject: filter,
        ack_wait: this.options.ackWaitMs * NS,
        max_deliver: -1,
        max_ack_pending: 1_000,
      };
      await ensureDurable(this.rt, names.tasksStream, config);
      this.readers.push(
        readDurable(this.rt, { stream: names.tasksStream, config, maxMessages: 64, label: `tasks ${kind}`, handle: (m) => void this.handle(m) }),
      );
    }
  }

  /** Stops taking tasks, lets running attempts finish up to the drain timeout, then aborts them (they are redelivered). */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.readers.map((r) => r.stop()));
    const all = Promise.all([...this.running.values()].map((r) => r.done));
    await waitAtMost(all, this.options.drainTimeoutMs);
    for (const r of this.running.values()) r.controller.abort(new CancelledError('the engine is closing'));
    await all;
    for (const timer of this.forgetting.keys()) clearTimeout(timer);
    await Promise.all([...this.forgetting.values()].map((forget) => forget()));
    this.cancelSub?.unsubscribe();
  }

  private async handle(m: JsMsg): Promise<void> {
    let task: TaskMessage;
    try {
      task = TaskMessageSchema.parse(decodeJson(m.data));
    } catch {
      this.rt.logger.warn(`tasks: message ${m.seq} is not a task; dropped`);
      m.term();
      return;
    }
    // A task still running in the engine that handed it over, or whose next attempt is not due yet, waits.
    const claimedBy = m.headers?.get(CLAIM_HEADER);
    if (claimedBy && claimedBy !== this.options.engineId() && this.options.memberLive(claimedBy)) return void m.nak(2_000);
    const notBefore = Number(m.headers?.get(NOT_BEFORE_HEADER) ?? 0) - Date.now();
    if (notBefore > 0) return void m.nak(Math.min(notBefore, 3_600_000));
    const key = taskKey(task);
    if (this.running.has(key) || this.delivered.has(key)) return void m.nak(1_000); // running here, or its outcome is on its way
    // Tracked before its record is read: a cancel sent after that read still reaches the attempt.
    const running = this.track(key);
    try {
      const pending = await this.pending(task);
      if (pending === 'wait') return void m.nak(1_000);
      if (pending === 'unreadable') return void m.nak(30_000);
      if (!pending) return void m.term(); // cancelled, finished, or its write never happened
      if ('unserved' in pending) {
        this.reportUnserved(task, pending.unserved);
        return void m.nak(1_000);
      }
      const { def, record } = pending;
      task.input = pending.input;
      // An engine without an extension the activity needs leaves it to one that has it.
      const missing = def.options.requires.filter((x) => !this.extensions.has(x));
      if (missing.length > 0 && missing.every((x) => this.options.extensionLive?.(x) === true)) return void m.nak(1_000);
      await this.attempt(m, task, def, running.controller, record);
    } finally {
      this.running.delete(key);
      running.settle();
    }
  }

  /** Registers a task about to run here, so a cancel finds it. */
  private track(key: string): Running {
    let settle!: () => void;
    const done = new Promise<void>((r) => (settle = r));
    const running: Running = { controller: new AbortController(), done, settle };
    this.running.set(key, running);
    return running;
  }

  /**
   * A task left to an engine with its instance's version: said at most once a minute per task, as a
   * warning while no live engine has that version (it waits for one), else for debugging.
   */
  private reportUnserved(task: TaskMessage, version: number): void {
    const key = taskKey(task);
    const live = this.options.versionLive?.(task.workflow, version) === true;
    const said = this.unservedSaid.get(key);
    // Said again after a minute, or at once when the last engine with the version went.
    if (said !== undefined && Date.now() - said.atMs < 60_000 && !(said.live && !live)) return;
    this.unservedSaid.set(key, { atMs: Date.now(), live });
    if (this.unservedSaid.size > 10_000) this.unservedSaid.delete(this.unservedSaid.keys().next().value!);
    const log = live ? this.rt.logger.debug : this.rt.logger.warn;
    log.call(
      this.rt.logger,
      `task ${task.src} of ${task.workflow} ${task.id} waits: its instance is at version ${version}, which this engine does not register` +
        (live ? '; an engine that has it runs it' : `, and no live engine has it; start an engine with version ${version} of '${task.workflow}'`),
      { workflow: task.workflow, id: task.id },
    );
  }

  /** A fresh signal for the task's next attempt, aborted already when the task was cancelled meanwhile. */
  private static nextAttempt(running: Running): AbortController {
    running.controller = new AbortController();
    if (running.cancelled) running.controller.abort(running.cancelled);
    return running.controller;
  }

  /**
   * The activity and its input if the task is pending in its instance's record; 'wait' while its
   * write may still come (or only another engine has the version); 'unreadable' when the record
   * cannot be opened (reported; the instance is blocked too).
   */
  private async pending(
    task: TaskMessage,
  ): Promise<{ def: ActivityDefinition; input: unknown; record: InstanceRecord } | null | 'wait' | 'unreadable' | { unserved: number }> {
    // The task is published after its state write; a read may still race it (a cluster), so retry briefly.
    let behind: number | undefined;
    for (let i = 0, wait = 2; i < 12; i++, wait = Math.min(wait * 2, 500)) {
      let found;
      try {
        found = await readRecord(this.rt.records.of(task.workflow, task.id), this.rt.security.codec, this.rt.names.instanceKey(task.workflow, task.id));
      } catch (e) {
        this.rt.logger.error(`tasks: task ${task.src} of ${task.workflow} ${task.id} waits: ${(e as Error).message}`);
        return 'unreadable';
      }
      const record = found?.record;
      if (record && record.revision >= task.token) {
        // A task of an earlier instance with this id (deleted, then started again): not this one's.
        if (isForEarlierInstance(task, record.born)) return null;
        const pendingTask = record.tasks[task.invokeId];
        if (pendingTask?.token !== task.token) return null;
        // Not registered here: another engine may have this version.
        const def = this.rt.registry.find(record.workflow, record.version)?.runner.activities.get(task.src);
        return def ? { def, input: pendingTask.input, record } : { unserved: record.version };
      }
      behind = record?.revision;
      await new Promise((r) => setTimeout(r, wait));
    }
    // Never dropped without a word: a deleted instance is expected, a record that stays behind the
    // write that scheduled the task is not (a write that never happened, or a replica far behind).
    const where = `task ${task.src} of ${task.workflow} ${task.id} (scheduled by revision ${task.token})`;
    if (behind === undefined) this.rt.logger.info(`${where}: dropped, its instance is gone (deleted)`);
    else this.rt.logger.warn(`${where}: dropped, its record stayed at revision ${behind} for about 2.5 s, before the write that scheduled it`);
    return null;
  }

  /**
   * Runs one attempt of a task and says what came of it. `working` keeps whatever holds the task
   * alive while it runs (a durable message's ack wait); the caller settles the task.
   */
  private async runAttempt(
    task: TaskMessage,
    def: ActivityDefinition,
    attempt: number,
    controller: AbortController,
    record: InstanceRecord,
    scheduledBy: TraceCarrier | undefined,
    working: () => void,
    msg?: number,
  ): Promise<AttemptResult> {
    // Cancelled (or the engine closing) while the attempt was prepared: it does not run.
    if (controller.signal.aborted) return { result: this.stopping ? 'interrupted' : 'cancelled', wait: 0, trace: scheduledBy };
    const { timeoutMs, heartbeatTimeoutMs, retry } = def.options;
    const fail = (why: string): void => controller.abort(new Error(why));
    const cancelTimeout = longTimeout(() => fail(`attempt ${attempt} timed out after ${timeoutMs} ms`), timeoutMs);
    let cancelHeartbeat: (() => void) | undefined;
    const armHeartbeat = (): void => {
      if (heartbeatTimeoutMs === undefined) return;
      cancelHeartbeat?.();
      cancelHeartbeat = longTimeout(() => fail(`attempt ${attempt} sent no heartbeat for ${heartbeatTimeoutMs} ms`), heartbeatTimeoutMs);
    };
    armHeartbeat();
    const keepAlive = setInterval(working, Math.max(250, Math.floor(this.options.ackWaitMs / 3)));
    const aborted = new Promise<never>((_, reject) => controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true }));
    const tel = this.rt.telemetry;
    const attrs = { 'jetstate.workflow': task.workflow, 'jetstate.task.activity': task.src };
    const span = tel.startSpan(
      `jetstate.task ${task.workflow}.${task.src}`,
      SpanKind.CONSUMER,
      {
        ...attrs,
        'jetstate.instance.id': task.id,
        'jetstate.task.attempt': attempt,
        'jetstate.task.retry': attempt - 1,
        'jetstate.task.max_attempts': retry.maxAttempts,
      },
      contextOf(scheduledBy),
    );
    const attemptCarrier = carrierOf(span) ?? scheduledBy;
    let outcome: { ok: true; output: unknown } | { ok: false; error: Error };
    try {
      // The activity runs inside its attempt's span, so spans it makes (HTTP calls...) nest under it.
      const output = await Promise.race([
        context.with(trace.setSpan(contextOf(scheduledBy), span), () =>
          def.fn({
            input: task.input,
            signal: controller.signal,
            attempt,
            idempotencyKey: `${task.workflow}.${instanceTag(task)}.${task.invokeId}.${task.token}`,
            task: { workflow: task.workflow, id: task.id, invokeId: task.invokeId, token: task.token, ...bornOf(task) },
            trace: attemptCarrier,
            extension: <T>(name: string): T => findExtension<T>(this.extensions, name, `activity '${task.src}' of workflow '${task.workflow}'`),
            heartbeat: () => {
              working();
              armHeartbeat();
            },
          }),
        ),
        aborted,
      ]);
      outcome = { ok: true, output };
    } catch (e) {
      outcome = { ok: false, error: e instanceof Error ? e : new Error(String(e)) };
    } finally {
      cancelTimeout();
      cancelHeartbeat?.();
      clearInterval(keepAlive);
    }
    if (outcome.ok && outcome.output !== DEFER) {
      // Running it again would return the same: the task fails now, saying why.
      const why = unstorable(outcome.output, (this.rt.nc.info?.max_payload ?? 1_048_576) - OUTCOME_HEADROOM, this.maxEventBytesOf(record));
      if (why)
        outcome = {
          ok: false,
          error: new TerminalError(
            `activity '${task.src}' returned an output that cannot be stored: ${why}; return JSON data that fits in a message (keep large data elsewhere and return a reference)`,
          ),
        };
    }
    const final = outcome.ok || outcome.error instanceof TerminalError || outcome.error.name === 'TerminalError' || attempt >= retry.maxAttempts;
    const closing = !outcome.ok && this.stopping && controller.signal.aborted;
    const cancelled = !outcome.ok && outcome.error instanceof CancelledError && !this.stopping;
    const result: AttemptResult['result'] = outcome.ok
      ? outcome.output === DEFER
        ? 'deferred'
        : 'ok'
      : closing
        ? 'interrupted'
        : cancelled
          ? 'cancelled'
          : final
            ? 'failed'
            : 'retry';
    span.setAttribute('jetstate.task.outcome', result === 'deferred' ? 'ok' : result);
    const wait = result === 'retry' ? backoffMs(retry, attempt) : 0;
    if (result === 'retry') span.setAttribute('jetstate.task.retry_in_ms', wait);
    tel.taskAttempts.add(1, { ...attrs, 'jetstate.task.outcome': result === 'deferred' ? 'ok' : result });
    if (!outcome.ok) {
      failSpan(span, outcome.error);
      if (result === 'failed' || result === 'retry') tel.taskFailures.add(1, { ...attrs, 'jetstate.task.final': final });
    }
    const attemptTrace = carrierOf(span) ?? scheduledBy;
    span.end();
    if (result === 'retry') {
      const error = (outcome as { error: Error }).error;
      this.rt.logger.info(`task ${task.src} of ${task.workflow} ${task.id}: attempt ${attempt} failed (${error.message}); retrying in ${wait} ms`);
      // For get() and the CLI: how far the task got. Best effort.
      // From the tasks stream, the entry keeps naming its message (see countAttempt).
      const progress = { attempt, lastError: error.message, retryAtMs: Date.now() + wait, ...(msg !== undefined ? { started: attempt, msg } : {}) };
      await this.rt.control.put(taskProgressKey(task, task.invokeId, task.token), encodeJson(progress)).catch(() => {});
    } else if (msg === undefined && attempt > 1 && (result === 'ok' || result === 'failed' || result === 'deferred')) {
      // (From the tasks stream, the caller settles the entry once the outcome is delivered.)
      await this.forget(task);
    }
    if (result !== 'ok' && result !== 'failed') return { result, wait, trace: attemptTrace };
    // An output that returns a secret value under another name (or to an instance whose secrets were
    // passed to it) names where, so the outcome is sealed there too.
    const secrets = outcome.ok
      ? this.rt.security.codec.outputSecrets(record, [task.input], outcome.output).filter((p) => !this.rt.security.codec.pathsFor(record.workflow).includes(p))
      : [];
    const event: TaskResultEvent = outcomeEvent(
      EngineEvent.Task,
      task,
      outcome.ok ? { ok: true, output: outcome.output, secrets } : { ok: false, error: { name: outcome.error.name, message: outcome.error.message } },
    );
    return { result, wait, trace: attemptTrace, event };
  }

  private async attempt(m: JsMsg, task: TaskMessage, def: ActivityDefinition, controller: AbortController, record: InstanceRecord): Promise<void> {
    const counted = await this.countAttempt(m, task);
    // A retry not due yet: the message may carry no "not before" (a task handed over while it
    // still ran here, whose retry could not change the message already stored).
    if ('dueInMs' in counted) return void m.nak(Math.min(counted.dueInMs, 3_600_000));
    if ('settled' in counted) return void m.ack();
    if ('runningFrom' in counted) {
      // A second message of the task (a repair published it again, past the duplicate window).
      this.rt.logger.info(`task ${task.src} of ${task.workflow} ${task.id}: message ${m.seq} repeats message ${counted.runningFrom}, which runs it; dropped`);
      return void m.term();
    }
    const { attempt, recorded, uncount } = counted;
    const msg = recorded ? m.seq : undefined;
    const { maxAttempts } = def.options.retry;
    if (recorded && attempt > maxAttempts) {
      // The attempts before ended with no outcome: their engine stopped while running them (an
      // out-of-memory kill, a crash in the activity). The task fails, rather than taking engine
      // after engine down for ever.
      const message = `attempt ${attempt} of at most ${maxAttempts} not run: attempt ${attempt - 1} (and any before it without an error) ended with no outcome, its engine having stopped while it ran (a crash or an out-of-memory kill in the activity?)`;
      this.rt.logger.error(`task ${task.src} of ${task.workflow} ${task.id}: ${message}`, { workflow: task.workflow, id: task.id });
      const event = outcomeEvent(EngineEvent.Task, task, { ok: false, error: { name: 'TaskAttemptsLost', message } });
      try {
        await this.deliver(task, event, carrierFromHeaders(m.headers));
        await this.settle(task, { done: true, msg: m.seq });
        this.forgetLater(task);
        m.ack();
      } catch (e) {
        this.rt.logger.warn(`task ${task.src} of ${task.workflow} ${task.id}: could not deliver its failure (${(e as Error).message}); tried again`);
        await uncount();
        m.nak(1_000);
      }
      return;
    }
    // While the attempt runs here, the message stays ours; if this engine dies, it comes back to
    // another one after the acknowledgement wait.
    const r = await this.runAttempt(task, def, attempt, controller, record, carrierFromHeaders(m.headers), () => m.working(), msg);
    // The engine is closing: another engine takes the task over, and this attempt does not count.
    if (r.result === 'interrupted') return void (await uncount(), m.nak());
    if (r.result === 'cancelled') return void m.term();
    if (r.result === 'retry') return void m.nak(r.wait);
    // An extension delivers a deferred outcome later (see define/extension.ts): the message is done.
    if (r.result === 'deferred') {
      if (msg !== undefined) await this.settle(task, { deferred: true, msg });
      return void m.ack();
    }
    try {
      await this.deliverRetrying(task, r.event!, r.trace, () => m.working());
      if (msg !== undefined) {
        await this.settle(task, { done: true, msg });
        this.forgetLater(task);
      }
      m.ack();
    } catch (e) {
      // Its outcome is lost with this try: the task runs again, and that run is this attempt's, not
      // another (with its attempts used up it would be reported lost, although it succeeded).
      this.rt.logger.warn(
        `task ${task.src} of ${task.workflow} ${task.id}: could not deliver the outcome of attempt ${attempt} (${(e as Error).message}); the attempt runs again`,
      );
      await uncount();
      m.nak(1_000);
    }
  }

  /**
   * Delivers an outcome, trying again while the instance's stream does not store it (no leader
   * during an election, a full stream, a timeout) for up to `DELIVERY_RETRY_MS`, so that a task
   * that ran is not run again for a short outage; `working`, when it runs from a message, keeps it ours meanwhile.
   * Rejects with the last error once that time has passed or the engine is closing.
   */
  private async deliverRetrying(task: TaskMessage, event: TaskResultEvent, trace: TraceCarrier | undefined, working?: () => void): Promise<void> {
    const until = Date.now() + DELIVERY_RETRY_MS;
    // Kept ours for the whole time, as while the attempt ran: a publish may wait its whole timeout.
    const keepAlive = working && setInterval(working, Math.max(250, Math.floor(this.options.ackWaitMs / 3)));
    try {
      for (let wait = 100; ; wait = Math.min(wait * 2, 2_000)) {
        working?.();
        try {
          await this.deliver(task, event, trace);
          return;
        } catch (e) {
          // What waiting cannot change (a refused permission, a message too large) is not asked again.
          if (this.stopping || Date.now() + wait > until || !mayStoreLater(e)) throw e;
          this.rt.logger.debug(`task ${task.src} of ${task.workflow} ${task.id}: outcome not stored yet (${(e as Error).message}); trying again in ${wait} ms`);
          await sleepUnless(wait);
        }
      }
    } finally {
      if (keepAlive) clearInterval(keepAlive);
    }
  }

  /**
   * Which attempt a delivery of a task message runs. Not its delivery count: a message is also
   * delivered, and left, while its task runs in another engine (claimed), runs here, or waits for
   * its record or its retry time; those deliveries run nothing. Each attempt from the tasks stream
   * records itself in the control bucket before it runs (the entry `get()` reads a failed attempt
   * from), so an attempt whose engine died counts and a crash loop ends. When the bucket cannot be
   * reached, the delivery count stands in (it counts too many, never too few).
   *
   * The entry also names the message the attempt runs from (its stream sequence), written by
   * compare-and-set: a task has one message, except when a repair published it again later than
   * the stream's duplicate window (a task pending that long). Such a second message, while the
   * first is still in the stream (running, or waiting for its retry or its redelivery), runs
   * nothing; nor does any once the task's outcome was delivered (`done`) or deferred.
   */
  private async countAttempt(
    m: JsMsg,
    task: TaskMessage,
  ): Promise<{ attempt: number; recorded: boolean; uncount(): Promise<unknown> } | { dueInMs: number } | { settled: true } | { runningFrom: number }> {
    const prior = priorAttempts(m);
    const key = taskProgressKey(task, task.invokeId, task.token);
    try {
      for (let tries = 1; ; tries++) {
        const entry = await this.rt.control.get(key);
        const before = progressOf(entry);
        // Ran in process after this message was published and deferred, or its outcome delivered: nothing left to run.
        if (before?.deferred || before?.done) return { settled: true };
        if (before?.msg !== undefined && before.msg !== m.seq && (await this.stored(before.msg))) return { runningFrom: before.msg };
        const dueInMs = (before?.retryAtMs ?? 0) - Date.now();
        if (dueInMs > 0) return { dueInMs };
        // The message counts an attempt its engine's close interrupted after handing it over.
        const ran = before?.interrupted !== undefined && before.interrupted === prior ? prior - 1 : prior;
        const attempt = Math.max(ran, before?.started ?? 0, before?.attempt ?? 0) + 1;
        const next = encodeJson({ ...before, started: attempt, msg: m.seq });
        try {
          if (entry?.operation === 'PUT') await this.rt.control.update(key, next, entry.revision);
          else await this.rt.control.create(key, next);
        } catch (e) {
          // Another delivery of this task wrote first: judged again on what it wrote.
          if (isCasConflict(e) && tries < 5) continue;
          throw e;
        }
        // An attempt the engine's close interrupted does not count (best effort).
        const uncount = () => this.rt.control.put(key, encodeJson({ ...before, started: attempt - 1, msg: m.seq })).catch(() => {});
        return { attempt, recorded: true, uncount };
      }
    } catch (e) {
      this.rt.logger.warn(
        `task ${task.src} of ${task.workflow} ${task.id}: could not read or record its attempt count (${(e as Error).message}); counting deliveries instead`,
      );
      return { attempt: m.info.deliveryCount + prior, recorded: false, uncount: async () => {} };
    }
  }

  /** Whether the tasks stream still holds the message at `seq` (not yet acknowledged). */
  private async stored(seq: number): Promise<boolean> {
    try {
      await this.rt.jsm.streams.getMessage(this.rt.names.tasksStream, { seq });
      return true;
    } catch (e) {
      if (isMessageNotFound(e)) return false;
      throw e;
    }
  }

  /**
   * Removes a task's progress entry, leaving nothing in the control bucket (a KV purge leaves a
   * marker per key, kept for ever). Best effort.
   */
  private async forget(task: TaskRef): Promise<void> {
    const bucket = this.rt.names.controlBucket;
    await this.rt.jsm.streams.purge(`KV_${bucket}`, { filter: `$KV.${bucket}.${taskProgressKey(task, task.invokeId, task.token)}` }).catch(() => {});
  }

  /**
   * Forgets a task whose outcome was delivered, once the outcome has surely been applied (after
   * that its record says the task is over, which is what a later message of it is checked
   * against). Done at once when the engine closes.
   */
  private forgetLater(task: TaskRef): void {
    const forget = (): Promise<void> => {
      this.forgetting.delete(timer);
      return this.forget(task);
    };
    const timer = setTimeout(forget, Math.max(2 * this.options.ackWaitMs, FORGET_AFTER_MIN_MS));
    timer.unref?.();
    this.forgetting.set(timer, forget);
  }

  /**
   * A deferred task's outcome was delivered (by its extension): its progress entry goes, as a
   * delivered outcome's does. The entries of tasks whose state was left go by the cancel.
   */
  taskOver(task: TaskRef): void {
    this.forgetLater(task);
  }

  /** A task's progress entry once its outcome is delivered (or deferred): a later message of it runs nothing. Best effort. */
  private async settle(task: TaskMessage, how: { done: true; msg: number } | { deferred: true; msg: number }): Promise<void> {
    await this.rt.control.put(taskProgressKey(task, task.invokeId, task.token), encodeJson(how)).catch(() => {});
  }

  /** Delivers an outcome through the instance's inbox (for a task that ran here when its partition moved away). */
  deliverOutcome(task: TaskRef, event: TaskResultEvent, trace: TraceCarrier | undefined): Promise<unknown> {
    return this.deliver(task, event, trace);
  }

  /** Delivers an outcome through the instance's inbox, signed, with a keyed message id (idempotent). */
  private deliver(task: TaskRef, event: TaskResultEvent, trace: TraceCarrier | undefined): Promise<unknown> {
    // The outcome continues the trace of the attempt that produced it.
    return publishToInstance(this.rt, {
      workflow: task.workflow,
      id: task.id,
      event: event as unknown as { type: string },
      engine: { logicalId: `task.${task.workflow}.${instanceTag(task)}.${task.token}.${task.invokeId}` },
      trace,
    });
  }

  /** The `maxEventBytes` limit of the task's workflow version, when this engine has it. */
  private maxEventBytesOf(record: InstanceRecord): number | undefined {
    const found = this.rt.registry.find(record.workflow, record.version);
    return found ? limitsOf(this.rt.security.limits, found.def).maxEventBytes : undefined;
  }

  /** True while this engine may start another task of its own partitions in process. */
  canRunLocally(workflow: string, version: number, src: string): boolean {
    if (this.stopping || this.localRunning >= this.options.localTasks) return false;
    const def = this.rt.registry.find(workflow, version)?.runner.activities.get(src);
    return def !== undefined && def.options.inProcess && def.options.requires.every((x) => this.extensions.has(x));
  }

  /**
   * Runs a task in this process, right after the write that started it, without a round trip
   * through the tasks stream (the fast path for an instance this engine owns). Retries whose wait
   * is short run here too. The task leaves for the tasks stream (`publishTasks`, so any engine can
   * take it over) when it runs longer than the hold time, when a retry would wait longer, or when
   * the engine is closing: `onDurable` says so, after which the caller need not hold anything for
   * it. `onOutcome` gets the outcome event to apply.
   */
  runLocally(record: InstanceRecord, t: TaskChange, scheduledBy: TraceCarrier | undefined, hooks: LocalTaskHooks): void {
    const def = this.rt.registry.find(record.workflow, record.version)?.runner.activities.get(t.src);
    if (!def) return void hooks.onDurable(this.handOver(record, t, scheduledBy, 0));
    const task: TaskMessage = { workflow: record.workflow, id: record.id, invokeId: t.invokeId, token: t.token, src: t.src, input: t.input };
    if (record.born !== undefined) task.born = record.born;
    const key = taskKey(task);
    const running = this.track(key);
    this.localRunning++;
    let durable: Promise<unknown> | undefined;
    let attempt = 1;
    // Held too long: out to the tasks stream, claimed by this engine while it still runs here; the
    // attempt under way counts, so an engine that takes it over after this one died runs the next.
    const hold = setTimeout(() => {
      durable = this.handOver(record, t, scheduledBy, attempt, this.engineId());
      hooks.onDurable(durable);
    }, this.options.localHoldMs);
    hold.unref?.();
    void (async () => {
      try {
        // A fresh signal per attempt (a timed-out one is aborted), set before the wait for it: a
        // cancel reaches the attempt under way, or the one waiting to run.
        let current = running.controller;
        for (; ; attempt++) {
          const r = await this.runAttempt(task, def, attempt, current, record, scheduledBy, () => {});
          if (r.result === 'ok' || r.result === 'failed') {
            if (durable === undefined) return hooks.onOutcome(r.event!, r.trace);
            // Handed over already: the event that caused the task may be finished, so a write of the
            // outcome here would have no event to repair it after a crash. It goes through the inbox.
            this.delivered.add(key);
            setTimeout(() => this.delivered.delete(key), DELIVERED_HOLD_MS).unref?.();
            return void this.deliverRetrying(task, r.event!, r.trace).catch(async (e: Error) => {
              this.delivered.delete(key);
              this.rt.logger.warn(
                `task ${t.src} of ${record.workflow} ${record.id}: outcome of attempt ${attempt} not delivered (${(e as Error).message}); the tasks stream runs that attempt again`,
              );
              // Its claimed message counts this attempt: the run that replaces it is not another.
              await this.noteInterrupted(task, attempt);
            });
          }
          if (r.result === 'deferred' && durable) {
            // Its message in the tasks stream (claimed by this engine) must not run it again.
            await this.rt.control
              .put(taskProgressKey(task, task.invokeId, task.token), encodeJson({ deferred: true }))
              .catch((e: Error) =>
                this.rt.logger.warn(
                  `task ${t.src} of ${record.workflow} ${record.id}: deferred, but not recorded so (${e.message}); the tasks stream may run it again`,
                ),
              );
            return;
          }
          if (r.result === 'deferred' || r.result === 'cancelled') return durable ?? hooks.onDurable(Promise.resolve());
          const shortWait = r.result === 'retry' && r.wait <= this.options.localHoldMs && durable === undefined;
          if (!shortWait) {
            // A long wait, or the engine is closing: the tasks stream takes it from here.
            clearTimeout(hold);
            // An attempt the engine's close interrupted does not count.
            const ran = r.result === 'interrupted' ? attempt - 1 : attempt;
            // Handed over already, its message counts the attempt: the progress entry says it did not run out.
            if (durable && r.result === 'interrupted') await this.noteInterrupted(task, attempt);
            const out = this.handOver(record, t, scheduledBy, ran, undefined, r.result === 'retry' ? Date.now() + r.wait : undefined);
            return durable ? void out.catch(() => {}) : hooks.onDurable(out);
          }
          const retryAt = Date.now() + r.wait;
          current = TaskService.nextAttempt(running);
          await sleepUnless(r.wait, current.signal);
          // Its state was left meanwhile, or the engine is closing (the tasks stream takes it over):
          // no further attempt here.
          if (current.signal.aborted) {
            if (durable) return;
            clearTimeout(hold);
            return hooks.onDurable(this.stopping ? this.handOver(record, t, scheduledBy, attempt, undefined, retryAt) : Promise.resolve());
          }
        }
      } catch (e) {
        this.rt.logger.warn(`task ${t.src} of ${record.workflow} ${record.id}: ${(e as Error).message}; handing it to the tasks stream`);
        if (!durable) hooks.onDurable(this.handOver(record, t, scheduledBy, 0));
      } finally {
        clearTimeout(hold);
        this.localRunning--;
        this.running.delete(key);
        running.settle();
      }
    })();
  }

  /**
   * Records that attempt `attempt` of a task handed over while it ran here (its message counts that
   * attempt as run) was interrupted by this engine's close: the next engine runs it again. Best
   * effort; without it the attempt counts.
   */
  private async noteInterrupted(task: TaskMessage, attempt: number): Promise<void> {
    const key = taskProgressKey(task, task.invokeId, task.token);
    try {
      await this.rt.control.put(key, encodeJson({ ...progressOf(await this.rt.control.get(key)), interrupted: attempt }));
    } catch (e) {
      this.rt.logger.warn(
        `task ${task.src} of ${task.workflow} ${task.id}: the interrupted attempt ${attempt} is not recorded (${(e as Error).message}); it counts`,
      );
    }
  }

  /**
   * Publishes a task that ran here, to the tasks stream: how many attempts it had, who still runs
   * it, when to try next. Asked again until the stream stores it (dropped, the task would run
   * nowhere and its instance wait for ever); rejects only once the engine is closing, when the event
   * that started the task stays unfinished and the next owner publishes the task from the record.
   */
  private async handOver(
    record: InstanceRecord,
    t: TaskChange,
    trace: TraceCarrier | undefined,
    attempts: number,
    claimedBy?: string,
    notBeforeMs?: number,
  ): Promise<unknown> {
    let delay = HANDOVER_RETRY_MIN_MS;
    for (let n = 1; ; n++) {
      try {
        const stored = await publishTasks(this.rt, record, [t], trace, { attempts, claimedBy, notBeforeMs });
        if (n > 1) this.rt.logger.info(`task ${t.src} of ${record.workflow} ${record.id}: in the tasks stream after ${n} tries`);
        return stored;
      } catch (e) {
        if (this.stopping) throw e;
        const what = `task ${t.src} of ${record.workflow} ${record.id}: the tasks stream did not take it (${(e as Error).message})`;
        if (n === 1) this.rt.logger.warn(`${what}; asked again in ${delay} ms`);
        else if (n % 10 === 0) this.rt.logger.error(`${what}; refused ${n} times, asked again every ${delay} ms; its instance waits for it`);
        await new Promise((r) => setTimeout(r, delay).unref?.());
        delay = Math.min(delay * 2, HANDOVER_RETRY_MAX_MS);
      }
    }
  }
}

/** A hand-over the tasks stream refused is asked again from this delay, doubling up to the next. */
const HANDOVER_RETRY_MIN_MS = 100;
const HANDOVER_RETRY_MAX_MS = 5_000;

/** Bytes kept free under the server's max_payload for the outcome event's envelope and headers. */
const OUTCOME_HEADROOM = 8_192;

/**
 * Why an activity's output cannot travel as its outcome event (undefined when it can): not JSON,
 * larger than a message, or than the workflow's `maxEventBytes` (the instance would refuse it).
 */
function unstorable(output: unknown, maxBytes: number, maxEventBytes: number | undefined): string | undefined {
  let text: string | undefined;
  try {
    text = JSON.stringify(output);
  } catch (e) {
    return `it is not JSON (${(e as Error).message})`;
  }
  const bytes = text === undefined ? 0 : Buffer.byteLength(text);
  if (bytes > maxBytes) return `it is ${bytes} bytes as JSON, more than the ${maxBytes} bytes a message holds on this server`;
  if (maxEventBytes !== undefined && bytes > maxEventBytes - OUTCOME_ENVELOPE)
    return `it is ${bytes} bytes as JSON, over this workflow's maxEventBytes limit of ${maxEventBytes} (the result travels as an event)`;
  return undefined;
}

/** Bytes an outcome event adds around an activity's output. */
const OUTCOME_ENVELOPE = 512;

/** How long a claimed task message waits for an outcome this engine delivered to the inbox before it may run again. */
const DELIVERED_HOLD_MS = 30_000;
/**
 * How long an outcome the instance's stream does not store yet is asked again before its task
 * runs again: past a stream leader's election (4-8 s measured on a 3-node cluster), and shorter
 * than `DELIVERED_HOLD_MS`, so that a claimed message does not run a task whose outcome is on its way.
 */
const DELIVERY_RETRY_MS = 20_000;
/** The least wait before a delivered task's progress entry is removed (twice the acknowledgement wait, at least this). */
const FORGET_AFTER_MIN_MS = 2_000;

/** What one attempt came to: `event` for a settled task (`ok` or `failed`). */
interface AttemptResult {
  result: 'ok' | 'failed' | 'retry' | 'deferred' | 'cancelled' | 'interrupted';
  wait: number;
  trace: TraceCarrier | undefined;
  event?: TaskResultEvent;
}

/** How a task run in process reports back. */
export interface LocalTaskHooks {
  /** Its outcome, to apply to the instance (no longer pending in the tasks stream's sense). */
  onOutcome(event: TaskResultEvent, trace: TraceCarrier | undefined): void;
  /** It is (being) published to the tasks stream, or settled out of band: nothing to hold for it once this resolves. */
  onDurable(published: Promise<unknown>): void;
}

/** Attempts a task had before its message was published (it ran in process first). */
function priorAttempts(m: JsMsg): number {
  const n = Number(m.headers?.get(ATTEMPTS_HEADER) ?? 0);
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}
