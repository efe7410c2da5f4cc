/**
 * The engine extension behind `stepFunctionsExecution()` (execution.ts): `stepFunctions()`
 * starts the executions, follows them, and delivers their outcomes.
 *
 * How it stays exactly-once:
 * - The invocation is a durable task (see engine/effects/tasks.ts): it runs after the state write,
 *   and again after a crash. Its attempt calls StartExecution with a name derived from the
 *   namespace, the instance and the invocation (execution-names.ts), so a retry cannot start a
 *   second execution: Step Functions answers a repeated start of a running execution with the
 *   same ARN, and `ExecutionAlreadyExists` otherwise, after which the execution is described on
 *   its predictable ARN and adopted if its input is the same.
 * - The attempt then records the pending execution in the `<namespace>_sfn` bucket and returns
 *   `DEFER`: the task is done, its outcome comes later.
 * - Every engine watches that bucket. The engine that owns an instance's partition polls its
 *   executions with DescribeExecution through one shared, rate-limited loop (backoff per
 *   execution, jitter, and a rate that halves on ThrottlingException); with `completion: 'push'`,
 *   Step Functions status events (as EventBridge delivers them) forwarded into NATS finish the
 *   execution at once and the poll only backs them up, rarely. Either way the outcome goes to the
 *   instance with a stable message id and applies only while the invocation is pending.
 *   A status event that reaches an engine not owning the instance is handed on to the owner.
 * - Leaving the invoking state stops the execution: at once through the task-cancel message, and
 *   in any case at the next poll, which finds the invocation gone from the record. A start in
 *   flight when the state is left is let finish and its execution stopped (`startAndRecord`).
 * - A call that gets no answer from AWS at all (the network is down: an edge site cut off from the
 *   cloud) is tried again with a capped backoff until AWS answers (`untilReachable`, the default;
 *   reachability.ts), inside the same attempt, so the task's retries are kept for AWS's answers.
 *   The attempt holds its task meanwhile (engine/effects/tasks.ts renews a running attempt's
 *   message), and a start whose request reached AWS but whose reply was lost is found again by
 *   the next try under the same name (the same ARN while it runs, else `ExecutionAlreadyExists`
 *   and adoption). A start that was already recorded (a task run again after its hand-over) calls
 *   nothing.
 */
import { createHash } from 'node:crypto';
import { DescribeExecutionCommand, StartExecutionCommand, StopExecutionCommand, type DescribeExecutionCommandOutput } from '@aws-sdk/client-sfn';
import type { KV, KvWatchEntry } from '@nats-io/kv';
import type { Subscription } from '@nats-io/nats-core';
import { SpanKind } from '@opentelemetry/api';
import { z } from 'zod';
import { TerminalError, type ActivityContext } from '../../engine/internal.js';
import { ErrorCode, JetstateError } from '../../engine/internal.js';
import { BornSchema, DEFER, taskRefKey, type EngineExtension, type ExtensionHost, type TaskOutcome, type TaskRef } from '../../engine/internal.js';
import { contextOf, decodeJson, encodeJson, failSpan, type TraceCarrier } from '../../engine/internal.js';
import { createStepFunctionsClients, type StepFunctionsClients, type StepFunctionsClientsOptions, type StepFunctionsTarget } from './clients.js';
import { encodeStepFunctionsInput, sameInputIgnoringTrace } from './payload.js';
import { executionArnOf, executionName } from './execution-names.js';
import { isTerminal, outcomeOf, parseStatusEvent, type StatusDetail } from './execution-status.js';
import { PollRate } from './poll-rate.js';
import { NoAnswerError, describeError, isUnanswered, pause, untilAborted, type ReachPolicy } from './reachability.js';
import type { ResolvedStepFunctionsExecutionOptions } from './execution.js';

export const STEP_FUNCTIONS_EXTENSION = 'step-functions';

