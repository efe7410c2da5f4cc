/**
 * `sfn-local`: a Step Functions-compatible endpoint on loopback that runs state machines, so the
 * real `@aws-sdk/client-sfn` is exercised over HTTP in offline development and in every Step
 * Functions test (AWS's own Step Functions Local cannot run here).
 *
 * It speaks the AWS JSON 1.0 protocol (`POST /`, `X-Amz-Target: AWSStepFunctions.<Action>`),
 * checks every request's SigV4 signature against the credentials it accepts (static keys, and
 * those a loopback STS issued, so role assumption and credential refresh are tested end to end),
 * answers errors with AWS's types so the SDK raises its typed exceptions, and can throttle on
 * demand. Definitions run in `aws-local-stepfunctions`; what it cannot run as AWS would is
 * refused at CreateStateMachine (see docs/STEP-FUNCTIONS.md, "Offline: jetstate sfn-local").
 *
 * Everything is in memory: state machines, activities and executions end with the endpoint.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { ErrorCode, JetstateError } from '../../../engine/internal.js';
import { BodyTooLargeError, listenLoopback, readBody, requestId } from '../aws/http.js';
import { SigV4Failure, verifySigV4, type SigningSecret } from '../aws/sigv4.js';
import { SfnLocalService } from './api.js';
import { SfnApiError, sfnErrors } from './errors.js';
import { statusChangeEvent, type EventBridgeExecutionStatusEvent } from './events.js';
import type { TaskHandler } from './execution.js';
import { Throttle, type DelaySpec, type RequestStats, type ThrottleSpec } from './throttle.js';

export type { EventBridgeExecutionStatusEvent, ExecutionStatus } from './events.js';
export type { TaskHandler, TaskHandlerContext } from './execution.js';
export type { DelaySpec, RequestStats, ThrottleSpec } from './throttle.js';
export { REFUSED_FEATURES } from './definition.js';
export { SfnApiError } from './errors.js';

/** A source of temporary credentials, such as the loopback STS (`startLocalSts`). */
export interface StsLike {
  credentialFor(accessKeyId: string): SigningSecret | null;
}

/** Actions refused as by a missing IAM permission (see `LocalStepFunctions.deny`). */
export interface DenySpec {
  actions: string[];
  /** Only calls signed with this key; every caller when absent. */
  accessKeyId?: string | undefined;
}

export interface LocalStepFunctionsOptions {
  host?: '127.0.0.1' | undefined;
  /** 0 (the default) picks a free port. */
  port?: number | undefined;
  region?: string | undefined;
  account?: string | undefined;
  /** Static keys accepted; default `test`/`test`. */
  credentials?: Array<{ accessKeyId: string; secretAccessKey: string }> | undefined;
  /** Also accept credentials this STS issued (expired ones get ExpiredTokenException). */
  sts?: StsLike | undefined;
  /** How long GetActivityTask waits for a task before answering with none (AWS: 60 s). */
  activityPollTimeoutMs?: number | undefined;
  /** Called with an EventBridge status event on RUNNING and on each terminal status; what it throws is ignored. */
  onStatusChange?: ((event: EventBridgeExecutionStatusEvent) => void) | undefined;
  /** In-process stand-ins for Lambda functions, by function name. */
  taskHandlers?: Record<string, TaskHandler> | undefined;
}

