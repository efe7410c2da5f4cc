/**
 * The EventBridge event Step Functions emits when an execution changes status ("Step Functions
 * Execution Status Change"), with the same shape, so code that consumes AWS's events (e.g. one
 * forwarding them into NATS to complete stages by push) runs unchanged against sfn-local.
 */
import { randomUUID } from 'node:crypto';

export const EXECUTION_STATUSES = ['RUNNING', 'SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED'] as const;
export type ExecutionStatus = (typeof EXECUTION_STATUSES)[number];

/**
 * An EventBridge "Step Functions Execution Status Change" event. Dates are epoch milliseconds as
 * AWS sends them; `output`, `error`, `cause` and `stopDate` are null while they have no value.
 */
export interface EventBridgeExecutionStatusEvent {
  version: '0';
  id: string;
  'detail-type': 'Step Functions Execution Status Change';
  source: 'aws.states';
  account: string;
  /** ISO 8601 time of the change, to the second, like `2024-01-01T12:00:00Z`. */
  time: string;
  region: string;
  resources: [string];
  detail: {
    executionArn: string;
    stateMachineArn: string;
    name: string;
    status: ExecutionStatus;
    startDate: number;
    stopDate: number | null;
    input: string;
    inputDetails: { included: boolean };
    output: string | null;
    outputDetails: { included: boolean } | null;
    error: string | null;
    cause: string | null;
  };
}

export interface ExecutionSnapshot {
  executionArn: string;
  stateMachineArn: string;
  name: string;
  status: ExecutionStatus;
  startDate: Date;
  stopDate?: Date | undefined;
  input: string;
  output?: string | undefined;
  error?: string | undefined;
  cause?: string | undefined;
}

/** Builds the event for an execution's current status. */
export function statusChangeEvent(e: ExecutionSnapshot, scope: { region: string; account: string }): EventBridgeExecutionStatusEvent {
  const at = e.stopDate ?? e.startDate;
  return {
    version: '0',
    id: randomUUID(),
    'detail-type': 'Step Functions Execution Status Change',
    source: 'aws.states',
    account: scope.account,
    time: at.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    region: scope.region,
    resources: [e.executionArn],
    detail: {
      executionArn: e.executionArn,
      stateMachineArn: e.stateMachineArn,
      name: e.name,
      status: e.status,
      startDate: e.startDate.getTime(),
      stopDate: e.stopDate ? e.stopDate.getTime() : null,
      input: e.input,
      inputDetails: { included: true },
      output: e.output ?? null,
      outputDetails: e.output === undefined ? null : { included: true },
      error: e.error ?? null,
      cause: e.cause ?? null,
    },
  };
}
