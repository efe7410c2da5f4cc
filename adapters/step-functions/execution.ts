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

const STATE_MACHINE_ARN = /^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}$/;

export interface StepFunctionsExecutionOptions<TInput = unknown> {
  stateMachineArn: string;
  /** Maps the invoke input to the execution input; the invoke input itself by default. */
  input?: (input: TInput) => unknown;
  /** Prefix of the execution name (the rest is derived from the instance and invocation). */
  name?: string;
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
  /** Retries of StartExecution (throttling, network); the task's retry policy. */
  retry?: Partial<RetryPolicy>;
  /** Longest a start attempt may take. */
  startTimeoutMs?: number;
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
  const resolved = { ...o, input: options.input as ((i: unknown) => unknown) | undefined };
  return activity<TInput, TOutput>(
    async (ctx) => (await ctx.extension<StepFunctionsExtension>(STEP_FUNCTIONS_EXTENSION).begin(ctx as ActivityContext<unknown>, resolved)) as TOutput,
    // An engine without the extension leaves the stage to a live engine that has it.
    {
      retry: { maxAttempts: 8, initialIntervalMs: 1_000, maxIntervalMs: 30_000, ...options.retry },
      timeoutMs: o.startTimeoutMs,
      requires: [STEP_FUNCTIONS_EXTENSION],
    },
  );
}

/** The stage's options once checked, as the extension gets them. */
export type ResolvedStepFunctionsExecutionOptions = z.output<typeof OptionsSchema> & { input: ((i: unknown) => unknown) | undefined };
