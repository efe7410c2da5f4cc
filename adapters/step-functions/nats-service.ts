/**
 * The request/reply contract between a Step Functions task and a plain NATS service, shared by
 * callback tasks and the activity bridge.
 *
 * Request: the task's input as JSON in the body; header `Jetstate-Task-Token-Hash` (a digest of
 * the token, to correlate logs; never the token itself) and, from callback tasks, header
 * `Jetstate-Idempotency-Key` (the same for every retry of the state entry when the forwarded
 * event names the execution; see `CallbackTask.idempotencyKey`).
 *
 * Reply: success is the output as JSON in the body (an empty body is `null`). Failure is any reply
 * with the header `Jetstate-Error: <error name>`, the body being the cause as text; a service
 * built with `@nats-io/services` may fail with its usual `Nats-Service-Error` /
 * `Nats-Service-Error-Code` headers instead. Errors travel in headers, not in the JSON body, so
 * an output like `{ "error": ... }` stays an output.
 */
import { NoRespondersError, RequestError, TimeoutError, headers as natsHeaders, type Msg, type NatsConnection } from '@nats-io/transport-node';
import { MAX_CAUSE_CHARS, MAX_ERROR_CHARS, checkPayloadSize, truncateText } from './payload.js';
import { TaskFailedError, type TaskAnswer } from './task-answer.js';

export const ERROR_HEADER = 'Jetstate-Error';
export const TOKEN_HASH_HEADER = 'Jetstate-Task-Token-Hash';
export const IDEMPOTENCY_KEY_HEADER = 'Jetstate-Idempotency-Key';

const decoder = new TextDecoder();

/**
 * Replies to a task request with a failure, the way {@link startActivityBridge} and
 * {@link natsServiceHandler} read it.
 *
 * @example
 * ```ts
 * nc.subscribe('billing.charge', { callback: (_, msg) => {
 *   if (declined) return respondWithTaskError(msg, 'Payment.Declined', 'card expired');
 *   msg.respond(JSON.stringify({ chargeId }));
 * } });
 * ```
 */
export function respondWithTaskError(msg: Msg, error: string, cause = ''): boolean {
  const h = natsHeaders();
  h.set(ERROR_HEADER, truncateText(error.replace(/[\r\n]/g, ' '), MAX_ERROR_CHARS));
  return msg.respond(truncateText(cause, MAX_CAUSE_CHARS), { headers: h });
}

/** Sends `inputJson` to the service and reads its reply as a task answer. Never throws. */
export async function requestService(
  nc: NatsConnection,
  subject: string,
  inputJson: string,
  options: { timeoutMs: number; taskTokenHash: string; idempotencyKey?: string | undefined; headers?: Record<string, string> },
): Promise<TaskAnswer> {
  const h = natsHeaders();
  h.set(TOKEN_HASH_HEADER, options.taskTokenHash);
  if (options.idempotencyKey) h.set(IDEMPOTENCY_KEY_HEADER, options.idempotencyKey);
  for (const [k, v] of Object.entries(options.headers ?? {})) h.set(k, v);
  let reply: Msg;
  try {
    reply = await nc.request(subject, inputJson, { timeout: options.timeoutMs, headers: h });
  } catch (e) {
    if (isNoResponders(e))
      return { ok: false, error: 'jetstate.NoResponders', cause: `no NATS service listens on '${subject}'; start one or check the subject` };
    if (isTimeout(e))
      return { ok: false, error: 'jetstate.ServiceTimeout', cause: `the NATS service on '${subject}' did not answer within ${options.timeoutMs} ms` };
    return {
      ok: false,
      error: 'jetstate.ServiceRequestFailed',
      cause: truncateText(`request to '${subject}' failed: ${(e as Error).message}`, MAX_CAUSE_CHARS),
    };
  }
  const body = decoder.decode(reply.data);
  const error =
    reply.headers?.get(ERROR_HEADER) || reply.headers?.get('Nats-Service-Error-Code') || (reply.headers?.get('Nats-Service-Error') ? 'ServiceError' : '');
  if (error) {
    const cause = body || reply.headers?.get('Nats-Service-Error') || '';
    return { ok: false, error: truncateText(error, MAX_ERROR_CHARS), cause: truncateText(cause, MAX_CAUSE_CHARS) };
  }
  if (body.trim() === '') return { ok: true, output: 'null' };
  try {
    JSON.parse(body);
    checkPayloadSize(body, `the reply of '${subject}'`);
  } catch (e) {
    const why =
      e instanceof SyntaxError
        ? `the reply of '${subject}' is not JSON (${e.message}); reply with JSON, or fail with the '${ERROR_HEADER}' header`
        : (e as Error).message;
    return { ok: false, error: e instanceof SyntaxError ? 'jetstate.InvalidReply' : 'jetstate.InvalidOutput', cause: truncateText(why, MAX_CAUSE_CHARS) };
  }
  return { ok: true, output: body };
}

export interface NatsServiceHandlerOptions {
  connection: NatsConnection;
  /** The service's subject; a queue group of service instances may share it. */
  subject: string;
  /** How long one request may wait for its reply. */
  timeoutMs: number;
}

/**
 * A handler for {@link serveCallbackTasks} that hands each task to a plain NATS service by
 * request/reply (the contract above), with the task's idempotency key in the header
 * `Jetstate-Idempotency-Key`, and returns its reply; a service error, a timeout or no
 * service becomes a {@link TaskFailedError}, so the task fails with that error name.
 *
 * @example
 * ```ts
 * serveCallbackTasks({ connection, stream: 'SFN_TOKENS', durable: 'charge', clients,
 *   handler: natsServiceHandler({ connection, subject: 'billing.charge', timeoutMs: 30_000 }) });
 * ```
 */
export function natsServiceHandler(
  options: NatsServiceHandlerOptions,
): (task: { input: unknown; taskTokenHash: string; idempotencyKey?: string | undefined }) => Promise<unknown> {
  const { connection, subject, timeoutMs } = options;
  return async ({ input, taskTokenHash, idempotencyKey }) => {
    const answer = await requestService(connection, subject, JSON.stringify(input ?? null), {
      timeoutMs,
      taskTokenHash,
      idempotencyKey: idempotencyKey ?? taskTokenHash,
    });
    if (!answer.ok) throw new TaskFailedError(answer.error, answer.cause);
    return JSON.parse(answer.output) as unknown;
  };
}

function isNoResponders(e: unknown): boolean {
  return e instanceof NoRespondersError || (e instanceof RequestError && e.isNoResponders()) || (e as Error | null)?.cause instanceof NoRespondersError;
}

function isTimeout(e: unknown): boolean {
  return e instanceof TimeoutError || (e as Error | null)?.cause instanceof TimeoutError;
}
