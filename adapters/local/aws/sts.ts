/**
 * A loopback AWS STS endpoint for offline development and tests: `AssumeRole` and
 * `GetCallerIdentity` over the AWS Query protocol, with every request's SigV4 signature checked
 * against the credentials it knows, and answers shaped like AWS's so the real SDK parsers (and
 * `fromTemporaryCredentials` of `@aws-sdk/credential-providers`) accept them.
 *
 * It issues short-lived credentials on purpose (`assumedDurationSeconds`), so a test sees
 * credentials expire and refresh within seconds, and other loopback endpoints (the Step Functions
 * one) accept exactly what it issued through {@link LocalSts.credentialFor}.
 *
 * `GetCallerIdentity` also answers a request signed by someone else and replayed by a third party
 * (header-signed or presigned), which is how a verifier proves an AWS principal without holding
 * its secret, as Vault's AWS auth does: the signature covers any extra signed header, such as an
 * audience header, so a replay to another audience or with a changed header is refused.
 *
 * State is in memory and lives as long as the endpoint.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { ErrorCode, JetstateError } from '../../../engine/internal.js';
import { BodyTooLargeError, listenLoopback, readBody, requestId } from './http.js';
import { SigV4Failure, verifySigV4, type SigningSecret } from './sigv4.js';

/** A long-lived credential the endpoint accepts, with the ARN it stands for. */
export interface RootCredential {
  accessKeyId: string;
  secretAccessKey: string;
  /** e.g. `arn:aws:iam::123456789012:user/ci` or `arn:aws:iam::123456789012:root`. */
  arn: string;
}

/** Credentials issued by `AssumeRole`. */
export interface IssuedCredential {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  roleArn: string;
  externalId?: string | undefined;
  sessionName: string;
  /** `arn:aws:sts::<account>:assumed-role/<role>/<session>`. */
  arn: string;
  /** `<role id>:<session>`, the UserId GetCallerIdentity returns. */
  userId: string;
  expiration: Date;
}

/** What {@link LocalSts.credentialFor} returns: enough to verify a signature and name the signer. */
export interface KnownCredential extends SigningSecret {
  arn: string;
  userId: string;
  account: string;
}

export interface LocalStsOptions {
  host?: '127.0.0.1' | undefined;
  /** 0 (the default) picks a free port. */
  port?: number | undefined;
  /** The account of roles and assumed-role ARNs (default `123456789012`). */
  account?: string | undefined;
  /** Accepted long-lived keys; default one key `test`/`test` for `arn:aws:iam::<account>:user/test`. */
  rootCredentials?: RootCredential[] | undefined;
  /** Lifetime of issued credentials (default 900, AWS's minimum; tests use a few seconds). */
  assumedDurationSeconds?: number | undefined;
}

export interface LocalSts {
  /** `http://127.0.0.1:<port>`; pass it as `endpoint` to an STS client. */
  endpoint: string;
  account: string;
  /** Every credential issued, oldest first. */
  issued: IssuedCredential[];
  /** Every request whose signature was checked (refused ones too), oldest first. */
  requests: Array<{ action: string; accessKeyId: string }>;
  /** Lets `AssumeRole` on this role succeed, only with this external id when one is given. */
  addRole(roleArn: string, opts?: { externalId?: string }): void;
  /** The secret and identity of a root or issued access key, for other endpoints' signature checks. */
  credentialFor(accessKeyId: string): KnownCredential | null;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const OptionsSchema = z.object({
  host: z.literal('127.0.0.1').default('127.0.0.1'),
  port: z.number().int().min(0).max(65_535).default(0),
  account: z
    .string()
    .regex(/^\d{12}$/, 'account must be 12 digits')
    .default('123456789012'),
  rootCredentials: z.array(z.object({ accessKeyId: z.string().min(1), secretAccessKey: z.string().min(1), arn: z.string().startsWith('arn:') })).optional(),
  assumedDurationSeconds: z.number().int().min(1).max(43_200).default(900),
});

const ROLE_ARN = /^arn:aws:iam::(\d{12}):role\/(?:[\w+=,.@/-]*\/)?([\w+=,.@-]{1,64})$/;
const SESSION_NAME = /^[\w+=,.@-]{2,64}$/;
const EXTERNAL_ID = /^[\w+=,.@:/-]{2,1224}$/;
const XMLNS = 'https://sts.amazonaws.com/doc/2011-06-15/';
const MAX_BODY_BYTES = 64 * 1024;

const xml = (s: string): string => s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);
const isoSeconds = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
const randomUpper = (n: number): string => {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  return [...randomBytes(n)].map((b) => alphabet[b % 32]).join('');
};

class StsError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly type: 'Sender' | 'Receiver' = 'Sender',
  ) {
    super(message);
  }
}

