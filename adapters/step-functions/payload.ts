/**
 * The payload guard: Step Functions refuses an input, output or task result over 256 KiB, but only
 * once the request has reached AWS, and a refused SendTaskSuccess leaves the execution waiting
 * until its timeout. So everything this adapter sends is encoded here first and refused locally,
 * before any AWS call, with an error that says what to do instead.
 */
import { ErrorCode, JetstateError } from '../../engine/internal.js';
import { canonicalJson } from '../../engine/internal.js';

/** Largest input, output or task result Step Functions accepts: 256 KiB of UTF-8 JSON. */
export const MAX_PAYLOAD_BYTES = 262_144;

/** Limits of SendTaskFailure, in characters. */
export const MAX_ERROR_CHARS = 256;
export const MAX_CAUSE_CHARS = 32_768;

/**
 * Encodes `value` as the JSON string Step Functions takes (an execution input, a task output),
 * or throws a {@link JetstateError} with code `INVALID_INPUT` when it is not JSON-serialisable or
 * over {@link MAX_PAYLOAD_BYTES}. `what` names the value in the message.
 *
 * @example
 * ```ts
 * const input = encodeStepFunctionsInput({ orderId, items }, `input of execution '${name}'`);
 * await client.send(new StartExecutionCommand({ stateMachineArn, name, input }));
 * ```
 */
export function encodeStepFunctionsInput(value: unknown, what: string): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (e) {
    throw new JetstateError(
      ErrorCode.InvalidInput,
      `${what} is not JSON-serialisable (${(e as Error).message}); pass plain data: objects, arrays, strings, finite numbers, booleans, null`,
      { cause: e },
    );
  }
  if (json === undefined) {
    throw new JetstateError(
      ErrorCode.InvalidInput,
      `${what} is not JSON-serialisable (${describe(value)}); pass plain data: objects, arrays, strings, finite numbers, booleans, null`,
    );
  }
  checkPayloadSize(json, what);
  return json;
}

/**
 * Throws like {@link encodeStepFunctionsInput} when an already encoded JSON string is over the
 * limit (a message body passed through as it is).
 */
export function checkPayloadSize(json: string, what: string): void {
  const bytes = Buffer.byteLength(json, 'utf8');
  if (bytes > MAX_PAYLOAD_BYTES) {
    throw new JetstateError(
      ErrorCode.InvalidInput,
      `${what} is ${bytes} bytes as JSON, over the Step Functions limit of ${MAX_PAYLOAD_BYTES} bytes (256 KiB); ` +
        `pass a reference instead, such as an S3 key or a NATS KV key, and load the data where it is needed`,
    );
  }
}

/**
 * Cuts `text` to at most `maxChars` UTF-16 code units without splitting a surrogate pair, marking
 * the cut with '…'. Used for SendTaskFailure's `error` (256) and `cause` (32,768).
 */
export function truncateText(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  let end = maxChars - 1;
  // Do not leave half of a surrogate pair before the ellipsis.
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end -= 1;
  return `${text.slice(0, end)}…`;
}

function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'symbol') return 'a symbol';
  return typeof value;
}

/**
 * Whether two execution inputs (JSON text) are the same apart from the trace context `_jetstate`
 * that a delegated stage or a trigger adds: each attempt or retry may carry another one.
 */
export function sameInputIgnoringTrace(a: string | undefined, b: string): boolean {
  if (a === b) return true;
  if (a === undefined) return false;
  try {
    return canonicalJson(withoutTrace(JSON.parse(a))) === canonicalJson(withoutTrace(JSON.parse(b)));
  } catch {
    return false;
  }
}

function withoutTrace(v: unknown): unknown {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || !('_jetstate' in v)) return v;
  const { _jetstate: _, ...rest } = v as Record<string, unknown>;
  return rest;
}
