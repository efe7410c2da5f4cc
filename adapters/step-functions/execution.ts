/**
 * Delegating a stage to Step Functions: `stepFunctionsExecution()` is actor logic for `invoke`, a
 * durable task whose attempt the `stepFunctions()` engine extension (execution-extension.ts)
 * runs: it starts the execution, follows it, and delivers its outcome.
 */
import type { PromiseActorLogic } from 'xstate';
import { z } from 'zod';
import { activity, ErrorCode, JetstateError, type ActivityContext, type RetryPolicy } from '../../engine/internal.js';
import { STEP_FUNCTIONS_EXTENSION, type StepFunctionsExtension } from './execution-extension.js';

export { executionArnOf, executionName, type ExecutionNameOptions } from './execution-names.js';
export { STEP_FUNCTIONS_EXTENSION, StepFunctionsExtension, stepFunctions, type StepFunctionsOptions, type StepFunctionsStats } from './execution-extension.js';

/** The longest timer Node keeps (about 24.8 days): an attempt waiting for AWS is bounded by it. */
const LONGEST_ATTEMPT_MS = 2_147_483_647;

const STATE_MACHINE_ARN = /^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}$/;

export interface StepFunctionsExecutionOptions<TInput = unknown> {
  stateMachineArn: string;
  /** Maps the invoke input to the execution input; the invoke input itself by default. */
  input?: (input: TInput) => unknown;
  /** Prefix of the execution name (the rest is derived from the instance and invocation). */
  name?: string;
  /** Region of the stage's calls; the state machine's (from its ARN) by default. Kept with the pending execution. */
  region?: string;
  /** Role to assume for this stage (another account's); its credentials refresh by themselves. */
  roleArn?: string;
  externalId?: string;
  /** 'poll' (default): DescribeExecution; 'push': status events forwarded into NATS, with a rare poll as a back-up. */
  completion?: 'poll' | 'push';
  /** First wait before polling a new execution; the wait grows 1.5x per poll up to `maxPollIntervalMs`. */
  pollIntervalMs?: number;
  maxPollIntervalMs?: number;
  /** Adds `_jetstate: { traceparent, tracestate }` to an object input, so a trace can continue in the cloud stage (default true). */
  traceContext?: boolean;
  /**
   * Retries of StartExecution that AWS answered with an error (throttling, 5xx), and, with
   * `untilReachable: false`, of those that got no answer; the task's retry policy.
   */
  retry?: Partial<RetryPolicy>;
  /**
   * Longest one StartExecution (or DescribeExecution while adopting) may take, the SDK's own
   * retries included. With `untilReachable` a call over it counts as unanswered and is tried
   * again; without, it is the longest a start attempt may take.
   */
  startTimeoutMs?: number;
  /**
   * While AWS gives no answer at all (connection refused or reset, DNS, timeout: the network is
   * down, e.g. at an edge site cut off from the cloud), keep trying StartExecution and
   * DescribeExecution, with a warning each time, without spending the attempts of `retry`, until
   * AWS answers; the instance waits in the invoking state (default true). With false, such a call
   * fails the attempt like any error (the behaviour before this option).
   */
  untilReachable?: boolean;
  /** First wait between tries while AWS gives no answer; it doubles up to `maxReachIntervalMs` (default 1 s and 30 s). */
  reachIntervalMs?: number;
  maxReachIntervalMs?: number;
}

const OptionsSchema = z
  .object({
    stateMachineArn: z.string().regex(STATE_MACHINE_ARN, "stateMachineArn must look like 'arn:aws:states:us-east-1:123456789012:stateMachine:name'"),
    input: z.custom<(i: unknown) => unknown>((v) => typeof v === 'function', 'input must be a function of the invoke input').optional(),
    name: z
      .string()
      .regex(/^[A-Za-z0-9_-]{0,24}$/, 'name: a prefix of at most 24 of A-Z a-z 0-9 _ -')
      .optional(),
    region: z.string().min(1).optional(),
    roleArn: z.string().optional(),
    externalId: z.string().optional(),
    completion: z.enum(['poll', 'push']).default('poll'),
    pollIntervalMs: z.number().int().min(50).default(5_000),
    maxPollIntervalMs: z.number().int().min(50).default(60_000),
    traceContext: z.boolean().default(true),
    retry: z.record(z.string(), z.number()).optional(),
    startTimeoutMs: z.number().int().min(100).default(30_000),
    untilReachable: z.boolean().default(true),
    reachIntervalMs: z.number().int().min(10).default(1_000),
    maxReachIntervalMs: z.number().int().min(10).default(30_000),
  })
  .strict();

/**
 * Actor logic for `invoke` that runs the stage as a Step Functions execution. The output comes
 * back as `xstate.done.actor.<id>` (parsed JSON); FAILED, TIMED_OUT and ABORTED as
 * `xstate.error.actor.<id>` with `{ name, message, error, cause, status, executionArn }`. Needs the
 * engine extension: `createEngine({ ..., extensions: [stepFunctions({ region })] })`.
 *
 * @example
 * ```ts
 * setup({ actors: { settle: stepFunctionsExecution({ stateMachineArn, completion: 'push' }) } })
 * ```
 */
export function stepFunctionsExecution<TOutput = unknown, TInput = unknown>(
  options: StepFunctionsExecutionOptions<TInput>,
): PromiseActorLogic<TOutput, TInput> {
  const parsed = OptionsSchema.safeParse(options);
  if (!parsed.success) throw new JetstateError(ErrorCode.InvalidDefinition, `stepFunctionsExecution options are not valid:\n${z.prettifyError(parsed.error)}`);
  const o = parsed.data;
  if (o.maxPollIntervalMs < o.pollIntervalMs)
    throw new JetstateError(ErrorCode.InvalidDefinition, 'stepFunctionsExecution: maxPollIntervalMs must be at least pollIntervalMs');
  if (o.maxReachIntervalMs < o.reachIntervalMs)
    throw new JetstateError(ErrorCode.InvalidDefinition, 'stepFunctionsExecution: maxReachIntervalMs must be at least reachIntervalMs');
  const resolved = { ...o, input: options.input as ((i: unknown) => unknown) | undefined };
  return activity<TInput, TOutput>(
    async (ctx) => (await ctx.extension<StepFunctionsExtension>(STEP_FUNCTIONS_EXTENSION).begin(ctx as ActivityContext<unknown>, resolved)) as TOutput,
    // An engine without the extension leaves the stage to a live engine that has it.
    {
      retry: { maxAttempts: 8, initialIntervalMs: 1_000, maxIntervalMs: 30_000, ...options.retry },
      // An attempt that waits for AWS to become reachable holds its task for as long as it waits
      // (a running attempt keeps its task message in progress, or claimed when it runs in
      // process), so no other engine runs it meanwhile; each call is bounded by startTimeoutMs.
      timeoutMs: o.untilReachable ? LONGEST_ATTEMPT_MS : o.startTimeoutMs,
      requires: [STEP_FUNCTIONS_EXTENSION],
    },
  );
}

/** The stage's options once checked, as the extension gets them. */
export type ResolvedStepFunctionsExecutionOptions = z.output<typeof OptionsSchema> & { input: ((i: unknown) => unknown) | undefined };