/** What the bucket keeps for each pending execution. */
const PendingSchema = z.object({
  ref: z.object({ workflow: z.string(), id: z.string(), invokeId: z.string(), token: z.number().int(), born: BornSchema }),
  executionArn: z.string(),
  target: z.object({ region: z.string().optional(), roleArn: z.string().optional(), externalId: z.string().optional() }),
  completion: z.enum(['poll', 'push']),
  pollIntervalMs: z.number(),
  maxPollIntervalMs: z.number(),
  startedAtMs: z.number(),
  trace: z.object({ traceparent: z.string(), tracestate: z.string().optional() }).optional(),
  /** Polls that get no answer from AWS wait at most this long (`untilReachable`); absent in entries written before it. */
  reach: z.object({ intervalMs: z.number(), maxIntervalMs: z.number() }).optional(),
  /** Recorded to be stopped (its start got no answer after the state was left): polled at once by whichever engine owns it. */
  stop: z.literal(true).optional(),
  /**
   * Written before StartExecution, under the name's predictable ARN: the execution may exist
   * while nothing else records it (the engine dies before its answer is recorded). Not polled
   * while its task is pending (a new attempt records the start); stopped once the task is gone.
   */
  starting: z.literal(true).optional(),
});
type Pending = z.infer<typeof PendingSchema>;

/** The region an execution's or a state machine's ARN names. */
const regionOfArn = (arn: string): string | undefined => /^arn:[^:]+:states:([^:]+):/.exec(arn)?.[1] || undefined;

/**
 * A pending entry as followed: the region it was started in is the one it is polled and stopped
 * in, whatever this engine's default. Entries written before the region was always kept take it
 * from their execution's ARN.
 */
function readPending(value: unknown): Pending | undefined {
  const parsed = PendingSchema.safeParse(value);
  if (!parsed.success) return undefined;
  const p = parsed.data;
  const region = p.target.region ?? regionOfArn(p.executionArn);
  return region && !p.target.region ? { ...p, target: { ...p.target, region } } : p;
}

/** An attempt cut short by the engine's stop while it waited for AWS: it waits for the task service to hand the task on. */
const CLOSING: unique symbol = Symbol('closing');

const keyOf = (executionArn: string): string => `x_${createHash('sha256').update(executionArn).digest('hex').slice(0, 40)}`;

export interface StepFunctionsOptions extends StepFunctionsClientsOptions {
  /** NATS subject where Step Functions status events arrive (completion 'push'); default `<namespace>.sfn.status`. */
  statusSubject?: string;
  /** Most DescribeExecution/StopExecution calls per second this engine makes (halved on throttling). Default 10. */
  maxRequestsPerSecond?: number;
  /** How often push-mode executions are polled anyway, in case an event was lost. Default 5 minutes. */
  pushFallbackPollMs?: number;
}

interface Tracked {
  key: string;
  pending: Pending;
  nextPollAtMs: number;
  intervalMs: number;
  busy: boolean;
  /** A terminal status event that reached this engine while another owned the instance: applied here once this engine owns it. */
  event?: StatusDetail | undefined;
}

/** How a status event reached this engine: from AWS through the queue group, or handed on by another engine. */
type Via = 'status' | 'route';

/** Counts of the adapter's calls, for tests and benchmarks. */
export interface StepFunctionsStats {
  starts: number;
  describes: number;
  stops: number;
  throttled: number;
  completed: number;
  /** Calls that got no answer from AWS at all (network errors, timeouts). */
  unanswered: number;
  /** Executions followed (their start recorded), not counting starts under way. */
  pending: number;
  /** Current allowed rate of polls, per second. */
  rate: number;
}

/**
 * The engine extension behind `stepFunctionsExecution`: starts executions, follows them, and
 * delivers their outcomes. One per engine.
 */
export class StepFunctionsExtension implements EngineExtension {
  readonly name = STEP_FUNCTIONS_EXTENSION;
  private host: ExtensionHost | undefined;
  private clients: StepFunctionsClients | undefined;
  private pollClients: StepFunctionsClients | undefined;
  private bucket: KV | undefined;
  private readonly tracked = new Map<string, Tracked>();
  private readonly byRef = new Map<string, string>();
  private watchStop: (() => void) | undefined;
  private statusSub: Subscription | undefined;
  private routeSub: Subscription | undefined;
  private routeSubject = '';
  private unsubscribeCancel: (() => void) | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  /** Aborts StartExecution calls when the engine stops (and only then); a new one at each start. */
  private closing = new AbortController();
  /** Task cancels of the last minute whose execution was not known here yet, by task. */
  private readonly cancels = new Map<string, number>();
  private readonly rate: PollRate;
  private readonly counts = { starts: 0, describes: 0, stops: 0, throttled: 0, completed: 0, unanswered: 0 };
  /** Status events for executions not (yet) known here: a fast execution can end before its start is recorded. */
  private readonly early = new Map<string, { data: Uint8Array; via: Via; atMs: number }>();

