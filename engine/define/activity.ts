/**
 * `activity()`: promise logic that `invoke` can use and the engine runs durably, as a task on a
 * queue, with retries, a timeout and heartbeats. See tasks.ts for how it runs.
 */
import { fromPromise, type AnyStateMachine, type PromiseActorLogic } from 'xstate';
import { ErrorCode, JetstateError } from '../errors.js';
import { checkKeys } from './keys.js';
import type { TaskRef } from '../protocol/events.js';
import type { TraceCarrier } from '../telemetry/telemetry.js';

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  initialIntervalMs: number;
  backoffCoefficient: number;
  maxIntervalMs: number;
  /** Random spread of each interval, as a fraction of it (0.2: plus or minus 20%). */
  jitter: number;
}

export interface ActivityOptions {
  retry?: Partial<RetryPolicy>;
  /** One attempt may take at most this long; then its signal aborts and the attempt fails. */
  timeoutMs?: number;
  /**
   * When set, an attempt must call `heartbeat()` at least this often; a silent attempt fails. One
   * whose engine died is taken over by another engine after the tasks stream's acknowledgement
   * wait (the engine's `leaseTtlMs`, between 1 and 30 s).
   */
  heartbeatTimeoutMs?: number;
  /**
   * Engine extensions the activity uses (e.g. `['step-functions']`): an engine without them
   * leaves the task to a live engine that has them.
   */
  requires?: readonly string[];
  /**
   * Run in the process of the engine that owns the instance, right after the write that starts
   * it, without a round trip through the tasks stream (the default, unless `heartbeatTimeoutMs` is
   * set: an activity that heartbeats is long-running, and goes through the tasks stream at once).
   * A task run in process still leaves for the tasks stream when it runs longer than the engine's
   * `localHoldMs`, waits that long for a retry, or its engine closes.
   */
  inProcess?: boolean;
}

export interface ResolvedActivityOptions {
  retry: RetryPolicy;
  timeoutMs: number;
  heartbeatTimeoutMs: number | undefined;
  requires: readonly string[];
  inProcess: boolean;
}

export interface ActivityContext<TInput> {
  input: TInput;
  /** Aborts when the attempt times out, the invoking state is exited, or the engine closes. */
  signal: AbortSignal;
  /**
   * 1 for the first attempt. An attempt taken over from a dead engine counts too (except one that
   * ran in that engine's process and was cut short before it reached the tasks stream).
   */
  attempt: number;
  /** The same for every attempt of this invocation: pass it to the services you call. */
  idempotencyKey: string;
  /** Tells the engine the attempt is alive (needed with `heartbeatTimeoutMs`). */
  heartbeat(): void;
  /** Which invocation this is (the same for every attempt). */
  task: TaskRef;
  /** The W3C trace context of this attempt, to pass on to services that cannot read OpenTelemetry's context. */
  trace: TraceCarrier | undefined;
  /** An engine extension by name (e.g. 'step-functions'); a clear error when the engine has none. */
  extension<T>(name: string): T;
}

export type ActivityFunction<TInput, TOutput> = (context: ActivityContext<TInput>) => Promise<TOutput>;

/** Thrown by an activity, stops retries: the invocation fails at once. */
export class TerminalError extends JetstateError {
  constructor(message: string, options?: ErrorOptions) {
    super(ErrorCode.TaskFailed, message, options);
    this.name = 'TerminalError';
  }
}

const ACTIVITY = Symbol.for('jetstate.activity');

export interface ActivityDefinition {
  fn: ActivityFunction<unknown, unknown>;
  options: ResolvedActivityOptions;
}

const ACTIVITY_OPTIONS = ['retry', 'timeoutMs', 'heartbeatTimeoutMs', 'requires', 'inProcess'];
const RETRY_OPTIONS = ['maxAttempts', 'initialIntervalMs', 'backoffCoefficient', 'maxIntervalMs', 'jitter'] as const;

/**
 * Declares a durable task for `invoke`. Register it by name in `setup({ actors })`.
 *
 * @example
 * ```ts
 * setup({ actors: {
 *   reserveStock: activity(async ({ input, signal, idempotencyKey }) => {
 *     const res = await fetch(url, { method: 'POST', signal, headers: { 'Idempotency-Key': idempotencyKey } });
 *     if (res.status === 400) throw new TerminalError('rejected');
 *     return res.json();
 *   }, { retry: { maxAttempts: 5 }, timeoutMs: 10_000 }),
 * } })
 * ```
 */
