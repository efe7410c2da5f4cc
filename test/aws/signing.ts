/**
 * Signing helpers for tests: requests signed by `@smithy/signature-v4` (the signer the AWS SDKs
 * use), independent of the endpoints' own verifier, and sent with fetch as a third party would.
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { escapeUri } from '../../adapters/local/aws/sigv4.js';

const bytes = (d: string | ArrayBuffer | ArrayBufferView): string | Uint8Array =>
  typeof d === 'string' ? d : ArrayBuffer.isView(d) ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : new Uint8Array(d);

/** SHA-256 in the shape the signer wants, from node:crypto. */
class Sha256 {
  private readonly hash: Hash | Hmac;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
}

export interface Creds {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string | undefined;
}

export interface PlainRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string | undefined;
}

function signer(creds: Creds, service: string, region: string): SignatureV4 {
  return new SignatureV4({ credentials: creds, service, region, sha256: Sha256, uriEscapePath: true, applyChecksum: true });
}

function toHttpRequest(endpoint: string, method: string, headers: Record<string, string>, body: string | undefined) {
  const u = new URL(endpoint);
  return {
    method,
    protocol: u.protocol,
    hostname: u.hostname,
    port: Number(u.port),
    path: '/',
    query: {} as Record<string, string>,
    headers: { host: u.host, ...headers },
    body,
  };
}

/** A header-signed request (as an SDK sends it), returned for a third party to replay. */
export async function signRequest(
  endpoint: string,
  creds: Creds,
  opts: { service: string; region: string; method?: string; headers?: Record<string, string>; body?: string; signingDate?: Date },
): Promise<PlainRequest> {
  const req = toHttpRequest(endpoint, opts.method ?? 'POST', opts.headers ?? {}, opts.body);
  const signed = (await signer(creds, opts.service, opts.region).sign(req as never, opts.signingDate ? { signingDate: opts.signingDate } : {})) as unknown as {
    headers: Record<string, string>;
  };
  const headers = { ...signed.headers };
  return { method: req.method, url: `${endpoint}/`, headers, body: opts.body };
}

/** A presigned request: the signature travels in the query string. */
export async function presignRequest(
  endpoint: string,
  creds: Creds,
  opts: {
    service: string;
    region: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    query?: Record<string, string>;
    expiresIn?: number;
  },
): Promise<PlainRequest> {
  const req = toHttpRequest(endpoint, opts.method ?? 'GET', opts.headers ?? {}, opts.body);
  req.query = opts.query ?? {};
  const signed = await signer(creds, opts.service, opts.region).presign(req as never, { expiresIn: opts.expiresIn ?? 60 });
  const query = Object.entries(signed.query as Record<string, string>)
    .map(([k, v]) => `${escapeUri(k)}=${escapeUri(v)}`)
    .join('&');
  return { method: req.method, url: `${endpoint}/?${query}`, headers: { ...(signed.headers as Record<string, string>) }, body: opts.body };
}

/** Sends a request exactly as given (fetch sets Host from the URL, which is what was signed). */
export async function replay(r: PlainRequest): Promise<{ status: number; text: string }> {
  const headers = Object.fromEntries(Object.entries(r.headers).filter(([k]) => k.toLowerCase() !== 'host'));
  const res = await fetch(r.url, { method: r.method, headers, body: r.body });
  return { status: res.status, text: await res.text() };
}

/** The text of an XML element, enough for STS answers. */
export const xmlField = (text: string, tag: string): string | undefined => new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(text)?.[1];
