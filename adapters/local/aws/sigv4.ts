/**
 * AWS Signature Version 4 verification for the loopback AWS endpoints (STS and Step Functions).
 *
 * The endpoints check signatures the way AWS does, so a test that passes here proves the client
 * signs what AWS would accept: the canonical request is rebuilt from the request as received
 * (method, path, query, the headers the client listed as signed, the payload hash), the signing
 * key is derived from the secret of the access key, and the two signatures are compared in
 * constant time. Both forms are understood: the `Authorization` header and the presigned query
 * (`X-Amz-Signature`, how a third party replays a signed request it was handed).
 *
 * Only node:crypto is used, so the endpoints need no AWS package at run time.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** What an endpoint knows about an access key; temporary keys carry a session token and expiry. */
export interface SigningSecret {
  secretAccessKey: string;
  /** Required in the request (`X-Amz-Security-Token`) when set, as for STS-issued credentials. */
  sessionToken?: string | undefined;
  /** After this instant the key is refused with an expired-token failure. */
  expiration?: Date | undefined;
}

/** Finds the secret of an access key; `null` when the key is unknown. */
export type SecretLookup<S extends SigningSecret = SigningSecret> = (accessKeyId: string) => S | null | undefined;

/** A request as received: the URL exactly as on the wire (path and query), headers, raw body. */
export interface SignedRequestLike {
  method: string;
  /** Path and query as sent, e.g. `/?Action=GetCallerIdentity&X-Amz-Signature=...`. */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: Uint8Array | string;
}

/** Why a request was refused; each endpoint maps these onto its own AWS error codes. */
export const SigV4Failure = {
  /** No `Authorization` header and no presigned query. */
  MissingAuthentication: 'MissingAuthentication',
  /** An `Authorization` header or presigned query that misses parts or is not AWS4-HMAC-SHA256. */
  IncompleteSignature: 'IncompleteSignature',
  /** The access key is unknown, or its session token is missing or wrong. */
  UnknownAccessKey: 'UnknownAccessKey',
  /** The signature differs from the one computed here (wrong secret, tampered request, wrong scope). */
  SignatureDoesNotMatch: 'SignatureDoesNotMatch',
  /** The request was signed more than the allowed skew ago (or in the future), or a presigned URL expired. */
  RequestExpired: 'RequestExpired',
  /** The temporary credentials expired. */
  ExpiredToken: 'ExpiredToken',
} as const;
export type SigV4Failure = (typeof SigV4Failure)[keyof typeof SigV4Failure];

export type SigV4Result<S extends SigningSecret = SigningSecret> =
  | {
      ok: true;
      accessKeyId: string;
      secret: S;
      region: string;
      service: string;
      presigned: boolean;
      /** Lower-case names of the signed headers, in canonical order. */
      signedHeaders: string[];
    }
  | { ok: false; failure: SigV4Failure; message: string; accessKeyId?: string };

export interface VerifyOptions {
  /** The service the credential scope must name (`sts`, `states`). */
  service: string;
  /** The region the credential scope must name; any region when omitted. */
  region?: string | undefined;
  /** Clock of the check, for tests; defaults to `Date.now()`. */
  nowMs?: number | undefined;
  /** How far the signing time may be from now, as AWS allows: 15 minutes. */
  maxSkewMs?: number | undefined;
}

const ALGORITHM = 'AWS4-HMAC-SHA256';
const FIFTEEN_MINUTES_MS = 15 * 60_000;
const MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600;

const sha256Hex = (data: Uint8Array | string): string => createHash('sha256').update(data).digest('hex');
const hmac = (key: Uint8Array | string, data: string): Buffer => createHmac('sha256', key).update(data, 'utf8').digest();

/** RFC 3986 escaping as the AWS SDKs do it (`encodeURIComponent` plus `!'()*`). */
export function escapeUri(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** The signing key for one day, region and service. */
export function deriveSigningKey(secretAccessKey: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date), region), service), 'aws4_request');
}

/** Parses `20240101T120000Z` into epoch ms, or `null`. */
export function parseAmzDate(value: string): number | null {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return null;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}

/** The canonical path of non-S3 services: normalised, then escaped once more, slashes kept. */
function canonicalPath(rawPath: string): string {
  let path: string;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    path = rawPath;
  }
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const normalised = `${path.startsWith('/') ? '/' : ''}${segments.join('/')}${segments.length > 0 && path.endsWith('/') ? '/' : ''}`;
  return escapeUri(normalised).replace(/%2F/g, '/');
}

