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

export { ExecutionAbortedError, ExecutionError, ExecutionTimeoutError, StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