/** The AWS error code and HTTP status STS answers for each signature failure. */
const SIGNATURE_ERRORS: Record<SigV4Failure, [number, string]> = {
  MissingAuthentication: [403, 'MissingAuthenticationToken'],
  IncompleteSignature: [400, 'IncompleteSignature'],
  UnknownAccessKey: [403, 'InvalidClientTokenId'],
  SignatureDoesNotMatch: [403, 'SignatureDoesNotMatch'],
  RequestExpired: [403, 'SignatureDoesNotMatch'],
  ExpiredToken: [400, 'ExpiredToken'],
};

/**
 * Starts the loopback STS endpoint.
 *
 * @example
 * ```ts
 * const sts = await startLocalSts({ assumedDurationSeconds: 3 });
 * sts.addRole('arn:aws:iam::123456789012:role/deployer', { externalId: 'ext-1' });
 * const credentials = fromTemporaryCredentials({
 *   masterCredentials: { accessKeyId: 'test', secretAccessKey: 'test' },
 *   params: { RoleArn: 'arn:aws:iam::123456789012:role/deployer', ExternalId: 'ext-1' },
 *   clientConfig: { endpoint: sts.endpoint, region: 'us-east-1' },
 * });
 * // ... use `credentials` with any client; then
 * await sts.close();
 * ```
 */
