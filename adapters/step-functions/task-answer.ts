/**
 * Answering a Step Functions task (a callback token or an activity task) reliably: the answer is
 * payload-guarded before it is sent, sent again with backoff and jitter while AWS throttles or the
 * network fails, and given up only when AWS says the task is gone (timed out, answered, or the
 * token is not valid), since then no retry can help.
 */
import { createHash } from 'node:crypto';
import { SendTaskFailureCommand, SendTaskHeartbeatCommand, SendTaskSuccessCommand, type SFNClient } from '@aws-sdk/client-sfn';

import { MAX_CAUSE_CHARS, MAX_ERROR_CHARS, encodeStepFunctionsInput, truncateText } from './payload.js';
import type { Logger } from '../../engine/internal.js';

/**
 * Throw it from a task handler to choose the `error` name the state machine's `Catch` and `Retry`
 * match (`ErrorEquals`). Any other thrown error is reported with its `name` and `message`.
 *
 * @example
 * ```ts
 * if (!card.valid) throw new TaskFailedError('Payment.Declined', `card ${card.last4} expired`);
 * ```
 */
export class TaskFailedError extends Error {
  override readonly name = 'TaskFailedError';
  constructor(
    /** The error name Step Functions records (≤256 characters; longer is cut). */
    readonly error: string,
    /** The cause (≤32,768 characters; longer is cut). */
    cause?: string,
  ) {
    super(cause ?? error);
  }
}

/** What a task is answered with: its JSON output, or a failure. */
export type TaskAnswer = { ok: true; output: string } | { ok: false; error: string; cause: string };

/** AWS errors that mean the task no longer waits for an answer: retrying cannot help. */
const GONE = new Set(['TaskTimedOut', 'InvalidToken', 'TaskDoesNotExist']);
const THROTTLED = new Set(['ThrottlingException', 'Throttling', 'TooManyRequestsException', 'RequestLimitExceeded', 'ProvisionedThroughputExceededException']);

/** The task of this token timed out, was answered already, or the token is not valid. */
export const isTaskGone = (e: unknown): boolean => GONE.has((e as { name?: string } | null)?.name ?? '');

/** AWS asked us to slow down. */
export const isThrottled = (e: unknown): boolean => {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number }; $retryable?: { throttling?: boolean } } | null;
  return THROTTLED.has(err?.name ?? '') || err?.$retryable?.throttling === true || err?.$metadata?.httpStatusCode === 429;
};

/** A short digest of a task token: safe in logs and headers, where the token itself must not go. */
export const tokenHash = (taskToken: string): string => createHash('sha256').update(taskToken).digest('hex').slice(0, 32);

