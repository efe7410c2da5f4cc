/**
 * Tasks that wait for someone outside the execution: activity tasks (handed out by
 * GetActivityTask long polls) and callback tasks (`.waitForTaskToken`). Each has a task token;
 * SendTaskSuccess / SendTaskFailure answer it, SendTaskHeartbeat keeps it alive.
 *
 * Token rules, as AWS's: a token this endpoint never handed out is `InvalidToken`; a token whose
 * task was answered, timed out, or whose execution closed is `TaskTimedOut`.
 */
import { randomBytes } from 'node:crypto';
import { sfnErrors } from './errors.js';

/** How a waiting task ended; `closed` means its execution ended first. */
export type TaskOutcome =
  | { ok: true; output: string }
  | {
      ok: false;
      error: string;
      cause: string;
      /** A missed heartbeat (`heartbeat`) or the Task's TimeoutSeconds (`task`). */
      timedOut?: 'heartbeat' | 'task' | undefined;
      closed?: boolean | undefined;
    };

export interface ScheduleTask {
  executionArn: string;
  stateName: string;
  /** Set for activity tasks: the task is queued for GetActivityTask on this activity. */
  activityArn?: string | undefined;
  /** The task's input as JSON, handed to the activity worker. */
  input: string;
  heartbeatSeconds?: number | undefined;
  /** The Task state's TimeoutSeconds; the interpreter fails the state, this closes the token. */
  timeoutSeconds?: number | undefined;
  /** Called when a worker takes the activity task. */
  onStarted?: ((workerName: string | undefined) => void) | undefined;
}

interface OpenTask extends ScheduleTask {
  token: string;
  delivered: boolean;
  heartbeatTimer?: NodeJS.Timeout | undefined;
  timeoutTimer?: NodeJS.Timeout | undefined;
  settle(outcome: TaskOutcome): void;
}

interface Poller {
  deliver(task: { taskToken: string; input: string } | null): void;
}

const CLOSED_TOKENS_KEPT = 10_000;

/** A new task token: opaque, 88 characters of base64, like AWS's long tokens. */
export const newTaskToken = (): string => `AQC${randomBytes(64).toString('base64')}`.replace(/=+$/, '');

export class TaskBoard {
  private readonly open = new Map<string, OpenTask>();
  private readonly closed = new Set<string>();
  private readonly queues = new Map<string, OpenTask[]>();
  private readonly pollers = new Map<string, Poller[]>();

  /** Opens a task under `token` and resolves when it is answered, times out or is closed. */
  schedule(token: string, task: ScheduleTask): Promise<TaskOutcome> {
    return new Promise<TaskOutcome>((resolve) => {
      const open: OpenTask = {
        ...task,
        token,
        delivered: false,
        settle: (outcome) => {
          if (!this.open.delete(token)) return;
          clearTimeout(open.heartbeatTimer);
          clearTimeout(open.timeoutTimer);
          this.remember(token);
          if (open.activityArn) {
            const queue = this.queues.get(open.activityArn);
            if (queue)
              this.queues.set(
                open.activityArn,
                queue.filter((t) => t !== open),
              );
          }
          resolve(outcome);
        },
      };
      this.open.set(token, open);
      if (task.timeoutSeconds !== undefined) {
        open.timeoutTimer = setTimeout(
          () =>
            open.settle({
              ok: false,
              error: 'States.Timeout',
              cause: `the task ran longer than its TimeoutSeconds (${task.timeoutSeconds} s)`,
              timedOut: 'task',
            }),
          task.timeoutSeconds * 1000,
        );
      }
      if (task.activityArn) {
        const queue = this.queues.get(task.activityArn) ?? [];
        queue.push(open);
        this.queues.set(task.activityArn, queue);
        this.dispatch(task.activityArn);
      } else {
        this.armHeartbeat(open);
      }
    });
  }

