/**
 * Whether AWS answered a call at all. A call that got no HTTP response (connection refused or
 * reset, a DNS failure, a timeout) says nothing about Step Functions: the network between this
 * engine and AWS is down, as at an edge site cut off from the cloud. The adapter tries such calls
 * again, with a capped backoff, for as long as it takes, instead of spending the task's retry
 * attempts, which stay for what AWS answers (throttling, 5xx, 4xx). See execution-extension.ts.
 */

/** Node's and the AWS SDK's codes of a request that got no response. */
const NO_ANSWER_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
/** The SDK's names of a request that timed out or never reached a server. */
const NO_ANSWER_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'NoAnswerError']);

/** How long to wait between tries while AWS gives no answer. */
export interface ReachPolicy {
  /** First wait; it doubles per try (±20% jitter) up to `maxIntervalMs`. */
  intervalMs: number;
  maxIntervalMs: number;
}

/** A call that this adapter gave up waiting on: the request may or may not have reached AWS. */
export class NoAnswerError extends Error {
  override readonly name = 'NoAnswerError';
}

type ErrorLike = { name?: unknown; code?: unknown; cause?: unknown; errors?: unknown; $metadata?: { httpStatusCode?: unknown }; $response?: unknown };

/**
 * True when `e` (or what caused it, e.g. an AssumeRole failure wrapped by the client pool) is a
 * call that got no response from AWS. False for anything AWS answered: an error with an HTTP
 * status is AWS's (or a proxy's) answer, and keeps the task's retry policy.
 */
export function isUnanswered(e: unknown): boolean {
  for (let x = e as ErrorLike | undefined, depth = 0; x && typeof x === 'object' && depth < 5; x = x.cause as ErrorLike | undefined, depth++) {
    if (typeof x.$metadata?.httpStatusCode === 'number' || x.$response !== undefined) return false;
    if (NO_ANSWER_CODES.has(String(x.code)) || NO_ANSWER_NAMES.has(String(x.name))) return true;
    // Node's connect with several addresses (happy eyeballs) fails with all of them.
    if (Array.isArray(x.errors) && x.errors.length > 0 && x.errors.every((y) => isUnanswered(y))) return true;
  }
  return false;
}

/** `CODE: message` of an error, for logs. */
export function describeError(e: unknown): string {
  const x = e as { name?: string; code?: string; message?: string };
  return `${x.code ?? x.name ?? 'Error'}: ${x.message ?? String(e)}`;
}

/** Resolves after `ms`, or as soon as one of `signals` aborts. */
export function pause(ms: number, signals: readonly AbortSignal[]): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const s of signals) {
      if (s.aborted) return done();
      s.addEventListener('abort', done, { once: true });
    }
  });
}

/** Rejects with the signal's reason once it aborts; never resolves. */
export function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
  });
}
