/**
 * The activity bridge: lets a plain NATS service do the work of a Step Functions activity. It
 * long-polls GetActivityTask, sends each task's input to the service by NATS request (the
 * contract of nats-service.ts), sends heartbeats while the service works, and answers Step
 * Functions with the reply: SendTaskSuccess with its body, SendTaskFailure when the service
 * replied with an error (header `Jetstate-Error`), did not answer in time, or nobody listens.
 *
 * A task taken from Step Functions exists only in this process until it is answered, so the
 * bridge never drops one: `stop()` starts no new poll, but a poll in flight (held up to 60 s by
 * AWS) may still return a task, and that task is processed and answered before `stop()`
 * resolves.
 */
import { GetActivityTaskCommand, type GetActivityTaskCommandOutput, type SFNClient } from '@aws-sdk/client-sfn';
import type { NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';
import { parseOptions } from '../../engine/internal.js';
import { resolveStepFunctionsClient, type StepFunctionsClients, type StepFunctionsTarget } from './clients.js';
import { requestService } from './nats-service.js';
import { backoffDelayMs, isThrottled, FailureRun, sendHeartbeat, sendTaskAnswer, sleep, tokenHash, type TaskAnswer } from './task-answer.js';
import { consoleLogger, type Logger } from '../../engine/internal.js';

/** Header of the request that names the activity. */
export const ACTIVITY_ARN_HEADER = 'Jetstate-Activity-Arn';

const ActivityBridgeOptionsSchema = z
  .object({
    /**
     * A client of yours; its HTTP request timeout must exceed 60 s (GetActivityTask is held that
     * long), e.g. `requestHandler: { requestTimeout: 70_000 }`. Prefer `clients`, which does that.
     */
    client: z.custom<SFNClient>((v) => typeof v === 'object' && v !== null && typeof (v as SFNClient).send === 'function').optional(),
    clients: z.custom<StepFunctionsClients>((v) => typeof v === 'object' && v !== null && typeof (v as StepFunctionsClients).get === 'function').optional(),
    target: z.custom<StepFunctionsTarget>((v) => typeof v === 'object' && v !== null).optional(),
    activityArn: z
      .string()
      .regex(/^arn:[a-z-]+:states:[^:]*:[0-9]*:activity:.+$/, "activityArn must look like 'arn:aws:states:eu-west-1:123456789012:activity:name'"),
    /** Shown in the execution history (default `jetstate-<pid>`). */
    workerName: z.string().min(1).max(80).optional(),
    connection: z.custom<NatsConnection>(
      (v) => typeof v === 'object' && v !== null && typeof (v as NatsConnection).request === 'function',
      'connection must be a NatsConnection',
    ),
    /** Subject of the NATS service that does the work. */
    serviceSubject: z.string().min(1),
    /** How long the service may take to reply; then the task fails with `jetstate.ServiceTimeout`. */
    requestTimeoutMs: z.number().int().min(1),
    /** SendTaskHeartbeat this often while the service works (below the state's `HeartbeatSeconds`); 0: none. */
    heartbeatIntervalMs: z.number().int().min(0),
    /** Polls (and so tasks) at once. */
    concurrency: z.number().int().min(1).max(100).default(1),
    /** After `stop()`, how long an answer AWS keeps refusing (throttling, network) is still retried. */
    drainTimeoutMs: z.number().int().min(0).default(120_000),
    logger: z.custom<Logger>((v) => typeof v === 'object' && v !== null && typeof (v as Logger).warn === 'function').default(consoleLogger),
  })
  .strict();

export type ActivityBridgeOptions = z.input<typeof ActivityBridgeOptionsSchema>;

export interface ActivityBridgeStats {
  polls: number;
  /** Polls that returned a task. */
  tasks: number;
  succeeded: number;
  failed: number;
  /** Tasks Step Functions no longer waited for when answered (timed out). */
  gone: number;
  heartbeats: number;
  /** Polls refused by throttling (each followed by a backoff). */
  throttled: number;
  /** Polls that failed otherwise. */
  errors: number;
}

export interface ActivityBridge {
  /** Counters since start (a copy). */
  readonly stats: ActivityBridgeStats;
  /**
   * Starts no new poll; waits for polls in flight (up to the 60 s AWS holds one) and for every task
   * taken to be answered. Idempotent.
   */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Starts the bridge. Polling begins at once with `concurrency` polls.
 *
 * @example
 * ```ts
 * const bridge = await startActivityBridge({ clients, activityArn, connection: nc, serviceSubject: 'fulfil.pack',
 *   requestTimeoutMs: 120_000, heartbeatIntervalMs: 20_000 });
 * // the service: nc.subscribe('fulfil.pack', { queue: 'pack', callback: (_, m) => m.respond(JSON.stringify(result)) })
 * await bridge.stop();
 * ```
 */
export async function startActivityBridge(options: ActivityBridgeOptions): Promise<ActivityBridge> {
  const o = parseOptions(ActivityBridgeOptionsSchema, 'startActivityBridge', options);
  const pollClient = resolveStepFunctionsClient(o, 'startActivityBridge', true);
  const client = o.client ?? resolveStepFunctionsClient(o, 'startActivityBridge');
  const { logger, activityArn } = o;
  const workerName = o.workerName ?? `jetstate-${process.pid}`;
  const stats: ActivityBridgeStats = { polls: 0, tasks: 0, succeeded: 0, failed: 0, gone: 0, heartbeats: 0, throttled: 0, errors: 0 };
  const stopping = new AbortController();
  const giveUp = new AbortController();

  const processTask = async (task: GetActivityTaskCommandOutput & { taskToken: string }): Promise<void> => {
    stats.tasks++;
    const hash = tokenHash(task.taskToken);
    const what = `activity task ${hash} of '${activityArn}'`;
    let gone = false;
    const beats = new FailureRun();
    const heartbeatTimer =
      o.heartbeatIntervalMs > 0
        ? setInterval(() => {
            if (gone) return;
            void sendHeartbeat(client, task.taskToken, logger, what, beats).then((r) => {
              if (r === 'ok') stats.heartbeats++;
              if (r === 'gone') gone = true;
            });
          }, o.heartbeatIntervalMs)
        : undefined;
    let answer: TaskAnswer;
    try {
      answer = await requestService(o.connection, o.serviceSubject, task.input ?? '{}', {
        timeoutMs: o.requestTimeoutMs,
        taskTokenHash: hash,
        headers: { [ACTIVITY_ARN_HEADER]: activityArn },
      });
    } finally {
      clearInterval(heartbeatTimer);
    }
    if (gone) {
      stats.gone++;
      logger.warn(`${what}: Step Functions no longer waits for it (heartbeat refused); the service's reply is dropped`);
      return;
    }
    const outcome = await sendTaskAnswer(client, task.taskToken, answer, { logger, what, giveUp: giveUp.signal });
    if (outcome === 'gone') stats.gone++;
    else if (outcome === 'accepted') answer.ok ? stats.succeeded++ : stats.failed++;
  };

  const poller = async (): Promise<void> => {
    for (let failures = 0; !stopping.signal.aborted;) {
      let task: GetActivityTaskCommandOutput;
      try {
        stats.polls++;
        task = await pollClient.send(new GetActivityTaskCommand({ activityArn, workerName }));
        failures = 0;
      } catch (e) {
        const throttled = isThrottled(e);
        if (throttled) stats.throttled++;
        else stats.errors++;
        const wait = backoffDelayMs(++failures, throttled ? 500 : 1_000, 30_000);
        (throttled ? logger.debug : logger.warn).call(
          logger,
          `activity bridge '${activityArn}': GetActivityTask failed (${(e as Error).name}: ${(e as Error).message}); polling again in ${wait} ms`,
        );
        await sleep(wait, stopping.signal);
        continue;
      }
      // Taken: process it even when stop() was called meanwhile; nobody else will.
      if (task.taskToken) {
        await processTask(task as GetActivityTaskCommandOutput & { taskToken: string }).catch((e: unknown) =>
          logger.error(`activity bridge '${activityArn}': processing a task failed unexpectedly (${(e as Error).message}); it times out in Step Functions`),
        );
      }
    }
  };

  const pollers = Array.from({ length: o.concurrency }, () => poller());
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      stopping.abort();
      const timer = setTimeout(() => giveUp.abort(), o.drainTimeoutMs);
      try {
        await Promise.all(pollers);
      } finally {
        clearTimeout(timer);
      }
    })());

  return {
    get stats() {
      return { ...stats };
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