  /**
   * Waits up to `timeoutMs` for a task of the activity; `null` when none came. An aborted
   * `signal` (the caller hung up) withdraws the poll so no task is handed to nobody.
   */
  poll(activityArn: string, workerName: string | undefined, timeoutMs: number, signal: AbortSignal): Promise<{ taskToken: string; input: string } | null> {
    return new Promise((resolve) => {
      const poller: Poller = {
        deliver: (task) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', withdraw);
          resolve(task);
        },
      };
      const withdraw = (): void => {
        const list = this.pollers.get(activityArn) ?? [];
        this.pollers.set(
          activityArn,
          list.filter((p) => p !== poller),
        );
        poller.deliver(null);
      };
      const timer = setTimeout(withdraw, timeoutMs);
      signal.addEventListener('abort', withdraw, { once: true });
      const list = this.pollers.get(activityArn) ?? [];
      list.push(poller);
      this.pollers.set(activityArn, list);
      (poller as Poller & { workerName?: string | undefined }).workerName = workerName;
      this.dispatch(activityArn);
    });
  }

  /** Answers the task of `token` with its output (JSON text). */
  succeed(token: string, output: string): void {
    this.find(token).settle({ ok: true, output });
  }

  fail(token: string, error: string, cause: string): void {
    this.find(token).settle({ ok: false, error, cause });
  }

  heartbeat(token: string): void {
    this.armHeartbeat(this.find(token));
  }

  /** Closes the open tasks of an execution that ended (stopped, timed out, failed elsewhere). */
  closeExecution(executionArn: string): void {
    for (const task of [...this.open.values()]) {
      if (task.executionArn === executionArn) task.settle({ ok: false, error: 'States.Runtime', cause: 'the execution is closed', closed: true });
    }
  }

  /** Closes every task and answers every waiting poll with no task (the endpoint is closing). */
  closeAll(): void {
    for (const task of [...this.open.values()]) task.settle({ ok: false, error: 'States.Runtime', cause: 'sfn-local is closing', closed: true });
    for (const list of this.pollers.values()) for (const p of [...list]) p.deliver(null);
    this.pollers.clear();
  }

  /** Activities with a task waiting for a worker (for diagnostics). */
  pending(activityArn: string): number {
    return this.queues.get(activityArn)?.length ?? 0;
  }

  private find(token: string): OpenTask {
    const task = this.open.get(token);
    if (task) return task;
    if (this.closed.has(token)) throw sfnErrors.taskTimedOut();
    throw sfnErrors.invalidToken('this task token was not issued by this endpoint');
  }

  private remember(token: string): void {
    this.closed.add(token);
    if (this.closed.size > CLOSED_TOKENS_KEPT) this.closed.delete(this.closed.values().next().value!);
  }

  /** Missing a heartbeat for HeartbeatSeconds fails the task with States.Timeout, as AWS does. */
  private armHeartbeat(task: OpenTask): void {
    if (task.heartbeatSeconds === undefined) return;
    clearTimeout(task.heartbeatTimer);
    task.heartbeatTimer = setTimeout(
      () =>
        task.settle({ ok: false, error: 'States.Timeout', cause: `no heartbeat within HeartbeatSeconds (${task.heartbeatSeconds} s)`, timedOut: 'heartbeat' }),
      task.heartbeatSeconds * 1000,
    );
  }

  /** Hands queued tasks of an activity to waiting polls, oldest first on both sides. */
  private dispatch(activityArn: string): void {
    const queue = this.queues.get(activityArn) ?? [];
    const pollers = this.pollers.get(activityArn) ?? [];
    while (queue.length > 0 && pollers.length > 0) {
      const task = queue.shift()!;
      const poller = pollers.shift()! as Poller & { workerName?: string | undefined };
      task.delivered = true;
      this.armHeartbeat(task);
      task.onStarted?.(poller.workerName);
      poller.deliver({ taskToken: task.token, input: task.input });
    }
  }
}
