/**
 * AWS IAM identity, the way Vault's AWS auth and aws-iam-authenticator prove it: the sender signs
 * an `sts:GetCallerIdentity` request with its own credentials and sends the signed request as the
 * token; the engine replays it to STS, and STS's answer names the principal. The engine never
 * holds the sender's secret, and the signature covers an `x-jetstate-audience` header, so a token
 * made for this engine is refused by STS if replayed with another audience.
 *
 * The verifier only ever sends to the STS endpoint of its own options: a token that names
 * another host is refused before any request (no SSRF through tokens), and only an exact
 * GetCallerIdentity is replayed, so a token cannot make the engine perform any other STS action.
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { z } from 'zod';
import { ErrorCode, fail } from '../errors.js';

import { IdentityReason, reject } from './identity-error.js';
import type { TokenCheck } from './verifier-base.js';
import type { Clock } from '../clock.js';

export const AWS_IAM_TOKEN_PREFIX = 'aws-iam:';
/** The signed header that binds a token to one audience. */
export const AUDIENCE_HEADER = 'x-jetstate-audience';
const STS_VERSION = '2011-06-15';
/** How far X-Amz-Date may be from now, either way; STS itself allows the same skew. */
const MAX_SKEW_MS = 15 * 60_000;
const MAX_RESPONSE_CHARS = 64 * 1024;

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

const StsEndpoint = z.string().refine(
  (s) => {
    try {
      const u = new URL(s);
      return (u.protocol === 'https:' || (u.protocol === 'http:' && LOOPBACK.has(u.hostname))) && u.search === '' && u.hash === '' && u.username === '';
    } catch {
      return false;
    }
  },
  { message: 'stsEndpoint must be an https:// URL without query (http:// only on loopback, for tests), e.g. https://sts.eu-west-1.amazonaws.com' },
);

/** Printable ASCII without surrounding spaces: it travels as an HTTP header value. */
const Audience = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/, 'audience: printable ASCII, no leading or trailing spaces');

const REGION = /^[a-z]{2}(?:-[a-z]+)+-\d+$/;

export const AwsIamOptionsSchema = z
  .object({
    /** Where tokens are replayed. Default: the regional endpoint of `region`, else https://sts.amazonaws.com. */
    stsEndpoint: StsEndpoint.optional(),
    /** When set, tokens must be signed for this region (and the default endpoint is its regional one). */
    region: z.string().regex(REGION, 'region: e.g. eu-west-1').optional(),
    /** The audience tokens must be signed for, e.g. the engine's name: `jetstate-orders-prod`. */
    audience: Audience,
    timeoutMs: z.number().int().min(1).max(60_000).default(5_000),
    /** A verified token is reused from the cache for at most this long (and never past its expiry). */
    cacheTtlMs: z.number().int().min(0).default(300_000),
  })
  .strict()
  .transform((o) => ({ ...o, stsEndpoint: o.stsEndpoint ?? defaultStsEndpoint(o.region) }));

export type AwsIamOptions = z.input<typeof AwsIamOptionsSchema>;
export type ResolvedAwsIamOptions = z.output<typeof AwsIamOptionsSchema>;

function defaultStsEndpoint(region: string | undefined): string {
  return region ? `https://sts.${region}.amazonaws.com` : 'https://sts.amazonaws.com';
}

/** The request inside a token. */
interface SignedRequest {
  method: 'GET' | 'POST';
  url: string;
  headers: Record<string, string>;
  body: string;
}

const SignedRequestSchema = z
  .object({
    method: z.enum(['GET', 'POST']),
    url: z.string().min(1).max(8_192),
    headers: z.record(z.string(), z.string()),
    body: z.string().max(1_024).default(''),
  })
  .strict();

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/** AWS credentials, as the SDK's credential providers return them. */
export interface AwsCredentialsLike {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string | undefined;
  expiration?: Date | undefined;
}

export interface AwsIamTokenOptions {
  /** Credentials, or a provider such as `fromNodeProviderChain()` (called once per token). */
  credentials: AwsCredentialsLike | (() => Promise<AwsCredentialsLike>);
  region: string;
  /** Must be the verifier's `stsEndpoint`. Default: the regional endpoint of `region`. */
  stsEndpoint?: string;
  /** The verifier's `audience`. */
  audience: string;
  /**
   * `GET` (default): a presigned URL, like aws-iam-authenticator, valid `expiresInSec`.
   * `POST`: a header-signed request, like Vault's AWS auth, valid 15 minutes (the STS limit).
   */
  method?: 'GET' | 'POST';
  /** Lifetime of a `GET` token, 1-900 s (default 300). */
  expiresInSec?: number;
  /** The signing time; default now. */
  signingDate?: Date;
}

