/**
 * An idempotency key for a callback task that survives the state's `Retry`. Each retry of a
 * `.waitForTaskToken` task gets a new token, so a service that keys on the token does the work
 * again; what stays the same is the state entry the retries belong to. Its event in the
 * execution's history (`TaskStateEntered`) has an id that is fixed once written, so the key is
 * derived from the execution ARN and that id: found from the token through GetExecutionHistory,
 * where the token is in the parameters of its `TaskScheduled` event, and the `previousEventId`
 * chain from there leads back (through earlier attempts) to the entry. Each Map iteration or
 * Parallel branch enters its state anew, so each has its own key.
 */
import { createHash } from 'node:crypto';
import { GetExecutionHistoryCommand, type HistoryEvent, type SFNClient } from '@aws-sdk/client-sfn';
import { TaskFailedError } from './task-answer.js';

/** A Step Functions execution ARN, as `$$.Execution.Id` gives it. */
export const EXECUTION_ARN = /^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:execution:\S+$/;

/** The error a callback task fails with when its key cannot be found. */
export const KEY_UNAVAILABLE = 'jetstate.IdempotencyKeyUnavailable';

const PAGE = 100;

/** The key of the state entry `executionArn`'s history shows for `taskToken` (40 hex digits). */
export function stateEntryKeyOf(executionArn: string, enteredEventId: number): string {
  return createHash('sha256').update(`${executionArn}#${enteredEventId}`).digest('hex').slice(0, 40);
}

/**
 * Finds the state entry of the task holding `taskToken` in the history of `executionArn` (newest
 * events first, so usually one page) and returns its key. Throws {@link TaskFailedError}
 * `jetstate.IdempotencyKeyUnavailable` when the history cannot be read or does not show the token,
 * so the task fails (and the state's Retry or Catch decide) rather than running without its key.
 */
export async function stateEntryKey(client: SFNClient, executionArn: string, taskToken: string, signal?: AbortSignal): Promise<string> {
  const byId = new Map<number, HistoryEvent>();
  const escaped = JSON.stringify(taskToken).slice(1, -1);
  let scheduled: HistoryEvent | undefined;
  let nextToken: string | undefined;
  do {
    let page;
    try {
      page = await client.send(new GetExecutionHistoryCommand({ executionArn, reverseOrder: true, maxResults: PAGE, includeExecutionData: true, nextToken }), {
        abortSignal: signal as never,
      });
    } catch (e) {
      const err = e as Error;
      throw new TaskFailedError(
        KEY_UNAVAILABLE,
        `the history of ${executionArn} could not be read to find the task's idempotency key (${err.name}: ${err.message}); allow states:GetExecutionHistory on it, or leave executionArn out of the task's payload to key on the token`,
      );
    }
    for (const event of page.events ?? []) {
      if (event.id !== undefined) byId.set(event.id, event);
      if (!scheduled && holdsToken(event, taskToken, escaped)) scheduled = event;
    }
    if (scheduled) {
      for (let id = scheduled.previousEventId, hops = 0; id !== undefined && hops < 100_000; hops++) {
        const event = byId.get(id);
        if (!event) break; // older than what is read so far: read on
        if (event.type?.endsWith('StateEntered')) return stateEntryKeyOf(executionArn, event.id!);
        id = event.previousEventId;
      }
    }
    nextToken = page.nextToken;
  } while (nextToken);
  throw new TaskFailedError(
    KEY_UNAVAILABLE,
    `the history of ${executionArn} shows no task scheduled with this token; pass the execution that runs the task: "executionArn.$": "$$.Execution.Id"`,
  );
}

function holdsToken(event: HistoryEvent, token: string, escaped: string): boolean {
  if (!event.type?.endsWith('Scheduled')) return false;
  const parameters = event.taskScheduledEventDetails?.parameters ?? '';
  return parameters.includes(escaped) || parameters.includes(token);
}