  constructor(private readonly options: StepFunctionsOptions) {
    const maxRate = options.maxRequestsPerSecond ?? 10;
    if (!(maxRate > 0)) throw new JetstateError(ErrorCode.InvalidOptions, 'stepFunctions: maxRequestsPerSecond must be positive');
    this.rate = new PollRate(maxRate);
  }

  stats(): StepFunctionsStats {
    let pending = 0;
    for (const t of this.tracked.values()) if (!t.pending.starting) pending++;
    return { ...this.counts, pending, rate: this.rate.current };
  }

  async start(host: ExtensionHost): Promise<void> {
    // Started again after a stop (the engine's start tried again): what the watch knew comes back with it.
    this.closing = new AbortController();
    this.tracked.clear();
    this.byRef.clear();
    this.host = host;
    const { statusSubject, maxRequestsPerSecond: _r, pushFallbackPollMs: _p, ...clientOptions } = this.options;
    this.clients = createStepFunctionsClients({ logger: host.logger, ...clientOptions });
    // Polls see throttling themselves (no hidden SDK retries), so the loop can slow down.
    this.pollClients = createStepFunctionsClients({ logger: host.logger, ...clientOptions, maxAttempts: 1 });
    this.bucket = await host.bucket('sfn');
    // The last value of every key, then changes: every engine knows every pending execution.
    const watcher = await this.bucket.watch();
    let stopped = false;
    this.watchStop = () => {
      stopped = true;
      watcher.stop();
    };
    void (async () => {
      for await (const e of watcher) {
        if (stopped) break;
        this.onWatch(e);
      }
    })().catch((e: Error) => host.logger.warn(`step-functions: watching pending executions stopped (${e.message})`));
    this.unsubscribeCancel = host.onTaskCancel((ref) => {
      const refKey = taskRefKey(ref);
      const key = this.byRef.get(refKey);
      const t = key ? this.tracked.get(key) : undefined;
      if (!t) {
        // Its record may still be on its way here (the watch): the owner polls it once it arrives.
        this.cancels.set(refKey, Date.now());
        return;
      }
      if (host.owns(ref.workflow, ref.id)) this.spawn(this.stopTracked(t, 'the invoking state was exited'));
    });
    // Status events from AWS reach one engine of the queue group; it hands those of instances it
    // does not own to every engine on the route subject, where the owner takes them.
    this.statusSub = host.nc.subscribe(statusSubject ?? `${host.namespace}.sfn.status`, {
      queue: `${host.namespace}_sfn_status`,
      callback: (err, msg) => {
        if (!err) this.spawn(this.onStatusEvent(msg.data, 'status'));
      },
    });
    this.routeSubject = `${host.namespace}.sfn.route`;
    this.routeSub = host.nc.subscribe(this.routeSubject, {
      callback: (err, msg) => {
        if (!err) this.spawn(this.onStatusEvent(msg.data, 'route'));
      },
    });
    this.ticker = setInterval(() => this.tick(), 100);
  }

  async stop(): Promise<void> {
    clearInterval(this.ticker);
    this.closing.abort(new Error('the engine is closing'));
    this.statusSub?.unsubscribe();
    this.routeSub?.unsubscribe();
    this.unsubscribeCancel?.();
    this.watchStop?.();
    await Promise.all([...this.inFlight]);
    this.clients?.destroy();
    this.pollClients?.destroy();
  }

  /**
   * The task attempt: start (or adopt) the execution, record it as pending, defer the outcome.
   * Leaving the invoking state aborts the attempt (`ctx.signal`), but not its StartExecution: a
   * request that may have reached AWS is let finish, and the execution it started is stopped (see
   * `startAndRecord`). The engine's stop waits for it.
   *
   * An attempt that was waiting for AWS when the engine began to stop neither fails nor counts:
   * it stays open until the task service ends it as interrupted (after its drain), and another
   * engine, or this one when it comes back, takes the task over.
   */
  begin(ctx: ActivityContext<unknown>, o: ResolvedStepFunctionsExecutionOptions): Promise<typeof DEFER> {
    const run = this.startAndRecord(ctx, o);
    this.keep(run);
    return run.then((r) => (r === CLOSING ? untilAborted(ctx.signal) : r));
  }