/** The wait before retry `attempt` (1-based): exponential from `baseMs`, capped, full jitter. */
export function backoffDelayMs(attempt: number, baseMs = 200, maxMs = 30_000, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt - 1, 20));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** Resolves after `ms`, or at once when `signal` aborts; tells which. */
export function sleep(ms: number, signal?: AbortSignal): Promise<'slept' | 'aborted'> {
  if (signal?.aborted) return Promise.resolve('aborted');
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve('slept');
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve('aborted');
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The answer for a handler's result: its JSON output, or a failure when it cannot be sent as output. */
export function answerOfResult(result: unknown, what: string): TaskAnswer {
  try {
    return { ok: true, output: encodeStepFunctionsInput(result ?? null, what) };
  } catch (e) {
    return failureOf(new TaskFailedError('jetstate.InvalidOutput', (e as Error).message));
  }
}

/** The failure for a thrown value, cut to the limits of SendTaskFailure. */
export function failureOf(e: unknown): TaskAnswer & { ok: false } {
  const error = e instanceof TaskFailedError ? e.error : e instanceof Error ? e.name : 'Error';
  const cause = e instanceof Error ? e.message : String(e);
  return { ok: false, error: truncateText(error || 'Error', MAX_ERROR_CHARS), cause: truncateText(cause, MAX_CAUSE_CHARS) };
}

export interface SendAnswerOptions {
  logger: Logger;
  /** Names the task in logs (never the token). */
  what: string;
  /** Aborts the retries: the answer is then 'abandoned'. */
  giveUp?: AbortSignal;
}

/**
 * Sends the answer until AWS accepts it ('accepted'), AWS says the task is gone ('gone', logged),
 * or `giveUp` aborts ('abandoned', logged). Throttling, network and server errors are retried
 * with backoff; other refusals too (a missing permission can be granted), logged as warnings.
 */
export async function sendTaskAnswer(
  client: SFNClient,
  taskToken: string,
  answer: TaskAnswer,
  options: SendAnswerOptions,
): Promise<'accepted' | 'gone' | 'abandoned'> {
  const { logger, what, giveUp } = options;
  for (let attempt = 1; ; attempt++) {
    try {
      if (answer.ok) await client.send(new SendTaskSuccessCommand({ taskToken, output: answer.output }));
      else await client.send(new SendTaskFailureCommand({ taskToken, error: answer.error, cause: answer.cause }));
      return 'accepted';
    } catch (e) {
      if (isTaskGone(e)) {
        logger.warn(`${what}: Step Functions no longer waits for this task (${(e as Error).name}: ${(e as Error).message}); its answer is dropped`);
        return 'gone';
      }
      if (answer.ok && (e as Error).name === 'InvalidOutput') {
        // The guard let it through but AWS refused it: report that instead, or the execution waits until its timeout.
        answer = failureOf(new TaskFailedError('jetstate.InvalidOutput', (e as Error).message));
        continue;
      }
      const wait = backoffDelayMs(attempt);
      const log = isThrottled(e) ? logger.debug : logger.warn;
      log.call(logger, `${what}: sending the answer failed (${(e as Error).name}: ${(e as Error).message}); retrying in ${wait} ms`);
      if ((await sleep(wait, giveUp)) === 'aborted') {
        logger.error(`${what}: gave up sending the answer while stopping; the task times out in Step Functions unless it is answered again`);
        return 'abandoned';
      }
    }
  }
}

/**
 * A run of failed calls of one kind (one task's heartbeats, one execution's polls): a warning at
 * its second failure, or its first when AWS refuses the call outright (a 4xx other than
 * throttling: a missing permission), then every tenth, instead of a line per failure.
 */
export class FailureRun {
  failures = 0;
  private warned = false;

  /** Counts a failure; true when this one is to be warned about. */
  failed(e: unknown): boolean {
    this.failures++;
    const status = (e as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode ?? 0;
    const refusal = status >= 400 && status < 500 && !isThrottled(e);
    const warn = this.failures === 2 || (this.failures === 1 && refusal) || this.failures % 10 === 0;
    this.warned ||= warn;
    return warn;
  }

  /** Counts a success; the length of the run it ends when that run was warned about, else 0. */
  succeeded(): number {
    const ended = this.warned ? this.failures : 0;
    this.failures = 0;
    this.warned = false;
    return ended;
  }
}

/**
 * One SendTaskHeartbeat: 'gone' when the task no longer waits, 'failed' for anything else (tried
 * again at the next beat; warned about as `run` says). The first heartbeat accepted after a
 * warned run says so.
 */
export async function sendHeartbeat(
  client: SFNClient,
  taskToken: string,
  logger: Logger,
  what: string,
  run: FailureRun = new FailureRun(),
): Promise<'ok' | 'gone' | 'failed'> {
  try {
    await client.send(new SendTaskHeartbeatCommand({ taskToken }));
    const ended = run.succeeded();
    if (ended > 0) logger.info(`${what}: heartbeats are accepted again after ${ended} refused or failed in a row`);
    return 'ok';
  } catch (e) {
    if (isTaskGone(e)) return 'gone';
    const line = `${what}: heartbeat failed (${(e as Error).name}: ${(e as Error).message})`;
    if (run.failed(e))
      logger.warn(
        `${line}; ${run.failures} in a row: the task times out in Step Functions (its HeartbeatSeconds) unless one gets through; ` +
          `check that this caller may call states:SendTaskHeartbeat and can reach AWS`,
      );
    else logger.debug(line);
    return 'failed';
  }
}
