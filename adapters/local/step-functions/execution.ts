/**
 * Runs one execution with the interpreter and keeps its record: status, output or error,
 * history, and the status events.
 *
 * Every Task state is routed through a local handler (the interpreter's
 * `taskResourceLocalHandlers`, keyed by state name), which decides by the state's Resource:
 * activities wait for a worker (GetActivityTask), Lambda resources call the in-process
 * `taskHandlers`, `.waitForTaskToken` waits for SendTaskSuccess/Failure, and anything else fails
 * the execution with an error that names the resource. Failures that sfn-local itself causes
 * (unsupported resource, missing handler, closed execution) are `States.Runtime`, which no Retry
 * or Catch matches, as on AWS: a definition never silently takes a path it would not take there.
 */
import { randomUUID } from 'node:crypto';
import type { Scope } from './arns.js';
import type { PreparedDefinition, TaskStateInfo } from './definition.js';
import type { ExecutionSnapshot, ExecutionStatus } from './events.js';
import { ExecutionAbortedError, ExecutionError, ExecutionTimeoutError, StateMachine, currentRun } from './interpreter.js';
import { newTaskToken, type TaskBoard, type TaskOutcome } from './tasks.js';

/** The most AWS passes between states, and takes as execution input or task output. */
export const MAX_PAYLOAD_BYTES = 256 * 1024;

/** What a Lambda task handler gets besides its payload. */
export interface TaskHandlerContext {
  executionArn: string;
  stateName: string;
  /** The Task state's Resource, e.g. `arn:aws:states:::lambda:invoke.waitForTaskToken`. */
  resource: string;
  functionName: string;
  /** The task token, for `.waitForTaskToken` tasks (also wherever Parameters put `$$.Task.Token`). */
  taskToken?: string | undefined;
  /** Aborted when the execution ends (stopped, timed out, failed elsewhere) or the endpoint closes. */
  signal: AbortSignal;
}

/**
 * An in-process stand-in for a Lambda function, called with the Payload (`lambda:invoke`) or the
 * state's effective input (a function ARN). Its return value is the function's result; what it
 * throws fails the task with the error's `name` (or `error` field) and message, as a Lambda
 * error would. For `.waitForTaskToken` the return value is ignored and the task waits for its
 * token to be answered.
 */
export type TaskHandler = (payload: unknown, context: TaskHandlerContext) => unknown;

export interface HistoryItem {
  timestampMs: number;
  /**
   * `execution`: started/ended events; `state`: the interpreter's state events, which arrive
   * asynchronously but in order; `task`: this side's task events, which belong after the latest
   * entry into their state.
   */
  source: 'execution' | 'state' | 'task';
  /** Arrival order among all items. */
  seq: number;
  type: string;
  stateName?: string | undefined;
  details?: Record<string, unknown> | undefined;
  /** The interpreter run (the execution, a Map iteration, a Parallel branch) it belongs to; see interpreter.ts. */
  run?: number | undefined;
}

/**
 * The history in AWS's order. The interpreter reports state events through an async log, so a
 * task event can be recorded before the state entry it follows; each task event is placed right
 * after the latest entry into its state at or before its time.
 */
export function orderedHistory(items: HistoryItem[]): HistoryItem[] {
  const states = items.filter((h) => h.source === 'state');
  const key = (h: HistoryItem): [number, number] => {
    if (h.source === 'execution') return h.type === 'ExecutionStarted' ? [Number.NEGATIVE_INFINITY, 0] : [Number.POSITIVE_INFINITY, h.seq];
    if (h.source === 'state') return [h.timestampMs, h.seq];
    const entered = states.filter((s) => s.stateName === h.stateName && s.run === h.run && s.type.endsWith('Entered') && s.timestampMs <= h.timestampMs).at(-1);
    return [h.timestampMs, entered ? entered.seq + 0.5 + h.seq / 1e9 : Number.MAX_SAFE_INTEGER];
  };
  const keyed = items.map((h) => ({ h, k: key(h) }));
  keyed.sort((a, b) => a.k[0] - b.k[0] || a.k[1] - b.k[1]);
  return keyed.map(({ h }) => h);
}