  private async startAndRecord(ctx: ActivityContext<unknown>, o: ResolvedStepFunctionsExecutionOptions): Promise<typeof DEFER | typeof CLOSING> {
    const host = this.requireHost();
    const ref = ctx.task;
    const name = executionName(ref, { namespace: host.namespace, prefix: o.name });
    let input = o.input ? o.input(ctx.input) : ctx.input;
    if (o.traceContext && ctx.trace && isPlainObject(input)) input = { ...input, _jetstate: { ...ctx.trace } };
    let json: string;
    try {
      json = encodeStepFunctionsInput(input ?? {}, `input of the Step Functions execution '${name}' (workflow '${ref.workflow}' instance '${ref.id}')`);
    } catch (e) {
      throw new TerminalError((e as Error).message); // retrying cannot shrink it
    }
    // The state machine's region unless the stage names one, recorded with the execution: an
    // engine with another default region follows it there.
    const target: StepFunctionsTarget = {
      region: o.region ?? regionOfArn(o.stateMachineArn) ?? this.options.region,
      ...(o.roleArn ? { roleArn: o.roleArn } : {}),
      ...(o.externalId ? { externalId: o.externalId } : {}),
    };
    const client = this.clients!.get(target);
    const predictable = { executionArn: executionArnOf(o.stateMachineArn, name), target, trace: ctx.trace };
    // Started and recorded already: this task ran again after its hand-over to the tasks stream
    // (or a redelivery) while its execution is followed. Nothing to call.
    if (await this.recorded(predictable.executionArn, ref)) return DEFER;
    const reach: ReachPolicy | undefined = o.untilReachable ? { intervalMs: o.reachIntervalMs, maxIntervalMs: o.maxReachIntervalMs } : undefined;
    const stage = { ref, trace: ctx.trace, target, reach, callTimeoutMs: o.startTimeoutMs, attempt: ctx.signal };
    const pendingOf = (executionArn: string): Pending => ({
      ref,
      executionArn,
      target,
      completion: o.completion,
      pollIntervalMs: o.pollIntervalMs,
      maxPollIntervalMs: o.maxPollIntervalMs,
      startedAtMs: Date.now(),
      ...(ctx.trace ? { trace: ctx.trace } : {}),
      ...(reach ? { reach } : {}),
    });
    // The state was left while a start or an adoption was under way: the execution this invocation's
    // name may have is recorded as pending, so the engine that owns the instance stops it (its poll
    // finds the task gone), trying until AWS answers, also once this engine has stopped; one that
    // never started is fine to stop.
    const stopIfLeft = async (): Promise<void> => {
      if (ctx.signal.aborted && (await host.taskState(ref)) === 'gone') await this.record({ ...pendingOf(predictable.executionArn), stop: true });
    };
    // No execution can exist under the name (AWS refused the start, or the name is another input's):
    // the entry written before the start goes, so nothing stops an execution this attempt did not make.
    const notStarted = (): Promise<void> => this.forget(keyOf(predictable.executionArn));
    // Before the start: an engine that dies once the start reached AWS leaves this entry, and the
    // execution is stopped when the state is left before a new attempt records it.
    await this.record({ ...pendingOf(predictable.executionArn), starting: true });
    let executionArn: string;
    try {
      // Not aborted with the attempt: a request cut short may still have started the execution,
      // and then nothing would know of it. Only the engine's stop (and, while waiting for AWS to
      // answer, `startTimeoutMs`: the next try finds the execution by its name) cuts it short.
      const out = await this.send(stage, 'StartExecution', (abortSignal) => {
        this.counts.starts++;
        return client.send(new StartExecutionCommand({ stateMachineArn: o.stateMachineArn, name, input: json }), { abortSignal: abortSignal as never });
      });
      if (out === CLOSING) return CLOSING;
      executionArn = out.executionArn!;
    } catch (e) {
      const err = e as Error;
      if (err.name === 'ExecutionAlreadyExists') {
        executionArn = predictable.executionArn;
        let existing;
        try {
          existing = await this.send(stage, 'DescribeExecution', (abortSignal) =>
            client.send(new DescribeExecutionCommand({ executionArn }), { abortSignal: abortSignal as never }),
          );
        } catch (e2) {
          await stopIfLeft();
          throw e2;
        }
        if (existing === CLOSING) return CLOSING;
        // The trace context differs between attempts (each has its own span): compare without it.
        if (!sameInputIgnoringTrace(existing.input, json)) {
          await notStarted();
          throw new TerminalError(
            `a Step Functions execution named '${name}' already exists with a different input; it was not adopted (was the workflow's input mapping changed?)`,
          );
        }
      } else {
        // AWS refused the start itself: no execution exists, and retrying cannot change that.
        const refused = [
          'StateMachineDoesNotExist',
          'StateMachineDeleting',
          'InvalidArn',
          'InvalidName',
          'InvalidExecutionInput',
          'ValidationException',
          'AccessDeniedException',
        ].includes(err.name);
        // The start failed otherwise: it may still have reached AWS.
        if (!refused) await stopIfLeft();
        if (refused) {
          await notStarted();
          throw new TerminalError(`StartExecution of '${o.stateMachineArn}' failed: ${err.name}: ${err.message}`);
        }
        throw e; // throttling, 5xx (and the network without untilReachable): the task retries with backoff
      }
    }
    const pending = pendingOf(executionArn);
    if (executionArn !== predictable.executionArn) await notStarted();
    const key = await this.record(pending);
    host.logger.debug('step-functions: execution pending', { executionArn, workflow: ref.workflow, id: ref.id });
    // A cancel that came before this record found nothing to stop (the attempt was aborted, or had
    // not begun to run); without this check push mode would notice only at its back-up poll.
    if ((await host.taskState(ref)) === 'gone') {
      const t = this.tracked.get(key);
      if (t) await this.stopTracked(t, 'the invoking state was exited');
      else await this.stopExecution(pending, 'the invoking state was exited');
    }
    return DEFER;
  }