export function activity<TInput = unknown, TOutput = unknown>(
  fn: ActivityFunction<TInput, TOutput>,
  options: ActivityOptions = {},
): PromiseActorLogic<TOutput, TInput> {
  if (typeof fn !== 'function') throw new JetstateError(ErrorCode.InvalidDefinition, 'activity(fn, options): fn must be an async function');
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw new JetstateError(
      ErrorCode.InvalidDefinition,
      'activity(fn, options): options must be an object such as { timeoutMs: 10_000, retry: { maxAttempts: 5 } }',
    );
  // A misspelt option would leave its default in place without a word ({ timeout: 5000 }: 60 s).
  checkKeys('activity options', '', options, ACTIVITY_OPTIONS);
  if (options.retry !== undefined) {
    if (typeof options.retry !== 'object' || options.retry === null || Array.isArray(options.retry))
      throw new JetstateError(ErrorCode.InvalidDefinition, 'activity options: retry must be an object such as { maxAttempts: 5 }');
    checkKeys('activity options', 'retry.', options.retry, RETRY_OPTIONS);
  }
  const retry: RetryPolicy = { maxAttempts: 3, initialIntervalMs: 1_000, backoffCoefficient: 2, maxIntervalMs: 60_000, jitter: 0.2, ...options.retry };
  const requires = options.requires ?? [];
  const number = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v);
  const checks: Array<[boolean, string]> = [
    [RETRY_OPTIONS.every((k) => number(retry[k])), `retry.${RETRY_OPTIONS.join(', retry.')} must be finite numbers`],
    [Number.isInteger(retry.maxAttempts) && retry.maxAttempts >= 1, 'retry.maxAttempts must be an integer of at least 1'],
    [retry.initialIntervalMs >= 0 && retry.maxIntervalMs >= retry.initialIntervalMs, 'retry intervals must be >= 0 with maxIntervalMs >= initialIntervalMs'],
    [retry.backoffCoefficient >= 1, 'retry.backoffCoefficient must be at least 1'],
    [retry.jitter >= 0 && retry.jitter < 1, 'retry.jitter must be in [0, 1)'],
    [options.timeoutMs === undefined || options.timeoutMs > 0, 'timeoutMs must be positive'],
    [options.timeoutMs === undefined || number(options.timeoutMs), 'timeoutMs must be a number of milliseconds'],
    [options.heartbeatTimeoutMs === undefined || options.heartbeatTimeoutMs >= 100, 'heartbeatTimeoutMs must be at least 100'],
    [options.heartbeatTimeoutMs === undefined || number(options.heartbeatTimeoutMs), 'heartbeatTimeoutMs must be a number of milliseconds'],
    [
      Array.isArray(requires) && requires.every((x) => typeof x === 'string' && x.length > 0),
      "requires must be a list of extension names such as ['step-functions']",
    ],
    [options.inProcess === undefined || typeof options.inProcess === 'boolean', 'inProcess must be true or false'],
  ];
  for (const [ok, message] of checks) if (!ok) throw new JetstateError(ErrorCode.InvalidDefinition, `activity options: ${message}`);
  const logic = fromPromise<TOutput, TInput>(async () => {
    throw new Error('an activity runs in a jetstate engine as a durable task, not as an in-memory XState actor');
  });
  const definition: ActivityDefinition = {
    fn: fn as ActivityFunction<unknown, unknown>,
    options: {
      retry,
      timeoutMs: options.timeoutMs ?? 60_000,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs,
      requires: Object.freeze([...requires]),
      inProcess: options.inProcess ?? options.heartbeatTimeoutMs === undefined,
    },
  };
  Object.defineProperty(logic, ACTIVITY, { value: definition });
  return logic;
}

/** The activities a machine registers in `setup({ actors })`, by name. */
export function activitiesOf(machine: AnyStateMachine): Map<string, ActivityDefinition> {
  const out = new Map<string, ActivityDefinition>();
  for (const [name, logic] of Object.entries((machine.implementations?.actors ?? {}) as Record<string, unknown>)) {
    const def = (logic as { [ACTIVITY]?: ActivityDefinition } | null)?.[ACTIVITY];
    if (def) out.set(name, def);
  }
  return out;
}

/** The wait before attempt `attempt + 1`, with jitter. */
export function backoffMs(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const base = Math.min(policy.maxIntervalMs, policy.initialIntervalMs * policy.backoffCoefficient ** (attempt - 1));
  return Math.max(0, Math.round(base * (1 + policy.jitter * (2 * random() - 1))));
}
