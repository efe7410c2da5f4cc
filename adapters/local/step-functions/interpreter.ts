/**
 * The ASL interpreter the loopback endpoint runs definitions with: `aws-local-stepfunctions`.
 *
 * It declares Node 22 because it calls `Promise.withResolvers` (Node 22+) when a Task state runs;
 * everything else works on Node 20, so the one missing function is supplied here, before any
 * state machine runs, and only where the runtime lacks it.
 */
const PromiseWithResolvers = Promise as unknown as { withResolvers?: () => unknown };
if (!PromiseWithResolvers.withResolvers) {
  PromiseWithResolvers.withResolvers = function withResolvers<T>() {
    let resolve!: (value: T | PromiseLike<T>) => void;
    let reject!: (reason?: unknown) => void;
    const promise = new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

import { AsyncLocalStorage } from 'node:async_hooks';
import { StateMachine } from 'aws-local-stepfunctions';

/**
 * Runs of the interpreter: the execution itself, and each Map iteration and Parallel branch (the
 * interpreter runs those as state machines of their own). AWS's history chains each event to the
 * one it follows in its own iteration or branch (`previousEventId`), so a task's events lead back
 * to the entry into its state even while other iterations interleave theirs; the endpoint needs to
 * know which run an event and a task handler call belong to. Every `run` is wrapped once: it runs
 * inside an async context naming it (task handlers called from it see that name), and the events
 * it logs carry it in `jetstateRun` (the innermost run's, as nested runs pass events up).
 */
const runs = new AsyncLocalStorage<number>();
let lastRun = 0;

/** The interpreter run the calling code belongs to (see above); undefined outside any run. */
export function currentRun(): number | undefined {
  return runs.getStore();
}

type Run = (this: unknown, input: unknown, options?: unknown) => { eventLogs: AsyncGenerator<Record<string, unknown>> };
const prototype = StateMachine.prototype as unknown as { run: Run & { jetstateRuns?: true } };
if (!prototype.run.jetstateRuns) {
  const run = prototype.run;
  const wrapped: Run & { jetstateRuns?: true } = function (this: unknown, input, options) {
    const id = ++lastRun;
    const execution = runs.run(id, () => run.call(this, input, options));
    const events = execution.eventLogs;
    execution.eventLogs = (async function* () {
      for await (const event of events) {
        event['jetstateRun'] ??= id;
        yield event;
      }
    })();
    return execution;
  };
  wrapped.jetstateRuns = true;
  prototype.run = wrapped;
}

export { ExecutionAbortedError, ExecutionError, ExecutionTimeoutError, StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