  /**
   * One call of a stage. Without a reach policy, one try (the old behaviour: its error is the
   * attempt's). With one, a call that gets no answer from AWS is tried again after a wait that
   * doubles up to the policy's maximum, with a warning each time, until AWS answers (its answer,
   * or its error, is returned or thrown as usual); each try is cut short after `callTimeoutMs`.
   * The wait ends early when the attempt is aborted (the state was left: the last error is
   * thrown) or the engine stops (`CLOSING`, nothing counts against the task).
   */
  private async send<T>(
    stage: {
      ref: TaskRef;
      trace: TraceCarrier | undefined;
      target: StepFunctionsTarget;
      reach: ReachPolicy | undefined;
      callTimeoutMs: number;
      attempt: AbortSignal;
    },
    action: string,
    fn: (abortSignal: AbortSignal) => Promise<T>,
  ): Promise<T | typeof CLOSING> {
    const { ref, trace, target, reach } = stage;
    if (!reach) return this.call(action, trace, target, () => fn(this.closing.signal));
    const host = this.requireHost();
    let waitMs = reach.intervalMs;
    for (let tries = 1; ; tries++) {
      if (this.closing.signal.aborted) return CLOSING;
      const timeout = AbortSignal.timeout(stage.callTimeoutMs);
      let error: unknown;
      try {
        const out = await this.call(action, trace, target, async () => {
          try {
            return await fn(AbortSignal.any([this.closing.signal, timeout]));
          } catch (e) {
            if (timeout.aborted && !this.closing.signal.aborted) throw new NoAnswerError(`no answer within ${stage.callTimeoutMs} ms`, { cause: e });
            throw e;
          }
        });
        if (tries > 1) host.logger.info(`step-functions: stage '${ref.invokeId}' of ${ref.workflow} '${ref.id}': AWS answered ${action} after ${tries} tries`);
        return out;
      } catch (e) {
        if (this.closing.signal.aborted) return CLOSING;
        if (!isUnanswered(e)) throw e; // AWS answered: the caller's policy
        error = e;
      }
      if (stage.attempt.aborted) throw error;
      const delayMs = jitter(waitMs);
      host.logger.warn(
        `step-functions: stage '${ref.invokeId}' of ${ref.workflow} '${ref.id}': ${action} got no answer from AWS (${describeError(error)}); ` +
          `trying again in ${delayMs} ms (try ${tries}; the task's retries are kept for AWS's answers)`,
      );
      await pause(delayMs, [stage.attempt, this.closing.signal]);
      if (this.closing.signal.aborted) return CLOSING;
      if (stage.attempt.aborted) throw error;
      waitMs = Math.min(reach.maxIntervalMs, waitMs * 2);
    }
  }