/**
 * Makes an AWS IAM token for an engine whose `identity.awsIam.audience` is `audience`. Needs
 * `@smithy/signature-v4`, loaded only when this is called.
 *
 * @example
 * ```ts
 * import { fromNodeProviderChain } from '@aws-sdk/credential-providers';
 * const token = await createAwsIamToken({ credentials: fromNodeProviderChain(), region: 'eu-west-1', audience: 'jetstate-orders' });
 * await client.send(order, 'o-17', { type: 'PAY', amount: 10 }, { token });
 * ```
 */
export async function createAwsIamToken(options: AwsIamTokenOptions): Promise<string> {
  const method = options.method ?? 'GET';
  if (!REGION.test(options.region ?? ''))
    fail(ErrorCode.InvalidOptions, `createAwsIamToken: region ${JSON.stringify(options.region)} is not an AWS region, e.g. eu-west-1`);
  if (!Audience.safeParse(options.audience).success)
    fail(ErrorCode.InvalidOptions, 'createAwsIamToken: audience must be printable ASCII without surrounding spaces, as the verifier expects');
  if (method === 'POST' && options.expiresInSec !== undefined) {
    fail(ErrorCode.InvalidOptions, 'createAwsIamToken: expiresInSec applies to GET (presigned) tokens; a POST token is valid 15 minutes');
  }
  const expiresInSec = options.expiresInSec ?? 300;
  if (!Number.isInteger(expiresInSec) || expiresInSec < 1 || expiresInSec > 900)
    fail(ErrorCode.InvalidOptions, 'createAwsIamToken: expiresInSec must be an integer from 1 to 900');
  const endpoint = options.stsEndpoint ?? defaultStsEndpoint(options.region);
  if (!StsEndpoint.safeParse(endpoint).success)
    fail(ErrorCode.InvalidOptions, `createAwsIamToken: stsEndpoint '${endpoint}' must be an https:// URL (http:// only on loopback)`);

  let SignatureV4: typeof import('@smithy/signature-v4').SignatureV4;
  try {
    ({ SignatureV4 } = await import('@smithy/signature-v4'));
  } catch (e) {
    fail(ErrorCode.InvalidOptions, 'createAwsIamToken needs the package @smithy/signature-v4: npm install @smithy/signature-v4', { cause: e });
  }
  const credentials = typeof options.credentials === 'function' ? await options.credentials() : options.credentials;
  const signer = new SignatureV4({ credentials, region: options.region, service: 'sts', sha256: NodeSha256, uriEscapePath: true });

  const url = new URL(endpoint);
  const action = { Action: 'GetCallerIdentity', Version: STS_VERSION };
  const headers: Record<string, string> = { host: url.host, [AUDIENCE_HEADER]: options.audience };
  const base = {
    protocol: url.protocol,
    hostname: url.hostname,
    port: url.port === '' ? undefined : Number(url.port),
    path: url.pathname,
  };
  const signingDate = options.signingDate ?? new Date();
  let signed: { query?: Record<string, string | string[] | null>; headers: Record<string, string>; body?: unknown };
  if (method === 'GET') {
    signed = await signer.presign({ ...base, method, query: action, headers }, { expiresIn: expiresInSec, signingDate });
  } else {
    const body = new URLSearchParams(action).toString();
    signed = await signer.sign(
      { ...base, method, query: {}, headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, body },
      { signingDate },
    );
  }
  const search = Object.entries(signed.query ?? {})
    .flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x] as const) : v === null ? [[k, ''] as const] : [[k, v] as const]))
    .map(([k, v]) => `${rfc3986(k)}=${rfc3986(v)}`)
    .join('&');
  const request: SignedRequest = {
    method,
    url: `${url.origin}${url.pathname}${search ? `?${search}` : ''}`,
    headers: Object.fromEntries(Object.entries(signed.headers).map(([k, v]) => [k.toLowerCase(), String(v)])),
    body: typeof signed.body === 'string' ? signed.body : '',
  };
  return AWS_IAM_TOKEN_PREFIX + Buffer.from(JSON.stringify(request)).toString('base64url');
}

const rfc3986 = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

type SourceData = string | ArrayBuffer | ArrayBufferView;
const bytes = (d: SourceData): Uint8Array =>
  typeof d === 'string' ? Buffer.from(d, 'utf8') : ArrayBuffer.isView(d) ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : new Uint8Array(d);

