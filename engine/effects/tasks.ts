/**
 * Durable tasks: invoked activities. A step that invokes one publishes a task message to the
 * tasks stream right after its state write (again after a crash, from the redelivery path); any
 * engine that registered the workflow consumes it through a durable consumer per workflow and
 * activity. Before running, the engine checks that the task is still pending in the instance's
 * record with the same token (a task cancelled since, or left from a write that never happened,
 * is dropped). Failures are retried with exponential backoff and jitter by NAKing the message
 * with a delay; an attempt whose engine died comes back after the acknowledgement wait (the
 * heartbeat timeout, or the attempt timeout plus 5 s). The outcome goes into the instance's event
 * stream with a stable message id, and the instance applies it only while the task is pending: a
 * task that ran twice is applied once.
 */
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import type { Subscription } from '@nats-io/nats-core';
import { context, trace } from '@opentelemetry/api';
import { z } from 'zod';
import { DEFER, findExtension, type EngineExtension, type TaskRef } from './extensions.js';
import { SpanKind, carrierFor, carrierFromHeaders, carrierOf, contextOf, failSpan, withTrace, type TraceSource } from '../telemetry/telemetry.js';
import { backoffMs, TerminalError, type ActivityDefinition } from '../define/activity.js';
import { partitionOf } from '../protocol/names.js';
import { InstanceRecordSchema, decodeJson, encodeJson, shortHash, type InstanceRecord } from '../protocol/record.js';
import type { Runtime } from '../store/runtime.js';
import { TASK_EVENT, type TaskChange, type TaskResultEvent } from '../step/step.js';

const TaskMessageSchema = z.object({
  workflow: z.string(),
  id: z.string(),
  invokeId: z.string(),
  token: z.number().int(),
  src: z.string(),
  input: z.unknown(),
});
type TaskMessage = z.infer<typeof TaskMessageSchema>;

const CancelSchema = z.object({ invokeId: z.string(), token: z.number().int() });

/** Control-bucket key of a task's progress (attempts, last error). */
export const taskProgressKey = (workflow: string, id: string, invokeId: string, token: number): string => `task.${workflow}.${id}.${shortHash(invokeId)}.${token}`;

const TaskProgressSchema = z.object({ attempt: z.number().int(), lastError: z.string() });

/** A task's progress for `get()`, or null before its first failed attempt. */
export async function readTaskProgress(rt: Runtime, workflow: string, id: string, invokeId: string, token: number): Promise<{ attempt: number; lastError: string } | null> {
  const entry = await rt.control.get(taskProgressKey(workflow, id, invokeId, token)).catch(() => null);
  if (!entry || entry.operation !== 'PUT') return null;
  const parsed = TaskProgressSchema.safeParse(decodeJson(entry.value));
  return parsed.success ? parsed.data : null;
}

const taskKey = (t: { workflow: string; id: string; invokeId: string; token: number }): string => `${t.workflow}.${t.id}.${t.invokeId}.${t.token}`;

/** Publishes the tasks a step started. Idempotent: each task has a stable message id. */
export async function publishTasks(rt: Runtime, workflow: string, id: string, tasks: readonly TaskChange[], trace?: TraceSource): Promise<void> {
  await Promise.all(
    tasks.map((t) =>
      rt.js.publish(
        `${rt.names.namespace}.task.${workflow}.${t.src}`,
        encodeJson({ workflow, id, invokeId: t.invokeId, token: t.token, src: t.src, input: rt.security.codec.seal(workflow, id, 'task', t.input) }),
        withTrace({ msgID: `${workflow}.${id}.${t.token}.${shortHash(t.invokeId)}` }, carrierFor(trace, t.token)),
      ),
    ),
  );
}

/** The tasks a record's last write started (to publish again after a crash may have cut that short). */
export function tasksStartedBy(record: InstanceRecord): TaskChange[] {
  return Object.entries(record.tasks)
    .filter(([, t]) => t.token === record.revision)
    .map(([invokeId, t]) => ({ invokeId, token: t.token, src: t.src, input: t.input }));
}