  /** True when this invocation's execution is recorded as pending already (it is then followed here too). */
  private async recorded(executionArn: string, ref: TaskRef): Promise<boolean> {
    const key = keyOf(executionArn);
    const entry = await this.bucket!.get(key).catch(() => null);
    if (!entry || entry.operation !== 'PUT') return false;
    const pending = readPending(safeJson(entry.value));
    if (!pending || pending.starting || taskRefKey(pending.ref) !== taskRefKey(ref)) return false;
    this.track(key, pending);
    return true;
  }

  /** Records an execution as pending (every engine with the extension learns it) and follows it here. */
  private async record(pending: Pending): Promise<string> {
    const key = keyOf(pending.executionArn);
    await this.bucket!.put(key, encodeJson(pending));
    this.track(key, pending);
    return key;
  }

  /** Removes a pending entry this attempt wrote and stops following it. */
  private async forget(key: string): Promise<void> {
    await this.bucket!.delete(key);
    this.untrack(key);
  }

  private requireHost(): ExtensionHost {
    if (!this.host) throw new JetstateError(ErrorCode.Closed, 'the step-functions extension is not started; pass it in createEngine({ extensions })');
    return this.host;
  }

  private async load(key: string): Promise<void> {
    const entry = await this.bucket!.get(key).catch(() => null);
    if (entry && entry.operation === 'PUT') this.onWatch(entry as unknown as KvWatchEntry);
  }

  private onWatch(e: KvWatchEntry): void {
    if (e.operation !== 'PUT') {
      this.untrack(e.key);
      return;
    }
    const pending = readPending(safeJson(e.value));
    if (!pending) {
      this.host?.logger.warn(`step-functions: pending entry '${e.key}' is unreadable; ignored`);
      return;
    }
    this.track(e.key, pending);
  }

  private track(key: string, pending: Pending): void {
    const known = this.tracked.get(key);
    if (known) {
      // The start recorded over the entry written before it, or a stop recorded: followed as now written.
      if ((known.pending.starting && !pending.starting) || (pending.stop && !known.pending.stop)) {
        known.pending = pending;
        known.intervalMs = pending.completion === 'push' ? this.fallbackMs() : pending.pollIntervalMs;
        known.nextPollAtMs = pending.stop ? 0 : Date.now() + jitter(known.intervalMs);
        this.takeEarly(key);
      }
      return;
    }
    const first = pending.completion === 'push' ? this.fallbackMs() : pending.pollIntervalMs;
    this.tracked.set(key, { key, pending, intervalMs: first, nextPollAtMs: Date.now() + jitter(first), busy: false });
    const refKey = taskRefKey(pending.ref);
    this.byRef.set(refKey, key);
    // The poll finds the task gone and stops the execution: at the next tick, not after a poll
    // interval (minutes in push mode).
    if (this.cancels.delete(refKey) || pending.stop) this.tracked.get(key)!.nextPollAtMs = 0;
    this.takeEarly(key);
  }

  /** A status event that came before the execution's start was recorded: handled now that it is. */
  private takeEarly(key: string): void {
    const early = this.early.get(key);
    if (!early || this.tracked.get(key)?.pending.starting) return;
    this.early.delete(key);
    if (Date.now() - early.atMs < 60_000) this.spawn(this.onStatusEvent(early.data, early.via));
  }

  private untrack(key: string): void {
    const t = this.tracked.get(key);
    if (!t) return;
    this.tracked.delete(key);
    this.byRef.delete(taskRefKey(t.pending.ref));
  }

  private fallbackMs(): number {
    return this.options.pushFallbackPollMs ?? 300_000;
  }