export async function startLocalSts(options: LocalStsOptions = {}): Promise<LocalSts> {
  const parsed = OptionsSchema.safeParse(options);
  if (!parsed.success) throw new JetstateError(ErrorCode.InvalidOptions, `startLocalSts: ${z.prettifyError(parsed.error)}`);
  const o = parsed.data;
  const roots = new Map<string, RootCredential>(
    (o.rootCredentials ?? [{ accessKeyId: 'test', secretAccessKey: 'test', arn: `arn:aws:iam::${o.account}:user/test` }]).map((c) => [c.accessKeyId, c]),
  );
  const roles = new Map<string, { externalId?: string | undefined }>();
  const issued: IssuedCredential[] = [];
  const issuedByKey = new Map<string, IssuedCredential>();
  const requests: LocalSts['requests'] = [];

  const credentialFor = (accessKeyId: string): KnownCredential | null => {
    const root = roots.get(accessKeyId);
    if (root) return { secretAccessKey: root.secretAccessKey, arn: root.arn, userId: root.accessKeyId, account: accountOf(root.arn) ?? o.account };
    const temp = issuedByKey.get(accessKeyId);
    if (temp) {
      return {
        secretAccessKey: temp.secretAccessKey,
        sessionToken: temp.sessionToken,
        expiration: temp.expiration,
        arn: temp.arn,
        userId: temp.userId,
        account: o.account,
      };
    }
    return null;
  };

  function assumeRole(params: URLSearchParams, caller: KnownCredential): string {
    const roleArn = params.get('RoleArn');
    const sessionName = params.get('RoleSessionName');
    if (!roleArn) throw new StsError(400, 'MissingParameter', 'The request must contain the parameter RoleArn');
    if (!sessionName) throw new StsError(400, 'MissingParameter', 'The request must contain the parameter RoleSessionName');
    const role = ROLE_ARN.exec(roleArn);
    if (!role) throw new StsError(400, 'ValidationError', `${roleArn} is invalid: a role ARN looks like arn:aws:iam::123456789012:role/name`);
    if (!SESSION_NAME.test(sessionName)) {
      throw new StsError(
        400,
        'ValidationError',
        `1 validation error detected: Value '${sessionName}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]* and have length 2-64`,
      );
    }
    const externalId = params.get('ExternalId') ?? undefined;
    if (externalId !== undefined && !EXTERNAL_ID.test(externalId)) {
      throw new StsError(
        400,
        'ValidationError',
        `1 validation error detected: Value at 'externalId' failed to satisfy constraint: Member must have length 2-1224 of [\\w+=,.@:/-]`,
      );
    }
    const durationParam = params.get('DurationSeconds');
    let duration = o.assumedDurationSeconds;
    if (durationParam !== null) {
      const d = Number(durationParam);
      if (!Number.isInteger(d) || d < 900 || d > 43_200) {
        throw new StsError(
          400,
          'ValidationError',
          `1 validation error detected: Value '${durationParam}' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200`,
        );
      }
      duration = Math.min(duration, d);
    }
    const known = roles.get(roleArn);
    if (!known || (known.externalId !== undefined && known.externalId !== externalId)) {
      throw new StsError(403, 'AccessDenied', `User: ${caller.arn} is not authorized to perform: sts:AssumeRole on resource: ${roleArn}`);
    }
    const roleName = role[2]!;
    const roleId = `AROA${randomUpper(17)}`;
    const credential: IssuedCredential = {
      accessKeyId: `ASIA${randomUpper(16)}`,
      secretAccessKey: randomBytes(30).toString('base64').replace(/[+/=]/g, '').slice(0, 40),
      sessionToken: `IQoJb3JpZ2luX2VjE${randomBytes(96).toString('base64')}`,
      roleArn,
      externalId,
      sessionName,
      arn: `arn:aws:sts::${o.account}:assumed-role/${roleName}/${sessionName}`,
      userId: `${roleId}:${sessionName}`,
      expiration: new Date(Math.floor(Date.now() / 1000) * 1000 + duration * 1000),
    };
    issued.push(credential);
    issuedByKey.set(credential.accessKeyId, credential);
    return [
      `<AssumeRoleResult>`,
      `<AssumedRoleUser><AssumedRoleId>${xml(credential.userId)}</AssumedRoleId><Arn>${xml(credential.arn)}</Arn></AssumedRoleUser>`,
      `<Credentials><AccessKeyId>${credential.accessKeyId}</AccessKeyId><SecretAccessKey>${xml(credential.secretAccessKey)}</SecretAccessKey>`,
      `<SessionToken>${xml(credential.sessionToken)}</SessionToken><Expiration>${isoSeconds(credential.expiration)}</Expiration></Credentials>`,
      `<PackedPolicySize>0</PackedPolicySize>`,
      `</AssumeRoleResult>`,
    ].join('');
  }

  function callerIdentity(caller: KnownCredential): string {
    return `<GetCallerIdentityResult><Arn>${xml(caller.arn)}</Arn><UserId>${xml(caller.userId)}</UserId><Account>${caller.account}</Account></GetCallerIdentityResult>`;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const id = requestId();
    const send = (status: number, body: string): void => {
      res.writeHead(status, { 'content-type': 'text/xml', 'x-amzn-requestid': id, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    try {
      if (req.method !== 'POST' && req.method !== 'GET') throw new StsError(405, 'InvalidAction', `STS answers GET and POST, not ${req.method}`);
      const body = await readBody(req, MAX_BODY_BYTES);
      const url = req.url ?? '/';
      const params = new URLSearchParams(url.includes('?') ? url.slice(url.indexOf('?') + 1) : '');
      const contentType = String(req.headers['content-type'] ?? '');
      if (req.method === 'POST' && body.length > 0) {
        if (!contentType.startsWith('application/x-www-form-urlencoded')) {
          throw new StsError(400, 'InvalidParameterValue', `STS takes application/x-www-form-urlencoded bodies, not '${contentType}'`);
        }
        for (const [k, v] of new URLSearchParams(body.toString('utf8'))) params.append(k, v);
      }
      const action = params.get('Action') ?? '';
      const verified = verifySigV4({ method: req.method, url, headers: req.headers, body }, credentialFor, { service: 'sts' });
      requests.push({ action, accessKeyId: verified.ok ? verified.accessKeyId : (verified.accessKeyId ?? '') });
      if (!verified.ok) {
        const [status, code] = SIGNATURE_ERRORS[verified.failure];
        throw new StsError(status, code, verified.message);
      }
      if (params.get('Version') !== '2011-06-15')
        throw new StsError(400, 'InvalidAction', `Could not find operation ${action} for version ${params.get('Version') ?? 'NO_VERSION_SPECIFIED'}`);
      let result: string;
      if (action === 'AssumeRole') result = assumeRole(params, verified.secret);
      else if (action === 'GetCallerIdentity') result = callerIdentity(verified.secret);
      else
        throw new StsError(
          400,
          'InvalidAction',
          `Could not find operation ${action || '(none)'} for version 2011-06-15; the loopback STS knows AssumeRole and GetCallerIdentity`,
        );
      send(200, `<${action}Response xmlns="${XMLNS}">${result}<ResponseMetadata><RequestId>${id}</RequestId></ResponseMetadata></${action}Response>\n`);
    } catch (e) {
      const err =
        e instanceof StsError
          ? e
          : e instanceof BodyTooLargeError
            ? new StsError(413, 'RequestEntityTooLarge', e.message)
            : new StsError(500, 'InternalFailure', (e as Error).message, 'Receiver');
      send(
        err.status,
        `<ErrorResponse xmlns="${XMLNS}"><Error><Type>${err.type}</Type><Code>${err.code}</Code><Message>${xml(err.message)}</Message></Error><RequestId>${id}</RequestId></ErrorResponse>\n`,
      );
    }
  }

  const http = await listenLoopback((req, res) => void handle(req, res), o.host, o.port);
  const close = (): Promise<void> => http.close();
  return {
    endpoint: http.endpoint,
    account: o.account,
    issued,
    requests,
    addRole(roleArn, opts = {}) {
      if (!ROLE_ARN.test(roleArn))
        throw new JetstateError(ErrorCode.InvalidOptions, `addRole: '${roleArn}' is not a role ARN; use arn:aws:iam::<account>:role/<name>`);
      roles.set(roleArn, { externalId: opts.externalId });
    },
    credentialFor,
    close,
    [Symbol.asyncDispose]: close,
  };
}

function accountOf(arn: string): string | undefined {
  return /^arn:aws:(?:iam|sts)::(\d{12}):/.exec(arn)?.[1];
}
