/**
 * A jetstate workflow as the answer to a `.waitForTaskToken` callback task: each task starts (or,
 * redelivered, finds again) one instance of the workflow, with an id derived from the task token,
 * and the task is answered with the instance's output when it ends `done`, or failed with its
 * error when it ends `failed` or `stopped`. Use it as the handler of `serveCallbackTasks`:
 *
 * ```ts
 * await serveCallbackTasks({ connection, stream: 'SFN_TOKENS', subject: 'sfn.tokens.review', durable: 'review', clients,
 *   handler: workflowHandler({ client, workflow: review, input: (task) => ({ claim: task }) }) });
 * ```
 *
 * The instance is durable, so a human step of days is fine: the callback server keeps the token
 * (heartbeats while it waits) and answers when the instance ends; after a restart of the server,
 * the redelivered token finds the same instance.
 */
import type { Client, Instance, WorkflowDefinition, WorkflowInput } from '../../engine/index.js';
import { TaskFailedError, type CallbackHandler } from './callback.js';

export interface WorkflowHandlerOptions<W extends WorkflowDefinition> {
  client: Client;
  workflow: W;
  /** The instance's input from the task's input (the task input itself by default). */
  input?: (taskInput: unknown) => WorkflowInput<W>;
  /** Prefix of the instance id (the rest is the token's digest). Default `cb-`. */
  idPrefix?: string;
  /** How often to look at the instance while it runs. Default 1 s. */
  pollIntervalMs?: number;
}

export function workflowHandler<W extends WorkflowDefinition>(options: WorkflowHandlerOptions<W>): CallbackHandler {
  const { client, workflow } = options;
  const every = options.pollIntervalMs ?? 1_000;
  return async (task) => {
    const id = `${options.idPrefix ?? 'cb-'}${task.taskTokenHash}`;
    const input = options.input ? options.input(task.input) : (task.input as WorkflowInput<W>);
    // Idempotent by id: a redelivered token finds the instance it started.
    await client.start(workflow, { id, input });
    let instance: Instance | null = null;
    while (!task.signal.aborted) {
      instance = await client.get(workflow, id);
      if (instance && instance.status !== 'running') break;
      await new Promise<void>((r) => {
        const t = setTimeout(r, every);
        task.signal.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
      });
    }
    if (!instance || instance.status === 'running')
      throw new Error(`workflow '${workflow.name}' instance '${id}' was still running when the task was given up`);
    if (instance.status === 'done') return instance.output ?? null;
    throw new TaskFailedError(
      `jetstate.Workflow${instance.status === 'failed' ? 'Failed' : 'Stopped'}`,
      instance.error ?? `workflow '${workflow.name}' instance '${id}' ended ${instance.status}`,
    );
  };
}