  private spawn(p: Promise<void>): void {
    const tracked = p.catch((e: Error) => this.host?.logger.warn(`step-functions: ${e.message}`)).finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  /** Waits for `p` in `stop()`; its errors are its caller's. */
  private keep(p: Promise<unknown>): void {
    const kept: Promise<void> = p
      .then(
        () => {},
        () => {},
      )
      .finally(() => this.inFlight.delete(kept));
    this.inFlight.add(kept);
  }

  private tick(): void {
    const host = this.host;
    if (!host) return;
    const now = Date.now();
    for (const [k, atMs] of this.cancels) {
      if (now - atMs <= 60_000 && this.cancels.size <= 10_000) break; // oldest first
      this.cancels.delete(k);
    }
    for (const t of this.tracked.values()) {
      if (t.busy || !host.owns(t.pending.ref.workflow, t.pending.ref.id)) continue;
      if (t.event) {
        // Handed on by the engine that got it, or kept here until this engine took the instance over.
        const d = t.event;
        t.event = undefined;
        t.busy = true;
        this.spawn(this.apply(t, d).finally(() => (t.busy = false)));
        continue;
      }
      if (t.nextPollAtMs > now) continue;
      if (!this.rate.take()) return;
      t.busy = true;
      this.spawn(this.poll(t).finally(() => (t.busy = false)));
    }
  }

  private async poll(t: Tracked): Promise<void> {
    const host = this.requireHost();
    const state = await host.taskState(t.pending.ref);
    if (state === 'gone') {
      // The instance left the invoking state (or finished) and the stop may have been missed, or
      // was recorded here because the start's answer was lost: stopped, or tried again later.
      await this.stopTracked(t, 'the invoking state was exited').catch((e: Error) => this.pollLater(t, 'StopExecution', e));
      return;
    }
    if (t.pending.starting) {
      // Its attempt is still under way (or comes back after its engine's death) and records the
      // start: nothing to ask AWS until then, and not found would not mean lost.
      t.intervalMs = Math.min(t.pending.maxPollIntervalMs, Math.round(t.intervalMs * 1.5));
      t.nextPollAtMs = Date.now() + jitter(t.intervalMs);
      return;
    }
    let out: DescribeExecutionCommandOutput;
    try {
      out = await this.call('DescribeExecution', t.pending.trace, t.pending.target, () => {
        this.counts.describes++;
        return this.pollClients!.get(t.pending.target).send(new DescribeExecutionCommand({ executionArn: t.pending.executionArn }));
      });
    } catch (e) {
      const err = e as Error;
      if (err.name === 'ExecutionDoesNotExist') {
        await this.finish(t, {
          ok: false,
          error: {
            name: 'ExecutionDoesNotExist',
            message: `the Step Functions execution ${t.pending.executionArn} no longer exists`,
            status: 'UNKNOWN',
            executionArn: t.pending.executionArn,
          },
        });
        return;
      }
      this.pollLater(t, 'DescribeExecution', err);
      return;
    }
    const outcome = outcomeOf(t.pending.executionArn, out.status, out.output, out.error, out.cause);
    if (outcome) {
      await this.finish(t, outcome);
      return;
    }
    const next = t.pending.completion === 'push' ? this.fallbackMs() : Math.min(t.pending.maxPollIntervalMs, Math.round(t.intervalMs * 1.5));
    t.intervalMs = next;
    t.nextPollAtMs = Date.now() + jitter(next);
  }

  /**
   * A call of a poll failed: slower after throttling; soon enough to notice AWS's return (at most
   * the reach maximum) when it gave no answer; else backing off up to the poll maximum.
   */
  private pollLater(t: Tracked, action: string, err: Error): void {
    const host = this.requireHost();
    const { ref, reach } = t.pending;
    if (err.name === 'ThrottlingException') {
      this.counts.throttled++;
      this.rate.throttled();
    } else if (reach && isUnanswered(err)) {
      t.intervalMs = Math.min(reach.maxIntervalMs, Math.max(reach.intervalMs, t.intervalMs * 2));
      t.nextPollAtMs = Date.now() + jitter(t.intervalMs);
      host.logger.warn(
        `step-functions: stage '${ref.invokeId}' of ${ref.workflow} '${ref.id}': ${action} of ${t.pending.executionArn} got no answer from AWS ` +
          `(${describeError(err)}); trying again in about ${t.intervalMs} ms`,
      );
      return;
    } else {
      host.logger.warn(`step-functions: ${action} of ${t.pending.executionArn} failed (${err.name}: ${err.message}); retrying`);
    }
    t.intervalMs = Math.min(t.pending.maxPollIntervalMs, t.intervalMs * 2);
    t.nextPollAtMs = Date.now() + jitter(t.intervalMs);
  }

  /**
   * A status event, from AWS (`via` 'status') or handed on by the engine that got it ('route').
   * The owner of the instance applies it; another engine that got it from AWS hands it on, and
   * every engine keeps it with the execution until the owner has finished it, so an owner that
   * takes the instance over later applies it at once.
   */
  private async onStatusEvent(data: Uint8Array, via: Via): Promise<void> {
    const d = parseStatusEvent(safeJson(data));
    if (!d) {
      this.host?.logger.warn('step-functions: a message on the status subject is not a Step Functions execution status event; ignored');
      return;
    }
    if (!isTerminal(d.status)) return; // RUNNING: nothing to do yet
    const host = this.requireHost();
    const key = keyOf(d.executionArn);
    let t = this.tracked.get(key);
    if (!t) {
      // The watch may not have caught up with a start made a moment ago on another engine.
      await this.load(key);
      t = this.tracked.get(key);
    }
    if (!t || t.pending.starting) {
      // Not ours, finished already, or ended before its start was recorded: keep it a minute.
      this.early.set(key, { data, via, atMs: Date.now() });
      if (this.early.size > 10_000) for (const [k, v] of this.early) if (Date.now() - v.atMs > 60_000 || this.early.size > 10_000) this.early.delete(k);
      return;
    }
    if (host.owns(t.pending.ref.workflow, t.pending.ref.id)) {
      await this.apply(t, d);
      return;
    }
    t.event = d;
    if (via === 'status') host.nc.publish(this.routeSubject, data);
  }

  /** Applies a terminal status event on the owning engine: its outcome, or a describe when it carries no output. */
  private async apply(t: Tracked, d: StatusDetail): Promise<void> {
    if (d.status === 'SUCCEEDED' && d.output === undefined) {
      t.nextPollAtMs = 0; // the event left the output out (too large), or wrote it as null: describe it
      return;
    }
    const outcome = outcomeOf(d.executionArn, d.status, d.output, d.error, d.cause);
    if (outcome) await this.finish(t, outcome);
  }

  private async finish(t: Tracked, outcome: TaskOutcome): Promise<void> {
    const host = this.requireHost();
    await host.completeTask(t.pending.ref, outcome, t.pending.trace);
    this.counts.completed++;
    await this.bucket!.delete(t.key).catch(() => {});
    this.untrack(t.key);
  }

  /** Stops a followed execution and forgets it. */
  private async stopTracked(t: Tracked, why: string): Promise<void> {
    await this.stopExecution(t.pending, why);
    await this.bucket!.delete(t.key).catch(() => {});
    this.untrack(t.key);
  }

  /** StopExecution; one that already ended, or never started, is fine. */
  private async stopExecution(p: { executionArn: string; target: StepFunctionsTarget; trace?: TraceCarrier | undefined }, why: string): Promise<void> {
    try {
      await this.call('StopExecution', p.trace, p.target, () => {
        this.counts.stops++;
        return this.clients!.get(p.target).send(new StopExecutionCommand({ executionArn: p.executionArn, error: 'jetstate.Exited', cause: why }));
      });
    } catch (e) {
      const err = e as Error;
      // Finished or gone already: nothing to stop. Anything else is retried at the next poll.
      if (err.name !== 'ExecutionDoesNotExist' && !/not running|already/i.test(err.message)) throw e;
    }
  }

  /** One Step Functions call as a client span, counted by action and outcome. */
  private async call<T>(action: string, trace: TraceCarrier | undefined, target: StepFunctionsTarget, fn: () => Promise<T>): Promise<T> {
    const tel = this.requireHost().telemetry;
    const span = tel.startSpan(
      `jetstate.stepfunctions ${action}`,
      SpanKind.CLIENT,
      {
        'rpc.system': 'aws-api',
        'rpc.service': 'StepFunctions',
        'rpc.method': action,
        'cloud.region': target.region ?? this.options.region,
      },
      contextOf(trace),
    );
    try {
      const out = await fn();
      tel.stepFunctionsCalls.add(1, { 'rpc.method': action, 'jetstate.outcome': 'ok' });
      return out;
    } catch (e) {
      if (isUnanswered(e)) this.counts.unanswered++;
      tel.stepFunctionsCalls.add(1, { 'rpc.method': action, 'jetstate.outcome': (e as Error).name });
      failSpan(span, e);
      throw e;
    } finally {
      span.end();
    }
  }
}

/** The engine extension for `stepFunctionsExecution`. Pass it in `createEngine({ extensions })`. */
export function stepFunctions(options: StepFunctionsOptions): StepFunctionsExtension {
  return new StepFunctionsExtension(options);
}

const jitter = (ms: number): number => Math.round(ms * (0.8 + Math.random() * 0.4));

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function safeJson(data: Uint8Array): unknown {
  try {
    return decodeJson(data);
  } catch {
    return undefined;
  }
}