/** SHA-256 and HMAC-SHA256 from node:crypto, in the shape SignatureV4 wants. */
class NodeSha256 {
  private hash: Hash | Hmac;
  constructor(private readonly secret?: SourceData) {
    this.hash = this.fresh();
  }
  private fresh(): Hash | Hmac {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(this.secret));
  }
  update(data: SourceData): void {
    this.hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
  reset(): void {
    this.hash = this.fresh();
  }
}

// ---------------------------------------------------------------------------------------------
// Verifier side
// ---------------------------------------------------------------------------------------------

/** Query parameters a presigned GetCallerIdentity may carry besides Action and Version. */
const PRESIGN_PARAMS = new Set([
  'X-Amz-Algorithm',
  'X-Amz-Credential',
  'X-Amz-Date',
  'X-Amz-Expires',
  'X-Amz-SignedHeaders',
  'X-Amz-Signature',
  'X-Amz-Security-Token',
]);
/** Signed headers that fetch sets itself from the URL and body. */
const SET_BY_FETCH = new Set(['host', 'content-length']);
const HEADER_NAME = /^[a-z0-9-]{1,64}$/;
const HEADER_VALUE = /^[\x20-\x7e\t]*$/;
const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;

/** What the token says, after the checks that need no network. */
interface Replay {
  url: URL;
  init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string };
  expiresAtMs: number;
}

/**
 * The check of AWS IAM tokens: decode, check the request locally (shape, endpoint, audience,
 * time), then replay it to STS and read the caller from the answer.
 */
export function awsIamCheck(options: ResolvedAwsIamOptions, clock: Clock): TokenCheck {
  const endpoint = new URL(options.stsEndpoint);
  return async (token, audience, nowMs) => {
    const replay = inspect(token, endpoint, audience ?? options.audience, options.region, nowMs);
    const caller = await callSts(replay, options.timeoutMs, endpoint);
    const claims = principalClaims(caller);
    return {
      identity: { method: 'aws-iam', subject: caller.arn, issuer: 'aws-iam', claims, expiresAt: replay.expiresAtMs },
      cacheUntilMs: Math.min(replay.expiresAtMs, clock.now() + options.cacheTtlMs),
    };
  };
}