function canonicalQuery(params: Array<[string, string]>): string {
  return params
    .filter(([k]) => k.toLowerCase() !== 'x-amz-signature')
    .map(([k, v]) => [escapeUri(k), escapeUri(v)] as const)
    .sort(([ak, av], [bk, bv]) => (ak < bk ? -1 : ak > bk ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

/** Query pairs as sent; unlike URLSearchParams, `+` stays a plus (the SDKs encode spaces as %20). */
function parseQuery(query: string): Array<[string, string]> {
  if (!query) return [];
  const decode = (s: string): string => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  };
  return query
    .split('&')
    .filter((p) => p !== '')
    .map((pair) => {
      const i = pair.indexOf('=');
      return i < 0 ? [decode(pair), ''] : [decode(pair.slice(0, i)), decode(pair.slice(i + 1))];
    });
}

function headerValue(headers: SignedRequestLike['headers'], name: string): string | undefined {
  const v = headers[name] ?? Object.entries(headers).find(([k]) => k.toLowerCase() === name)?.[1];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(',') : v;
}

interface SignatureParts {
  presigned: boolean;
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  terminator: string;
  signedHeaders: string[];
  signature: string;
  amzDate: string;
  expiresS: number | null;
  sessionToken: string | undefined;
}

type Parsed = { ok: true; parts: SignatureParts } | { ok: false; failure: SigV4Failure; message: string };

function parseSignature(request: SignedRequestLike, query: Array<[string, string]>): Parsed {
  const q = (name: string): string | undefined => query.find(([k]) => k === name)?.[1];
  const incomplete = (message: string): Parsed => ({ ok: false, failure: SigV4Failure.IncompleteSignature, message });
  const auth = headerValue(request.headers, 'authorization');
  const presignedSignature = q('X-Amz-Signature');
  if (auth === undefined && presignedSignature === undefined) {
    return { ok: false, failure: SigV4Failure.MissingAuthentication, message: 'Request is missing Authentication Token' };
  }
  let credential: string | undefined;
  let signedHeaders: string | undefined;
  let signature: string | undefined;
  let amzDate: string | undefined;
  let expiresS: number | null = null;
  let sessionToken: string | undefined;
  const presigned = auth === undefined;
  if (!presigned) {
    const m = /^(\S+)\s+(.*)$/.exec(auth.trim());
    if (!m || m[1] !== ALGORITHM) return incomplete(`Authorization header requires the ${ALGORITHM} algorithm`);
    for (const part of m[2]!.split(',')) {
      const [k, ...rest] = part.trim().split('=');
      const v = rest.join('=');
      if (k === 'Credential') credential = v;
      else if (k === 'SignedHeaders') signedHeaders = v;
      else if (k === 'Signature') signature = v;
    }
    amzDate = headerValue(request.headers, 'x-amz-date');
    if (amzDate === undefined) {
      const date = headerValue(request.headers, 'date');
      if (date !== undefined && !Number.isNaN(Date.parse(date))) amzDate = new Date(Date.parse(date)).toISOString().replace(/[-:]|\.\d{3}/g, '');
    }
    sessionToken = headerValue(request.headers, 'x-amz-security-token');
  } else {
    if (q('X-Amz-Algorithm') !== ALGORITHM) return incomplete(`X-Amz-Algorithm must be ${ALGORITHM}`);
    credential = q('X-Amz-Credential');
    signedHeaders = q('X-Amz-SignedHeaders');
    signature = presignedSignature;
    amzDate = q('X-Amz-Date');
    const expires = q('X-Amz-Expires');
    expiresS = expires === undefined ? null : Number(expires);
    if (expiresS !== null && (!Number.isInteger(expiresS) || expiresS < 1 || expiresS > MAX_PRESIGN_EXPIRES_S)) {
      return incomplete(`X-Amz-Expires must be an integer from 1 to ${MAX_PRESIGN_EXPIRES_S}`);
    }
    sessionToken = q('X-Amz-Security-Token');
  }
  if (!credential || !signedHeaders || !signature || !amzDate) {
    return incomplete('Authorization needs Credential, SignedHeaders, Signature and X-Amz-Date');
  }
  const scope = credential.split('/');
  if (scope.length !== 5) return incomplete(`Credential must be AccessKeyId/date/region/service/aws4_request, got '${credential}'`);
  const [accessKeyId, date, region, service, terminator] = scope as [string, string, string, string, string];
  return {
    ok: true,
    parts: {
      presigned,
      accessKeyId,
      date,
      region,
      service,
      terminator,
      signedHeaders: signedHeaders.split(';').filter((h) => h !== ''),
      signature,
      amzDate,
      expiresS,
      sessionToken,
    },
  };
}

/**
 * Verifies the SigV4 signature of a request against the secret of its access key.
 *
 * Checks, in the order AWS reports them: a signature is present and well formed; the access key
 * is known and its session token (if it has one) matches; the credential scope names this
 * service (and region when given) and the day of `X-Amz-Date`; the request is no older than the
 * allowed skew (15 minutes) or, when presigned, than its `X-Amz-Expires`; the signature matches;
 * temporary credentials have not expired. The payload hash is always recomputed from the body,
 * so a replayed request cannot carry a different body.
 *
 * @example
 * ```ts
 * const result = verifySigV4({ method: req.method!, url: req.url!, headers: req.headers, body },
 *   (id) => (id === 'test' ? { secretAccessKey: 'test' } : null), { service: 'states', region: 'us-east-1' });
 * if (!result.ok) return reply(400, result.failure, result.message);
 * ```
 */
export function verifySigV4<S extends SigningSecret>(request: SignedRequestLike, lookup: SecretLookup<S>, options: VerifyOptions): SigV4Result<S> {
  const nowMs = options.nowMs ?? Date.now();
  const maxSkewMs = options.maxSkewMs ?? FIFTEEN_MINUTES_MS;
  const q = request.url.indexOf('?');
  const rawPath = q < 0 ? request.url : request.url.slice(0, q);
  const query = parseQuery(q < 0 ? '' : request.url.slice(q + 1));
  const parsed = parseSignature(request, query);
  if (!parsed.ok) return parsed;
  const p = parsed.parts;
  const refuse = (failure: SigV4Failure, message: string): SigV4Result<S> => ({ ok: false, failure, message, accessKeyId: p.accessKeyId });

  const secret = lookup(p.accessKeyId);
  if (!secret) return refuse(SigV4Failure.UnknownAccessKey, 'The security token included in the request is invalid.');
  if (secret.sessionToken !== undefined && p.sessionToken !== secret.sessionToken) {
    return refuse(SigV4Failure.UnknownAccessKey, 'The security token included in the request is invalid.');
  }

  const badScope = (why: string): SigV4Result<S> => refuse(SigV4Failure.SignatureDoesNotMatch, `Credential should be scoped correctly: ${why}`);
  if (p.terminator !== 'aws4_request') return badScope(`the scope must end in aws4_request, not '${p.terminator}'`);
  if (p.service !== options.service) return badScope(`service '${p.service}' is not '${options.service}'`);
  if (options.region !== undefined && p.region !== options.region) return badScope(`region '${p.region}' is wrong; expecting '${options.region}'`);
  if (!p.amzDate.startsWith(p.date)) return badScope(`date '${p.date}' does not match X-Amz-Date '${p.amzDate}'`);
  if (!p.signedHeaders.includes('host')) return refuse(SigV4Failure.SignatureDoesNotMatch, "'Host' must be a signed header");

  const signedAtMs = parseAmzDate(p.amzDate);
  if (signedAtMs === null) return refuse(SigV4Failure.IncompleteSignature, `X-Amz-Date '${p.amzDate}' is not in the form 20240101T120000Z`);
  if (signedAtMs - nowMs > maxSkewMs) {
    return refuse(SigV4Failure.RequestExpired, `Signature not yet current: ${p.amzDate} is still later than now plus 15 minutes`);
  }
  if (p.presigned && p.expiresS !== null) {
    if (nowMs > signedAtMs + p.expiresS * 1000)
      return refuse(SigV4Failure.RequestExpired, `Request has expired: signed at ${p.amzDate}, valid for ${p.expiresS} s`);
  } else if (nowMs - signedAtMs > maxSkewMs) {
    return refuse(SigV4Failure.RequestExpired, `Signature expired: ${p.amzDate} is now earlier than 15 minutes ago`);
  }

  const body = typeof request.body === 'string' ? Buffer.from(request.body, 'utf8') : request.body;
  const payloadHash = sha256Hex(body);
  const declared = headerValue(request.headers, 'x-amz-content-sha256');
  if (declared !== undefined && declared !== payloadHash) {
    return refuse(SigV4Failure.SignatureDoesNotMatch, 'The provided x-amz-content-sha256 header does not match the body (unsigned payloads are not accepted)');
  }
  const sortedHeaders = [...p.signedHeaders].map((h) => h.toLowerCase()).sort();
  const headerLines: string[] = [];
  for (const name of sortedHeaders) {
    const value = headerValue(request.headers, name);
    if (value === undefined) return refuse(SigV4Failure.SignatureDoesNotMatch, `signed header '${name}' is missing from the request`);
    headerLines.push(`${name}:${value.trim().replace(/\s+/g, ' ')}\n`);
  }
  const canonicalRequest = [
    request.method.toUpperCase(),
    canonicalPath(rawPath || '/'),
    canonicalQuery(query),
    headerLines.join(''),
    sortedHeaders.join(';'),
    payloadHash,
  ].join('\n');
  const stringToSign = [ALGORITHM, p.amzDate, `${p.date}/${p.region}/${p.service}/aws4_request`, sha256Hex(canonicalRequest)].join('\n');
  const expected = hmac(deriveSigningKey(secret.secretAccessKey, p.date, p.region, p.service), stringToSign);
  const given = /^[0-9a-f]{64}$/i.test(p.signature) ? Buffer.from(p.signature, 'hex') : Buffer.alloc(0);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return refuse(
      SigV4Failure.SignatureDoesNotMatch,
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
    );
  }
  if (secret.expiration !== undefined && secret.expiration.getTime() <= nowMs) {
    return refuse(SigV4Failure.ExpiredToken, 'The security token included in the request is expired');
  }
  return { ok: true, accessKeyId: p.accessKeyId, secret, region: p.region, service: p.service, presigned: p.presigned, signedHeaders: sortedHeaders };
}
