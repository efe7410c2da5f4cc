/**
 * Small HTTP pieces of the UI server on node:http: JSON answers, bounded JSON bodies, the checks
 * every request passes (Host and Origin, against DNS rebinding and cross-site posts), and
 * server-sent event streams.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCode, JetstateError } from '../../engine/index.js';
import type { ApiError } from './protocol.js';

/** Headers on every answer: nothing is framed, sniffed or loaded from elsewhere. */
export const SECURITY_HEADERS: Record<string, string> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'content-security-policy':
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; worker-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
};

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, (k, v: unknown) => (k === 'matches' && typeof v === 'function' ? undefined : v));
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

const STATUS_OF: Partial<Record<string, number>> = {
  [ErrorCode.InvalidEvent]: 400,
  [ErrorCode.InvalidId]: 400,
  [ErrorCode.InvalidInput]: 400,
  [ErrorCode.InvalidOptions]: 400,
  [ErrorCode.InstanceNotFound]: 404,
  [ErrorCode.WorkflowNotRegistered]: 404,
  [ErrorCode.Unauthenticated]: 401,
  [ErrorCode.PermissionDenied]: 403,
  [ErrorCode.LimitExceeded]: 413,
  [ErrorCode.InstanceConflict]: 409,
  [ErrorCode.Timeout]: 504,
  [ErrorCode.RecordUnreadable]: 422,
};

/** An error as the API answers it: the engine's code and message, unchanged. */
export function sendError(res: ServerResponse, e: unknown): void {
  let status = 500;
  let body: ApiError;
  if (e instanceof HttpError) {
    status = e.status;
    body = { error: { code: e.code, message: e.message } };
  } else if (e instanceof JetstateError) {
    status = STATUS_OF[e.code] ?? 500;
    body = { error: { code: e.code, message: e.message } };
  } else {
    body = { error: { code: 'INTERNAL', message: (e as Error)?.message ?? String(e) } };
  }
  if (!res.headersSent) sendJson(res, status, body);
  else res.end();
}

/** Reads a JSON body of at most `maxBytes`; only `application/json` (a cross-site form cannot send it without a preflight). */
export async function readJson(req: IncomingMessage, maxBytes = 300_000): Promise<unknown> {
  const type = req.headers['content-type'] ?? '';
  if (!/^application\/json\b/i.test(type)) throw new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', 'send the body as application/json');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw new HttpError(413, 'BODY_TOO_LARGE', `the request body is over ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
  } catch (e) {
    throw new HttpError(400, 'BAD_JSON', `the request body is not JSON: ${(e as Error).message}`);
  }
}

/**
 * Refuses requests whose Host is not this server's loopback address (a DNS-rebinding page would
 * send its own name) and writes whose Origin is another site's.
 */
export function checkOrigin(req: IncomingMessage, port: number): void {
  const allowed = [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`];
  const host = (req.headers.host ?? '').toLowerCase();
  if (!allowed.includes(host)) throw new HttpError(421, 'WRONG_HOST', `this server answers only to ${allowed.join(', ')}; open http://127.0.0.1:${port}/`);
  const origin = req.headers.origin;
  if (req.method !== 'GET' && req.method !== 'HEAD' && origin !== undefined && !allowed.some((a) => origin.toLowerCase() === `http://${a}`)) {
    throw new HttpError(403, 'WRONG_ORIGIN', `requests from ${origin} are refused`);
  }
}

/**
 * A server-sent event stream. A comment every 15 s keeps proxies and the browser from closing an
 * idle stream; `onClose` runs once the page goes away.
 */
export class EventStream {
  private readonly ping: NodeJS.Timeout;
  private closed = false;
  private readonly closers: Array<() => void> = [];

  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write('retry: 1000\n\n');
    this.ping = setInterval(() => res.write(': ping\n\n'), 15_000);
    this.ping.unref();
    res.once('close', () => this.close());
  }

  send(event: string, data: unknown): void {
    if (this.closed) return;
    this.res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  onClose(fn: () => void): void {
    if (this.closed) fn();
    else this.closers.push(fn);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.ping);
    this.res.end();
    for (const fn of this.closers.splice(0)) fn();
  }
}