function decode(token: string): SignedRequest {
  const encoded = token.slice(AWS_IAM_TOKEN_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(encoded)) reject(IdentityReason.Malformed, `an '${AWS_IAM_TOKEN_PREFIX}' token is followed by base64url, and this one is not`);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8'));
  } catch (e) {
    reject(IdentityReason.Malformed, `the '${AWS_IAM_TOKEN_PREFIX}' token does not hold JSON`, { cause: e });
  }
  const parsed = SignedRequestSchema.safeParse(json);
  if (!parsed.success)
    reject(IdentityReason.Malformed, `the '${AWS_IAM_TOKEN_PREFIX}' token is not { method, url, headers, body }: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

function inspect(token: string, endpoint: URL, audience: string, region: string | undefined, nowMs: number): Replay {
  const request = decode(token);
  let url: URL;
  try {
    url = new URL(request.url);
  } catch (e) {
    reject(IdentityReason.Malformed, 'the token URL does not parse', { cause: e });
  }
  // The replay goes to our endpoint whatever the token says; a token for another host is refused.
  if (url.origin !== endpoint.origin || url.username !== '' || url.password !== '' || url.hash !== '') {
    reject(IdentityReason.WrongIssuer, `the token is signed for ${url.origin}, not this engine's STS endpoint ${endpoint.origin}`);
  }
  if (url.pathname !== endpoint.pathname) reject(IdentityReason.Malformed, `the token's path ${url.pathname} is not the STS endpoint's ${endpoint.pathname}`);

  const headers = new Map<string, string>();
  for (const [name, value] of Object.entries(request.headers)) {
    const lower = name.toLowerCase();
    if (!HEADER_NAME.test(lower) || !HEADER_VALUE.test(value) || headers.has(lower))
      reject(IdentityReason.Malformed, `the token's header '${name}' is not a valid, unique HTTP header`);
    headers.set(lower, value);
  }
  if (headers.has('host') && headers.get('host') !== endpoint.host)
    reject(IdentityReason.WrongIssuer, `the token's host header '${headers.get('host')}' is not ${endpoint.host}`);

  // ';' separates parameters for some parsers and not for others: refuse what could be read two ways.
  if (url.search.includes(';') || request.body.includes(';')) reject(IdentityReason.Malformed, "the token's request parameters contain ';'");
  const query = uniqueParams(url.searchParams, 'query');
  let signedHeaders: string[];
  let credential: string;
  let amzDate: string | undefined;
  let expiresInSec: number | undefined;
  if (request.method === 'POST') {
    if (url.search !== '') reject(IdentityReason.Malformed, 'a POST token carries its parameters in the body, and this one has a query string');
    const contentType = headers.get('content-type') ?? '';
    if (!/^application\/x-www-form-urlencoded(?:;\s*charset=utf-8)?$/i.test(contentType))
      reject(IdentityReason.Malformed, `a POST token must be application/x-www-form-urlencoded, not '${contentType}'`);
    checkAction(uniqueParams(new URLSearchParams(request.body), 'body'), new Set());
    const auth = /^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/.exec(headers.get('authorization') ?? '');
    if (!auth) reject(IdentityReason.Malformed, 'a POST token needs an AWS4-HMAC-SHA256 authorization header');
    credential = auth[1]!;
    signedHeaders = auth[2]!.split(';');
    amzDate = headers.get('x-amz-date');
  } else {
    if (request.body !== '') reject(IdentityReason.Malformed, 'a GET token has no body');
    checkAction(query, PRESIGN_PARAMS);
    if (query.get('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256' || !query.has('X-Amz-Signature'))
      reject(IdentityReason.Malformed, 'a GET token must be a SigV4-presigned URL');
    credential = query.get('X-Amz-Credential') ?? '';
    signedHeaders = (query.get('X-Amz-SignedHeaders') ?? '').split(';');
    amzDate = query.get('X-Amz-Date');
    const expires = Number(query.get('X-Amz-Expires') ?? 'NaN');
    if (!Number.isInteger(expires) || expires < 1 || expires > 604_800) reject(IdentityReason.Malformed, 'a GET token needs X-Amz-Expires in seconds');
    expiresInSec = expires;
  }

  const scope = /^[^/]+\/(\d{8})\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request$/.exec(credential);
  if (!scope || scope[3] !== 'sts') reject(IdentityReason.Malformed, 'the token is not signed for the sts service');
  if (region !== undefined && scope[2] !== region) reject(IdentityReason.WrongIssuer, `the token is signed for region ${scope[2]}, not ${region}`);

  if (!signedHeaders.includes(AUDIENCE_HEADER))
    reject(IdentityReason.WrongAudience, `the token does not sign the '${AUDIENCE_HEADER}' header; make it with createAwsIamToken({ audience })`);
  if (headers.get(AUDIENCE_HEADER) !== audience)
    reject(IdentityReason.WrongAudience, `the token is for audience ${JSON.stringify(headers.get(AUDIENCE_HEADER))}, not '${audience}'`);

  const signedAtMs = parseAmzDate(amzDate);
  if (signedAtMs - nowMs > MAX_SKEW_MS)
    reject(IdentityReason.NotYetValid, `the token is signed at ${new Date(signedAtMs).toISOString()}, more than 15 minutes ahead; check the clocks`);
  const expiresAtMs = Math.min(signedAtMs + MAX_SKEW_MS, expiresInSec === undefined ? Number.POSITIVE_INFINITY : signedAtMs + expiresInSec * 1000);
  if (nowMs > expiresAtMs) reject(IdentityReason.Expired, `the token expired at ${new Date(expiresAtMs).toISOString()}; make a fresh one`);

  // Replay exactly the signed headers (and the authorization of a POST), nothing else.
  const forward: Record<string, string> = {};
  for (const name of signedHeaders) {
    if (SET_BY_FETCH.has(name)) continue;
    const value = headers.get(name);
    if (value === undefined) reject(IdentityReason.Malformed, `the token signs header '${name}' but does not carry it`);
    forward[name] = value;
  }
  if (request.method === 'POST') forward.authorization = headers.get('authorization')!;
  const target = new URL(`${url.pathname}${url.search}`, endpoint.origin);
  return {
    url: target,
    init: request.method === 'POST' ? { method: 'POST', headers: forward, body: request.body } : { method: 'GET', headers: forward },
    expiresAtMs,
  };
}

function uniqueParams(params: URLSearchParams, where: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of params) {
    if (out.has(k)) reject(IdentityReason.Malformed, `the token's ${where} repeats '${k}'`);
    out.set(k, v);
  }
  return out;
}

