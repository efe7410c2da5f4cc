/** The page's side of the API: JSON fetches that surface the server's words, and event streams. */
import type { ApiError } from '../protocol.js';

/** A refusal or failure, with the code and message the client or engine gave. */
export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

async function parse<T>(res: Response): Promise<T> {
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new ApiFailure(res.status, 'BAD_RESPONSE', text.slice(0, 500) || res.statusText);
  }
  if (!res.ok) {
    const e = (body as ApiError).error ?? { code: String(res.status), message: res.statusText };
    throw new ApiFailure(res.status, e.code, e.message);
  }
  return body as T;
}

export async function getJson<T>(path: string): Promise<T> {
  return parse<T>(await fetch(path, { headers: { accept: 'application/json' } }));
}

export async function postJson<T>(path: string, body: unknown): Promise<T> {
  return parse<T>(
    await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body: JSON.stringify(body) }),
  );
}

/** Opens a server-sent event stream; returns its closer. The browser reconnects by itself. */
export function follow(path: string, handlers: Record<string, (data: unknown) => void>, onState?: (open: boolean) => void): () => void {
  const source = new EventSource(path);
  for (const [event, fn] of Object.entries(handlers)) source.addEventListener(event, (e) => fn(JSON.parse((e as MessageEvent<string>).data)));
  source.onopen = () => onState?.(true);
  source.onerror = () => onState?.(false);
  return () => source.close();
}

export const enc = encodeURIComponent;
