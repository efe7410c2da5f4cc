/**
 * What an execution's status means for the instance: the EventBridge status event as it arrives
 * on NATS, and the task outcome of a terminal status (from that event or from DescribeExecution).
 */
import { z } from 'zod';
import type { TaskOutcome } from '../../engine/internal.js';

/**
 * AWS writes fields without a value as JSON null (and sfn-local does the same), so null is read
 * as "not included": a real null output is the JSON text `"null"`, a string.
 */
const absentIfNull = z
  .string()
  .nullable()
  .optional()
  .transform((v) => v ?? undefined);

const StatusEventSchema = z.object({
  'detail-type': z.literal('Step Functions Execution Status Change'),
  source: z.literal('aws.states'),
  detail: z.object({
    executionArn: z.string(),
    status: z.string(),
    output: absentIfNull,
    error: absentIfNull,
    cause: absentIfNull,
  }),
});

/** The part of a status event the adapter uses; `output` undefined when the event left it out. */
export type StatusDetail = z.output<typeof StatusEventSchema>['detail'];

/** The detail of a Step Functions execution status event, or null when `value` is not one. */
export function parseStatusEvent(value: unknown): StatusDetail | null {
  const parsed = StatusEventSchema.safeParse(value);
  return parsed.success ? parsed.data.detail : null;
}

const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED']);

/** True for the statuses an execution ends with. */
export const isTerminal = (status: string | undefined): boolean => status !== undefined && TERMINAL.has(status);

/** The instance's outcome for a terminal status, or undefined while the execution runs. */
export function outcomeOf(
  executionArn: string,
  status: string | undefined,
  output: string | undefined,
  error: string | undefined,
  cause: string | undefined,
): TaskOutcome | undefined {
  switch (status) {
    case 'SUCCEEDED': {
      let parsed: unknown = null;
      try {
        parsed = output === undefined || output === '' ? null : JSON.parse(output);
      } catch {
        return { ok: false, error: { name: 'InvalidOutput', message: 'the execution succeeded but its output is not JSON', status, executionArn } };
      }
      return { ok: true, output: parsed };
    }
    case 'FAILED':
    case 'TIMED_OUT':
    case 'ABORTED': {
      const name = error ?? (status === 'TIMED_OUT' ? 'States.Timeout' : status === 'ABORTED' ? 'States.Aborted' : 'States.Failed');
      return {
        ok: false,
        error: { name, message: cause ?? `the execution ended ${status}`, status, executionArn, ...(error ? { error } : {}), ...(cause ? { cause } : {}) },
      };
    }
    default:
      return undefined; // RUNNING, PENDING_REDRIVE
  }
}