/** Exactly Action=GetCallerIdentity and Version, plus the SigV4 parameters when presigned. */
function checkAction(params: Map<string, string>, allowed: ReadonlySet<string>): void {
  if (params.get('Action') !== 'GetCallerIdentity')
    reject(IdentityReason.Malformed, `the token is not an sts:GetCallerIdentity request (Action=${JSON.stringify(params.get('Action') ?? null)})`);
  if (params.get('Version') !== STS_VERSION) reject(IdentityReason.Malformed, `the token's STS Version must be ${STS_VERSION}`);
  for (const k of params.keys()) {
    if (k !== 'Action' && k !== 'Version' && !allowed.has(k))
      reject(IdentityReason.Malformed, `the token's request has parameter '${k}', which GetCallerIdentity does not take`);
  }
}

function parseAmzDate(value: string | undefined): number {
  const m = AMZ_DATE.exec(value ?? '');
  if (!m) reject(IdentityReason.Malformed, 'the token has no X-Amz-Date (YYYYMMDDTHHMMSSZ)');
  const ms = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
  if (!Number.isFinite(ms)) reject(IdentityReason.Malformed, 'the token has no valid X-Amz-Date');
  return ms;
}

interface Caller {
  arn: string;
  account: string;
  userId: string;
}

async function callSts(replay: Replay, timeoutMs: number, endpoint: URL): Promise<Caller> {
  let status: number;
  let text: string;
  try {
    const res = await fetch(replay.url, { ...replay.init, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) });
    status = res.status;
    text = (await res.text()).slice(0, MAX_RESPONSE_CHARS);
  } catch (e) {
    reject(IdentityReason.StsUnreachable, `STS at ${endpoint.origin} did not answer within ${timeoutMs} ms: ${(e as Error).message}`, { cause: e });
  }
  if (status === 200) {
    const arn = xmlText(text, 'Arn');
    const account = xmlText(text, 'Account');
    const userId = xmlText(text, 'UserId');
    if (arn === undefined || account === undefined || userId === undefined || !arn.startsWith('arn:')) {
      reject(IdentityReason.StsUnreachable, `STS at ${endpoint.origin} answered 200 without a GetCallerIdentityResult`);
    }
    return { arn, account, userId };
  }
  const code = xmlText(text, 'Code');
  if (status >= 400 && status < 500 && code !== undefined) {
    const message = xmlText(text, 'Message') ?? '';
    reject(IdentityReason.StsRejected, `STS refused the token: ${code}${message ? `: ${message}` : ''}`, { stsCode: code, retryable: /Throttl/.test(code) });
  }
  reject(IdentityReason.StsUnreachable, `STS at ${endpoint.origin} answered HTTP ${status}${code ? ` (${code})` : ''}; retry later`, { stsCode: code });
}

const XML_ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', apos: "'", quot: '"' };

/** The text of the first `<tag>` of an STS answer; STS answers are flat enough for this. */
function xmlText(xml: string, tag: string): string | undefined {
  const m = new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(xml);
  if (!m) return undefined;
  return m[1]!
    .trim()
    .replace(/&(lt|gt|amp|apos|quot|#\d+|#x[0-9a-fA-F]+);/g, (_, e: string) =>
      e.startsWith('#x') ? String.fromCodePoint(parseInt(e.slice(2), 16)) : e.startsWith('#') ? String.fromCodePoint(Number(e.slice(1))) : XML_ENTITIES[e]!,
    );
}

/**
 * The claims of an AWS principal. An assumed role's subject stays its session ARN; its role ARN
 * (`arn:aws:iam::<acct>:role/<role>`, without the role's path, which STS does not return) is
 * there too, so role mappings can name either.
 */
export function principalClaims(caller: Caller): Record<string, unknown> {
  const claims: Record<string, unknown> = { arn: caller.arn, account: caller.account, userId: caller.userId };
  const m = /^arn:([\w-]+):(iam|sts)::(\d{12}):(.+)$/.exec(caller.arn);
  const resource = m?.[4] ?? '';
  if (m && m[2] === 'sts' && resource.startsWith('assumed-role/')) {
    const [, roleName, ...session] = resource.split('/');
    claims.principalType = 'assumed-role';
    claims.roleName = roleName;
    claims.roleArn = `arn:${m[1]}:iam::${m[3]}:role/${roleName}`;
    claims.sessionName = session.join('/');
  } else if (m && m[2] === 'sts' && resource.startsWith('federated-user/')) {
    claims.principalType = 'federated-user';
  } else if (m && resource === 'root') {
    claims.principalType = 'root';
  } else if (m && resource.startsWith('user/')) {
    claims.principalType = 'user';
  } else {
    claims.principalType = 'other';
  }
  return claims;
}