export interface LocalStepFunctions {
  /** `http://127.0.0.1:<port>`; pass it as `endpoint` to `SFNClient`. */
  endpoint: string;
  region: string;
  account: string;
  /** The next `count` calls (of `actions`, or any) get ThrottlingException. */
  throttle(spec: ThrottleSpec): void;
  /**
   * The next `count` calls (of `actions`, or any) run at once but answer `ms` later, like a
   * request that reached AWS and whose reply is slow (a client that gives up meanwhile still
   * changed what the action changes).
   */
  delay(spec: DelaySpec): void;
  /** Admits at most `perSecond` calls a second (token bucket, burst of one second); null lifts it. */
  rateLimit(perSecond: number | null): void;
  /**
   * Calls of `actions` (by `accessKeyId`, or any key) get AccessDeniedException, as when the
   * caller's IAM policy lacks `states:<action>`, until lifted with null.
   */
  deny(spec: DenySpec | null): void;
  /** Authenticated calls by action and access key, throttled ones included. */
  stats(): RequestStats;
  resetStats(): void;
  /**
   * Creates (or finds, if identical) a state machine without going through HTTP, as the CLI does
   * for `--definitions`; throws {@link SfnApiError} (`InvalidDefinition`...) like the action.
   */
  createStateMachine(name: string, definition: string, roleArn?: string): string;
  /** Creates (or finds) an activity without going through HTTP; returns its ARN. */
  createActivity(name: string): string;
  /** Stops running executions (no events), answers waiting polls with no task, closes the port. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const OptionsSchema = z.object({
  host: z.literal('127.0.0.1').default('127.0.0.1'),
  port: z.number().int().min(0).max(65_535).default(0),
  region: z
    .string()
    .regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'region like us-east-1')
    .default('us-east-1'),
  account: z
    .string()
    .regex(/^\d{12}$/, 'account must be 12 digits')
    .default('123456789012'),
  credentials: z
    .array(z.object({ accessKeyId: z.string().min(1), secretAccessKey: z.string().min(1) }))
    .default([{ accessKeyId: 'test', secretAccessKey: 'test' }]),
  sts: z
    .custom<StsLike>((v) => typeof (v as StsLike | undefined)?.credentialFor === 'function', 'sts must have credentialFor(accessKeyId), like startLocalSts()')
    .optional(),
  activityPollTimeoutMs: z.number().int().min(1).max(600_000).default(60_000),
  onStatusChange: z.custom<(e: EventBridgeExecutionStatusEvent) => void>((v) => typeof v === 'function', 'onStatusChange must be a function').optional(),
  taskHandlers: z
    .record(
      z.string(),
      z.custom<TaskHandler>((v) => typeof v === 'function', 'each task handler must be a function'),
    )
    .default({}),
});

const CONTENT_TYPE = 'application/x-amz-json-1.0';
const TARGET_PREFIX = 'AWSStepFunctions.';
const MAX_BODY_BYTES = 2 * 1024 * 1024;

/** The JSON-protocol error each signature failure is answered with, as AWS's JSON services do. */
const SIGNATURE_ERRORS: Record<SigV4Failure, string> = {
  MissingAuthentication: 'MissingAuthenticationTokenException',
  IncompleteSignature: 'IncompleteSignatureException',
  UnknownAccessKey: 'UnrecognizedClientException',
  SignatureDoesNotMatch: 'InvalidSignatureException',
  RequestExpired: 'InvalidSignatureException',
  ExpiredToken: 'ExpiredTokenException',
};

/**
 * Starts the loopback Step Functions endpoint.
 *
 * @example
 * ```ts
 * const sfnLocal = await startLocalStepFunctions({ taskHandlers: { charge: async (p) => ({ ok: true, p }) } });
 * const sfn = new SFNClient({ endpoint: sfnLocal.endpoint, region: sfnLocal.region, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
 * const { stateMachineArn } = await sfn.send(new CreateStateMachineCommand({ name: 'm', definition, roleArn: 'arn:aws:iam::123456789012:role/sfn' }));
 * await sfn.send(new StartExecutionCommand({ stateMachineArn, input: '{}' }));
 * await sfnLocal.close();
 * ```
 */
export async function startLocalStepFunctions(options: LocalStepFunctionsOptions = {}): Promise<LocalStepFunctions> {
  const parsed = OptionsSchema.safeParse(options);
  if (!parsed.success) throw new JetstateError(ErrorCode.InvalidOptions, `startLocalStepFunctions: ${z.prettifyError(parsed.error)}`);
  const o = parsed.data;
  const scope = { region: o.region, account: o.account };
  const statics = new Map(o.credentials.map((c) => [c.accessKeyId, { secretAccessKey: c.secretAccessKey } satisfies SigningSecret]));
  // From the STS, only what it issued (temporary keys with a session token) is accepted.
  const issued = (accessKeyId: string): SigningSecret | null => {
    const c = o.sts?.credentialFor(accessKeyId);
    return c?.sessionToken !== undefined ? c : null;
  };
  const lookup = (accessKeyId: string): SigningSecret | null => statics.get(accessKeyId) ?? issued(accessKeyId);
  const throttle = new Throttle();
  let denied: { actions: string[]; accessKeyId: string | undefined } | null = null;
  const service = new SfnLocalService({
    scope,
    taskHandlers: o.taskHandlers,
    activityPollTimeoutMs: o.activityPollTimeoutMs,
    onStatus: (record) => {
      if (!o.onStatusChange) return;
      try {
        o.onStatusChange(statusChangeEvent(record, scope));
      } catch {
        // A listener's failure must not change the execution.
      }
    },
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const id = requestId();
    const hungUp = new AbortController();
    res.once('close', () => hungUp.abort());
    const send = (status: number, body: unknown): void => {
      if (res.writableEnded || res.destroyed) return;
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': CONTENT_TYPE, 'x-amzn-requestid': id, 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    try {
      if (req.method !== 'POST') throw sfnErrors.unknownOperation(`${req.method} ${req.url}`);
      const body = await readBody(req, MAX_BODY_BYTES);
      const target = String(req.headers['x-amz-target'] ?? '');
      if (!target.startsWith(TARGET_PREFIX)) throw sfnErrors.unknownOperation(target);
      const action = target.slice(TARGET_PREFIX.length);
      const verified = verifySigV4({ method: req.method, url: req.url ?? '/', headers: req.headers, body }, lookup, { service: 'states', region: o.region });
      if (!verified.ok) throw new SfnApiError(SIGNATURE_ERRORS[verified.failure], verified.message, verified.failure === 'MissingAuthentication' ? 403 : 400);
      if (!throttle.admit(action, verified.accessKeyId)) throw sfnErrors.throttled();
      if (denied && denied.actions.includes(action) && (denied.accessKeyId === undefined || denied.accessKeyId === verified.accessKeyId))
        throw sfnErrors.accessDenied(verified.accessKeyId, action);
      let input: unknown;
      try {
        input = body.length === 0 ? {} : JSON.parse(body.toString('utf8'));
      } catch (e) {
        throw sfnErrors.serialization(`the request body is not JSON: ${(e as Error).message}`);
      }
      const delayMs = throttle.replyDelayMs(action);
      const out = await service.call(action, input, hungUp.signal);
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      send(200, out);
    } catch (e) {
      if (e instanceof SfnApiError) send(e.status, { __type: e.type, message: e.message });
      else if (e instanceof BodyTooLargeError) send(413, { __type: 'RequestEntityTooLarge', message: e.message });
      else send(500, { __type: 'InternalFailure', message: `sfn-local failed: ${(e as Error)?.message ?? String(e)}` });
    }
  }

  const http = await listenLoopback((req, res) => void handle(req, res), o.host, o.port);
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      service.close();
      await http.close();
    })();
    return closing;
  };
  return {
    endpoint: http.endpoint,
    region: o.region,
    account: o.account,
    throttle: (spec) => throttle.script(spec),
    delay: (spec) => throttle.delay(spec),
    rateLimit: (perSecond) => throttle.rateLimit(perSecond),
    deny: (spec) => {
      denied = spec === null ? null : { actions: [...spec.actions], accessKeyId: spec.accessKeyId };
    },
    stats: () => throttle.snapshot(),
    resetStats: () => throttle.reset(),
    createStateMachine: (name, definition, roleArn) =>
      (
        service.callSync('CreateStateMachine', { name, definition, roleArn: roleArn ?? `arn:aws:iam::${o.account}:role/sfn-local` }) as {
          stateMachineArn: string;
        }
      ).stateMachineArn,
    createActivity: (name) => (service.callSync('CreateActivity', { name }) as { activityArn: string }).activityArn,
    close,
    [Symbol.asyncDispose]: close,
  };
}