/** Asks every engine to abort these tasks' running attempts (best effort: their outcomes are ignored anyway). */
export function publishCancels(rt: Runtime, workflow: string, id: string, tasks: readonly TaskChange[]): void {
  for (const t of tasks) rt.nc.publish(`${rt.names.namespace}.taskcancel.${workflow}.${id}`, encodeJson({ invokeId: t.invokeId, token: t.token }));
}

interface Running {
  controller: AbortController;
  done: Promise<void>;
}

export class TaskService {
  private readonly loops: Promise<void>[] = [];
  private readonly subscriptions: ConsumerMessages[] = [];
  private cancelSub: Subscription | undefined;
  private readonly running = new Map<string, Running>();
  private stopping = false;
  private readonly cancelListeners = new Set<(ref: TaskRef) => void>();

  constructor(
    private readonly rt: Runtime,
    private readonly drainTimeoutMs: number,
    private readonly extensions: ReadonlyMap<string, EngineExtension> = new Map(),
  ) {}

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
          this.running.get(taskKey(ref))?.controller.abort(new Error('the invoking state was exited'));
          for (const l of this.cancelListeners) l(ref);
        } catch {
          // not a cancel message
        }
      },
    });
    // One durable consumer per workflow and activity, shared by every engine that registers it.
    const kinds = new Map<string, ActivityDefinition>();
    for (const name of this.rt.registry.names()) {
      for (const { runner } of this.rt.registry.versions(name)) for (const [src, def] of runner.activities) if (!kinds.has(`${name}.${src}`)) kinds.set(`${name}.${src}`, def);
    }
    for (const [kind, def] of kinds) {
      const durable = `task_${kind.replace('.', '_')}`;
      const ackWaitMs = def.options.heartbeatTimeoutMs ?? def.options.timeoutMs + 5_000;
      const config = {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        filter_subject: `${names.namespace}.task.${kind}`,
        ack_wait: ackWaitMs * 1_000_000,
        max_deliver: -1,
      };
      try {
        await this.rt.jsm.consumers.add(names.tasksStream, config);
      } catch (e) {
        // Exists with other settings (an activity's timeouts changed): update it.
        if (!/already in use|exists/i.test((e as Error).message)) throw e;
        await this.rt.jsm.consumers.update(names.tasksStream, durable, { ack_wait: config.ack_wait });
      }
      this.loops.push(this.consume(durable));
    }
  }

  /** Stops taking tasks, lets running attempts finish up to the drain timeout, then aborts them (they are redelivered). */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const s of this.subscriptions) s.stop();
    await Promise.all(this.loops.map((l) => l.catch(() => {})));
    const all = Promise.all([...this.running.values()].map((r) => r.done));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise<void>((r) => (timer = setTimeout(r, this.drainTimeoutMs)))]);
    clearTimeout(timer);
    for (const r of this.running.values()) r.controller.abort(new Error('the engine is closing'));
    await all;
    this.cancelSub?.unsubscribe();
  }

  private async consume(durable: string): Promise<void> {
    let delay = 50;
    while (!this.stopping) {
      try {
        const consumer = await this.rt.js.consumers.get(this.rt.names.tasksStream, durable);
        const messages = await consumer.consume({ max_messages: 64, expires: 5_000 });
        this.subscriptions.push(messages);
        if (this.stopping) messages.stop();
        for await (const m of messages) {
          delay = 50;
          void this.handle(m);
        }
      } catch (e) {
        this.rt.logger.warn(`tasks: reading ${durable} failed (${(e as Error).message}); resuming`);
      }
      if (this.stopping) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2_000);
    }
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
    try {
      task.input = this.rt.security.codec.open(task.workflow, task.id, 'task', task.input);
    } catch (e) {
      this.rt.logger.error(`tasks: the input of task ${task.src} of ${task.workflow} ${task.id} cannot be decrypted (${(e as Error).message}); it waits`);
      m.nak(30_000);
      return;
    }
    const def = await this.pendingDefinition(task);
    if (def === 'wait') return void m.nak(1_000);
    if (!def) return void m.term(); // cancelled, finished, or its write never happened
    const key = taskKey(task);
    if (this.running.has(key)) return void m.nak(1_000); // already running here (a redelivery)
    const controller = new AbortController();
    let settle!: () => void;
    const done = new Promise<void>((r) => (settle = r));
    this.running.set(key, { controller, done });
    try {
      await this.attempt(m, task, def, controller);
    } finally {
      this.running.delete(key);
      settle();
    }
  }

  /** The activity if the task is pending in its instance's record; 'wait' while its write may still come. */
  private async pendingDefinition(task: TaskMessage): Promise<ActivityDefinition | null | 'wait'> {
    // The task is published after its state write; a read may still race it (a cluster), so retry briefly.
    for (let i = 0, wait = 2; i < 12; i++, wait = Math.min(wait * 2, 500)) {
      const entry = await this.rt.instances.get(this.rt.names.instanceKey(task.workflow, task.id));
      if (entry && entry.operation === 'PUT') {
        const parsed = InstanceRecordSchema.safeParse(decodeJson(entry.value));
        if (!parsed.success) return 'wait';
        const record = parsed.data;
        if (record.revision >= task.token) {
          if (record.tasks[task.invokeId]?.token !== task.token) return null;
          const found = this.rt.registry.find(record.workflow, record.version);
          // Not registered here: another engine may have this version.
          return found?.runner.activities.get(task.src) ?? 'wait';
        }
      }
      await new Promise((r) => setTimeout(r, wait));
    }
    return null;
  }

  private async attempt(m: JsMsg, task: TaskMessage, def: ActivityDefinition, controller: AbortController): Promise<void> {
    const attempt = m.info.deliveryCount;
    const { timeoutMs, heartbeatTimeoutMs, retry } = def.options;
    const fail = (why: string): void => controller.abort(new Error(why));
    const timeout = setTimeout(() => fail(`attempt ${attempt} timed out after ${timeoutMs} ms`), timeoutMs);
    let heartbeatTimer: NodeJS.Timeout | undefined;
    const armHeartbeat = (): void => {
      if (heartbeatTimeoutMs === undefined) return;
      clearTimeout(heartbeatTimer);
      heartbeatTimer = setTimeout(() => fail(`attempt ${attempt} sent no heartbeat for ${heartbeatTimeoutMs} ms`), heartbeatTimeoutMs);
    };
    armHeartbeat();
    const aborted = new Promise<never>((_, reject) => controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true }));
    const tel = this.rt.telemetry;
    const scheduledBy = carrierFromHeaders(m.headers);
    const attrs = { 'jetstate.workflow': task.workflow, 'jetstate.task.activity': task.src };
    const span = tel.startSpan(
      `jetstate.task ${task.workflow}.${task.src}`,
      SpanKind.CONSUMER,
      { ...attrs, 'jetstate.instance.id': task.id, 'jetstate.task.attempt': attempt, 'jetstate.task.retry': attempt - 1, 'jetstate.task.max_attempts': retry.maxAttempts },
      contextOf(scheduledBy),
    );
    const attemptCarrier = carrierOf(span) ?? scheduledBy;
    let outcome: { ok: true; output: unknown } | { ok: false; error: Error };
    try {
      // The activity runs inside its attempt's span, so spans it makes (HTTP calls...) nest under it.
      const output = await Promise.race([
        context.with(trace.setSpan(contextOf(scheduledBy), span), () => def.fn({
          input: task.input,
          signal: controller.signal,
          attempt,
          idempotencyKey: `${task.workflow}.${task.id}.${task.invokeId}.${task.token}`,
          task: { workflow: task.workflow, id: task.id, invokeId: task.invokeId, token: task.token },
          trace: attemptCarrier,
          extension: <T>(name: string): T => findExtension<T>(this.extensions, name, `activity '${task.src}' of workflow '${task.workflow}'`),
          heartbeat: () => {
            m.working();
            armHeartbeat();
          },
        })),
        aborted,
      ]);
      outcome = { ok: true, output };
    } catch (e) {
      outcome = { ok: false, error: e instanceof Error ? e : new Error(String(e)) };
    } finally {
      clearTimeout(timeout);
      clearTimeout(heartbeatTimer);
    }
    const final = outcome.ok || outcome.error instanceof TerminalError || outcome.error.name === 'TerminalError' || attempt >= retry.maxAttempts;
    const closing = !outcome.ok && this.stopping && controller.signal.aborted;
    const cancelled = !outcome.ok && /invoking state was exited/.test(outcome.error.message);
    const result = outcome.ok ? 'ok' : closing ? 'interrupted' : cancelled ? 'cancelled' : final ? 'failed' : 'retry';
    span.setAttribute('jetstate.task.outcome', result);
    const wait = result === 'retry' ? backoffMs(retry, attempt) : 0;
    if (result === 'retry') span.setAttribute('jetstate.task.retry_in_ms', wait);
    tel.taskAttempts.add(1, { ...attrs, 'jetstate.task.outcome': result });
    if (!outcome.ok) {
      failSpan(span, outcome.error);
      if (result === 'failed' || result === 'retry') tel.taskFailures.add(1, { ...attrs, 'jetstate.task.final': final });
    }
    const attemptTrace = carrierOf(span) ?? scheduledBy;
    span.end();
    if (closing) {
      m.nak(); // the engine is closing: another engine takes the task over
      return;
    }
    if (cancelled) {
      m.term();
      return;
    }
    if (!outcome.ok && !final) {
      this.rt.logger.info(`task ${task.src} of ${task.workflow} ${task.id}: attempt ${attempt} failed (${outcome.error.message}); retrying in ${wait} ms`);
      // For get() and the CLI: how far the task got. Best effort.
      await this.rt.control
        .put(taskProgressKey(task.workflow, task.id, task.invokeId, task.token), encodeJson({ attempt, lastError: outcome.error.message, retryAtMs: Date.now() + wait }))
        .catch(() => {});
      m.nak(wait);
      return;
    }
    if (outcome.ok && outcome.output === DEFER) {
      // An extension delivers the outcome later (see extensions.ts); the task message is done.
      m.ack();
      if (attempt > 1) await this.rt.control.purge(taskProgressKey(task.workflow, task.id, task.invokeId, task.token)).catch(() => {});
      return;
    }
    const event: TaskResultEvent = outcome.ok
      ? { type: TASK_EVENT, invokeId: task.invokeId, token: task.token, ok: true, output: this.rt.security.codec.seal(task.workflow, task.id, 'output', outcome.output) }
      : { type: TASK_EVENT, invokeId: task.invokeId, token: task.token, ok: false, error: { name: outcome.error.name, message: outcome.error.message } };
    const subject = this.rt.names.eventSubject(partitionOf(task.workflow, task.id, this.rt.partitions), task.workflow, task.id);
    try {
      // The outcome continues the trace of the attempt that produced it.
      const data = encodeJson(event);
      await this.rt.js.publish(subject, data, this.rt.security.signer.options(subject, data, { msgID: `task.${task.workflow}.${task.id}.${task.token}.${shortHash(task.invokeId)}` }, attemptTrace));
      m.ack();
      if (attempt > 1) await this.rt.control.purge(taskProgressKey(task.workflow, task.id, task.invokeId, task.token)).catch(() => {});
    } catch (e) {
      this.rt.logger.warn(`task ${task.src} of ${task.workflow} ${task.id}: could not deliver its outcome (${(e as Error).message}); it will run again`);
      m.nak(1_000);
    }
  }
}