export interface ExecutionRecord extends ExecutionSnapshot {
  /** Order of creation, newest highest; ListExecutions pages by it. */
  seq: number;
  stateMachineName: string;
  roleArn: string;
  traceHeader?: string | undefined;
  history: HistoryItem[];
}

export interface RunnerContext {
  scope: Scope;
  board: TaskBoard;
  taskHandlers: Record<string, TaskHandler>;
  activityExists(activityArn: string): boolean;
  /** Called after the record changed status (RUNNING is announced by the caller). */
  onFinished(record: ExecutionRecord): void;
}

export interface RunningExecution {
  /** Stops the execution now: ABORTED with this error and cause (StopExecution). */
  stop(error?: string, cause?: string): void;
}

/** A task failure that Retry and Catch see, named like the error AWS would report. */
class TaskError extends Error {
  constructor(name: string, cause: string) {
    super(cause);
    this.name = name;
  }
}

/** A failure sfn-local causes; the interpreter lets no Retry or Catch match it (States.Runtime). */
class RuntimeFailure extends Error {
  override readonly name = 'States.Runtime';
  get isRetryable(): boolean {
    return false;
  }
  get isCatchable(): boolean {
    return false;
  }
}

type ResourceKind =
  | { kind: 'activity'; activityArn: string }
  | { kind: 'lambda-invoke'; waitForTaskToken: boolean }
  | { kind: 'lambda-function'; functionName: string }
  | { kind: 'unsupported' };

const ACTIVITY = /^arn:aws:states:[a-z0-9-]+:\d{12}:activity:.+$/;
const LAMBDA_FUNCTION = /^arn:aws:lambda:[a-z0-9-]+:\d{12}:function:([^:]+)(?::[^:]+)?$/;

function classify(resource: string): ResourceKind {
  if (ACTIVITY.test(resource)) return { kind: 'activity', activityArn: resource };
  if (resource === 'arn:aws:states:::lambda:invoke') return { kind: 'lambda-invoke', waitForTaskToken: false };
  if (resource === 'arn:aws:states:::lambda:invoke.waitForTaskToken') return { kind: 'lambda-invoke', waitForTaskToken: true };
  const fn = LAMBDA_FUNCTION.exec(resource);
  if (fn) return { kind: 'lambda-function', functionName: fn[1]! };
  return { kind: 'unsupported' };
}

/** The function name in any form Lambda accepts: name, name:alias, partial or full ARN. */
function functionNameOf(value: unknown): string | null {
  if (typeof value !== 'string' || value === '') return null;
  const arn = /(?:^|:)function:([^:]+)/.exec(value);
  if (arn) return arn[1]!;
  return value.split(':')[0] || null;
}

const toJson = (value: unknown): unknown => JSON.parse(JSON.stringify(value ?? null)) as unknown;

/** How a handler's throw is reported: `error`/`message` of a TaskFailedError-like, else like Lambda. */
function toTaskError(e: unknown): TaskError {
  if (e instanceof Error) {
    const named = (e as { error?: unknown }).error;
    if (typeof named === 'string' && named !== '') return new TaskError(named, e.message);
    return new TaskError(e.name || 'Error', JSON.stringify({ errorMessage: e.message, errorType: e.name || 'Error' }));
  }
  return new TaskError('Error', JSON.stringify({ errorMessage: String(e), errorType: 'Error' }));
}

/** Finds a token minted for `$$.Task.Token` in the (Parameters-resolved) input of a task. */
function claimToken(value: unknown, minted: Set<string>): string | undefined {
  if (typeof value === 'string') return minted.delete(value) ? value : undefined;
  if (Array.isArray(value)) {
    for (const v of value) {
      const t = claimToken(v, minted);
      if (t) return t;
    }
  } else if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) {
      const t = claimToken(v, minted);
      if (t) return t;
    }
  }
  return undefined;
}

const STATE_EVENT_PREFIX: Record<string, string> = {
  Task: 'TaskState',
  Pass: 'PassState',
  Choice: 'ChoiceState',
  Wait: 'WaitState',
  Succeed: 'SucceedState',
  Fail: 'FailState',
  Map: 'MapState',
  Parallel: 'ParallelState',
};

/**
 * Starts running `record` (already RUNNING, its ExecutionStarted event recorded) with the
 * machine's definition. Returns at once; the record is updated as the execution goes.
 */
export function runExecution(
  ctx: RunnerContext,
  record: ExecutionRecord,
  machine: { name: string; arn: string; prepared: PreparedDefinition },
  input: unknown,
): RunningExecution {
  const aborter = new AbortController();
  const minted = new Set<string>();
  let seq = record.history.length;
  const add = (item: Omit<HistoryItem, 'seq'>): void => void record.history.push({ ...item, seq: seq++ });
  // A task's events belong to the run that called its handler (`run` given where a callback comes from elsewhere).
  const push = (stateName: string, type: string, details?: Record<string, unknown>, run = currentRun()): void => {
    if (record.status === 'RUNNING') add({ timestampMs: Date.now(), source: 'task', stateName, type, details, run });
  };

  function finish(status: Exclude<ExecutionStatus, 'RUNNING'>, fields: { output?: string; error?: string | undefined; cause?: string | undefined }): void {
    if (record.status !== 'RUNNING') return;
    const details: Record<string, unknown> = {};
    if (fields.error !== undefined) details['error'] = fields.error;
    if (fields.cause !== undefined) details['cause'] = fields.cause;
    const end: Record<typeof status, [string, string, Record<string, unknown>]> = {
      SUCCEEDED: ['ExecutionSucceeded', 'executionSucceededEventDetails', { output: fields.output, outputDetails: { truncated: false } }],
      FAILED: ['ExecutionFailed', 'executionFailedEventDetails', details],
      TIMED_OUT: ['ExecutionTimedOut', 'executionTimedOutEventDetails', details],
      ABORTED: ['ExecutionAborted', 'executionAbortedEventDetails', details],
    };
    const [type, key, value] = end[status];
    add({ timestampMs: Date.now(), source: 'execution', type, details: { [key]: value } });
    record.status = status;
    record.stopDate = new Date();
    record.output = fields.output;
    record.error = fields.error;
    record.cause = fields.cause;
    aborter.abort();
    ctx.board.closeExecution(record.executionArn);
    minted.clear();
    ctx.onFinished(record);
  }

  /** What a waiting task's end means for the state: a result, a Retry/Catch-able error, or nothing. */
  async function outcomeOf(
    stateName: string,
    outcome: TaskOutcome,
    events: { succeeded: string; failed: string; timedOut: string; key: string },
  ): Promise<unknown> {
    if (outcome.ok) {
      push(stateName, events.succeeded, { [`${events.key}SucceededEventDetails`]: { output: outcome.output } });
      return JSON.parse(outcome.output) as unknown;
    }
    if (outcome.closed) throw new RuntimeFailure(outcome.cause);
    if (outcome.timedOut) {
      push(stateName, events.timedOut, { [`${events.key}TimedOutEventDetails`]: { error: outcome.error, cause: outcome.cause } });
      // The interpreter fails the state on TimeoutSeconds itself (its own States.Timeout, which
      // States.TaskFailed catchers rightly skip); this side only closed the token.
      if (outcome.timedOut === 'task') return new Promise<never>(() => {});
      throw new TaskError(outcome.error, outcome.cause);
    }
    push(stateName, events.failed, { [`${events.key}FailedEventDetails`]: { error: outcome.error, cause: outcome.cause } });
    throw new TaskError(outcome.error, outcome.cause);
  }

  async function runTask(info: TaskStateInfo, input: unknown): Promise<unknown> {
    if (record.status !== 'RUNNING') throw new RuntimeFailure('the execution is closed');
    const target = classify(info.resource);
    const where = `state '${info.name}' of ${record.executionArn}`;
    if (target.kind === 'activity') {
      if (!ctx.activityExists(target.activityArn)) {
        throw new RuntimeFailure(`activity '${target.activityArn}' does not exist (${where}); create it with CreateActivity before the execution reaches it`);
      }
      const token = newTaskToken();
      const inputJson = JSON.stringify(input ?? null);
      const run = currentRun();
      push(info.name, 'ActivityScheduled', {
        activityScheduledEventDetails: {
          resource: info.resource,
          input: inputJson,
          timeoutInSeconds: info.timeoutSeconds,
          heartbeatInSeconds: info.heartbeatSeconds,
        },
      });
      const outcome = await ctx.board.schedule(token, {
        executionArn: record.executionArn,
        stateName: info.name,
        activityArn: target.activityArn,
        input: inputJson,
        heartbeatSeconds: info.heartbeatSeconds,
        timeoutSeconds: info.timeoutSeconds,
        onStarted: (workerName) => push(info.name, 'ActivityStarted', { activityStartedEventDetails: { workerName } }, run),
      });
      return outcomeOf(info.name, outcome, { succeeded: 'ActivitySucceeded', failed: 'ActivityFailed', timedOut: 'ActivityTimedOut', key: 'activity' });
    }
    if (target.kind === 'unsupported') {
      throw new RuntimeFailure(
        `sfn-local does not run the Task resource '${info.resource}' (${where}): it runs activities and Lambda resources ` +
          `(arn:aws:states:::lambda:invoke, lambda:invoke.waitForTaskToken, arn:aws:lambda:...:function:NAME) with a taskHandler; other service integrations are not emulated`,
      );
    }
    const params = (typeof input === 'object' && input !== null ? input : {}) as Record<string, unknown>;
    const functionName = target.kind === 'lambda-function' ? target.functionName : functionNameOf(params['FunctionName']);
    if (!functionName) throw new RuntimeFailure(`${where}: ${info.resource} needs Parameters.FunctionName`);
    const handler = ctx.taskHandlers[functionName];
    if (!handler) {
      throw new RuntimeFailure(
        `sfn-local does not run the Lambda function '${functionName}' of Task resource '${info.resource}' (${where}): no taskHandler named '${functionName}'; pass taskHandlers: { '${functionName}': async (payload) => result } to startLocalStepFunctions`,
      );
    }
    const payload = target.kind === 'lambda-function' ? input : (params['Payload'] ?? {});
    const resourceType = 'lambda';
    const resource = target.kind === 'lambda-function' ? info.resource : info.resource.replace('arn:aws:states:::lambda:', '');
    const eventKey = target.kind === 'lambda-function' ? 'lambdaFunction' : 'task';
    const eventPrefix = target.kind === 'lambda-function' ? 'LambdaFunction' : 'Task';
    push(info.name, `${eventPrefix}Scheduled`, {
      [`${eventKey}ScheduledEventDetails`]:
        target.kind === 'lambda-function'
          ? { resource, input: JSON.stringify(input ?? null) }
          : { resourceType, resource, region: ctx.scope.region, parameters: JSON.stringify(params) },
    });
    const handlerContext = (taskToken?: string): TaskHandlerContext => ({
      executionArn: record.executionArn,
      stateName: info.name,
      resource: info.resource,
      functionName,
      taskToken,
      signal: aborter.signal,
    });
    const events = { succeeded: `${eventPrefix}Succeeded`, failed: `${eventPrefix}Failed`, timedOut: `${eventPrefix}TimedOut`, key: eventKey };

    if (target.kind === 'lambda-invoke' && target.waitForTaskToken) {
      const token = claimToken(params, minted);
      if (!token) {
        throw new RuntimeFailure(`${where} uses ${info.resource} but its Parameters do not pass $$.Task.Token, so nothing could answer the task`);
      }
      const waiting = ctx.board.schedule(token, {
        executionArn: record.executionArn,
        stateName: info.name,
        input: JSON.stringify(payload),
        heartbeatSeconds: info.heartbeatSeconds,
        timeoutSeconds: info.timeoutSeconds,
      });
      try {
        await handler(payload, handlerContext(token));
      } catch (e) {
        const err = toTaskError(e);
        try {
          ctx.board.fail(token, err.name, err.message);
        } catch {
          // Answered before the handler threw: the answer stands.
        }
      }
      return outcomeOf(info.name, await waiting, events);
    }

    let result: unknown;
    try {
      const claimed = claimToken(params, minted);
      result = toJson(await handler(payload, handlerContext(claimed)));
    } catch (e) {
      const err = toTaskError(e);
      push(info.name, events.failed, { [`${eventKey}FailedEventDetails`]: { error: err.name, cause: err.message } });
      throw err;
    }
    if (record.status !== 'RUNNING') throw new RuntimeFailure('the execution is closed');
    const output =
      target.kind === 'lambda-function'
        ? result
        : {
            ExecutedVersion: '$LATEST',
            Payload: result,
            SdkHttpMetadata: { HttpStatusCode: 200 },
            SdkResponseMetadata: { RequestId: randomUUID() },
            StatusCode: 200,
          };
    push(info.name, events.succeeded, { [`${eventKey}SucceededEventDetails`]: { output: JSON.stringify(output) } });
    return output;
  }

  const handlers: Record<string, (input: unknown) => Promise<unknown>> = {};
  for (const info of machine.prepared.tasks.values()) handlers[info.name] = (input) => runTask(info, input);

  const context = {
    Execution: { Id: record.executionArn, Name: record.name, RoleArn: record.roleArn },
    StateMachine: { Id: machine.arn, Name: machine.name },
    // Read by JSONPath each time Parameters resolve `$$.Task.Token`, so every task gets its own.
    Task: {
      get Token(): string {
        const token = newTaskToken();
        minted.add(token);
        return token;
      },
    },
  };
  const interpreter = new StateMachine(machine.prepared.runnable, { validationOptions: { noValidate: true } });
  const run = interpreter.run(input as never, { overrides: { taskResourceLocalHandlers: handlers as never }, context });

  void (async () => {
    try {
      for await (const ev of run.eventLogs) {
        const e = ev as {
          type: string;
          timestamp: number;
          state?: { name: string; type: string; input: unknown; output?: unknown };
          index?: number;
          parentState?: { name: string };
          jetstateRun?: number;
        };
        if (record.stopDate && e.timestamp > record.stopDate.getTime()) continue;
        const state = (stateName: string, type: string, details: Record<string, unknown>): void =>
          add({ timestampMs: e.timestamp, source: 'state', stateName, type, details, run: e.jetstateRun });
        if (e.type === 'StateEntered' && e.state) {
          const type = `${STATE_EVENT_PREFIX[e.state.type] ?? 'State'}Entered`;
          state(e.state.name, type, { stateEnteredEventDetails: { name: e.state.name, input: JSON.stringify(e.state.input ?? null) } });
        } else if (e.type === 'StateExited' && e.state) {
          const type = `${STATE_EVENT_PREFIX[e.state.type] ?? 'State'}Exited`;
          state(e.state.name, type, { stateExitedEventDetails: { name: e.state.name, output: JSON.stringify(e.state.output ?? null) } });
        } else if (e.type.startsWith('MapIteration') && e.parentState) {
          state(e.parentState.name, e.type, { [`${e.type[0]!.toLowerCase()}${e.type.slice(1)}EventDetails`]: { name: e.parentState.name, index: e.index } });
        }
      }
    } catch {
      // The log ends with the execution; nothing to report.
    }
  })();

  run.result.then(
    (output) => {
      const text = JSON.stringify(output ?? null);
      if (Buffer.byteLength(text) > MAX_PAYLOAD_BYTES) {
        finish('FAILED', {
          error: 'States.DataLimitExceeded',
          cause: `the execution output is ${Buffer.byteLength(text)} bytes; the limit is ${MAX_PAYLOAD_BYTES}`,
        });
      } else {
        finish('SUCCEEDED', { output: text });
      }
    },
    (e: unknown) => {
      if (e instanceof ExecutionTimeoutError) {
        finish('TIMED_OUT', {
          error: 'States.Timeout',
          cause: `the execution ran longer than the state machine's TimeoutSeconds (${machine.prepared.timeoutSeconds} s)`,
        });
      } else if (e instanceof ExecutionAbortedError) {
        finish('ABORTED', {});
      } else if (e instanceof ExecutionError && e.cause instanceof Error) {
        const failState = e.cause.name === 'FailStateError';
        const defaultCause = e.cause.message === 'Execution failed because of a Fail state';
        // A Fail state without Error/Cause, or SendTaskFailure without them, leaves them unset as on AWS.
        finish('FAILED', {
          error: failState || e.cause.name === '' ? undefined : e.cause.name,
          cause: defaultCause || e.cause.message === '' ? undefined : e.cause.message,
        });
      } else {
        finish('FAILED', { error: 'States.Runtime', cause: (e as Error)?.message ?? String(e) });
      }
    },
  );

  return {
    stop(error, cause) {
      finish('ABORTED', { error, cause });
      run.abort();
    },
  };
}
