/**
 * A pool of Step Functions clients for one process that talks to several accounts and regions:
 * one `SFNClient` per (region, role, external id), created on first use and reused, so
 * connections, retry state and credentials are shared by every caller of the same target.
 *
 * A target with a `roleArn` signs with temporary credentials from STS AssumeRole. The pool keeps
 * them and fetches new ones `refreshBeforeMs` before they expire (for credentials that live
 * shorter than twice that, halfway through their life), in the background while the current ones
 * are still good, so no call waits for STS and no call is signed with expired keys. A denied
 * AssumeRole fails the call with an error that names the role.
 */
import { SFNClient, type SFNClientConfig } from '@aws-sdk/client-sfn';
import { z } from 'zod';
import { ErrorCode, JetstateError, fail } from '../../engine/internal.js';
import { parseOptions } from '../../engine/internal.js';
import { consoleLogger, type Logger } from '../../engine/internal.js';

/** Credentials as the AWS SDK takes them: `{ accessKeyId, secretAccessKey, sessionToken? }` or a provider. */
export type AwsCredentialsInput = NonNullable<SFNClientConfig['credentials']>;
type AwsCredentialIdentityProvider = Extract<AwsCredentialsInput, (...args: never[]) => unknown>;
type AwsCredentialIdentity = Awaited<ReturnType<AwsCredentialIdentityProvider>>;

/** GetActivityTask holds a request for up to 60 s; long-poll clients wait longer than that. */
export const LONG_POLL_REQUEST_TIMEOUT_MS = 70_000;

const isCredentials = (v: unknown): v is AwsCredentialsInput =>
  typeof v === 'function' ||
  (typeof v === 'object' &&
    v !== null &&
    typeof (v as AwsCredentialIdentity).accessKeyId === 'string' &&
    typeof (v as AwsCredentialIdentity).secretAccessKey === 'string');

export const StepFunctionsClientsOptionsSchema = z
  .object({
    /** Default region of every client (a target may name another). */
    region: z.string().min(1),
    /** Step Functions endpoint, e.g. `http://127.0.0.1:8083` for `jetstate sfn-local`; AWS's by default. */
    endpoint: z.string().url().optional(),
    /**
     * Credentials of this process: signs calls without a role, and the AssumeRole calls of targets
     * with one. The AWS SDK's default chain when absent (environment, profile, container, instance).
     */
    credentials: z
      .custom<AwsCredentialsInput>(isCredentials, 'credentials must be { accessKeyId, secretAccessKey, sessionToken? } or a provider function')
      .optional(),
    /** STS endpoint for AssumeRole; AWS's regional one by default. */
    stsEndpoint: z.string().url().optional(),
    /** Region of the STS calls; `region` by default. */
    stsRegion: z.string().min(1).optional(),
    /** Fetch new role credentials this long before the current ones expire. */
    refreshBeforeMs: z.number().int().min(0).default(300_000),
    /** Most time one HTTP request may take (long polls of GetActivityTask get at least 70 s). */
    requestTimeoutMs: z.number().int().min(100).default(30_000),
    /** Attempts per call, the first included, by the SDK's own retry (throttling, network, 5xx). */
    maxAttempts: z.number().int().min(1).max(20).default(5),
    logger: z.custom<Logger>((v) => typeof v === 'object' && v !== null && typeof (v as Logger).warn === 'function').default(consoleLogger),
  })
  .strict();

export type StepFunctionsClientsOptions = z.input<typeof StepFunctionsClientsOptionsSchema>;
type ResolvedClientsOptions = z.output<typeof StepFunctionsClientsOptionsSchema>;

/** Which account and region a call goes to. */
export interface StepFunctionsTarget {
  /** The pool's `region` when absent. */
  region?: string;
  /** IAM role to assume (another account's, typically); the pool's own credentials when absent. */
  roleArn?: string;
  /** External id the role's trust policy requires. */
  externalId?: string;
  /** Session name shown in CloudTrail (default `jetstate`); the first one given for a role is kept. */
  sessionName?: string;
  /** A client for GetActivityTask, whose requests may be held open for 60 s. */
  longPoll?: boolean;
}

const TargetSchema = z
  .object({
    region: z.string().min(1).optional(),
    roleArn: z
      .string()
      .regex(/^arn:[a-z-]+:iam::[0-9]{12}:role\/.+$/, "roleArn must look like 'arn:aws:iam::123456789012:role/name'")
      .optional(),
    externalId: z.string().min(2).max(1224).optional(),
    sessionName: z
      .string()
      .regex(/^[\w+=,.@-]{2,64}$/, 'sessionName: 2-64 of A-Z a-z 0-9 _ + = , . @ -')
      .optional(),
    longPoll: z.boolean().optional(),
  })
  .strict();

export interface StepFunctionsClients {
  /** The client for `target` (the pool's own region and credentials by default), created once. */
  get(target?: StepFunctionsTarget): SFNClient;
  /** Destroys every client (closing their sockets); `get` throws afterwards. Idempotent. */
  destroy(): void;
  [Symbol.dispose](): void;
}

/**
 * Creates the client pool.
 *
 * @example
 * ```ts
 * const clients = createStepFunctionsClients({ region: 'eu-west-1' });
 * const sfn = clients.get({ region: 'us-east-1', roleArn: 'arn:aws:iam::210987654321:role/orders-sfn', externalId: 'jetstate' });
 * await sfn.send(new StartExecutionCommand({ stateMachineArn, name, input }));
 * clients.destroy();
 * ```
 */
export function createStepFunctionsClients(options: StepFunctionsClientsOptions): StepFunctionsClients {
  const resolved = parseOptions(StepFunctionsClientsOptionsSchema, 'createStepFunctionsClients', options);
  const clients = new Map<string, SFNClient>();
  const roleCredentials = new Map<string, AwsCredentialIdentityProvider>();
  let destroyed = false;

  const credentialsFor = (t: z.output<typeof TargetSchema>): AwsCredentialsInput | undefined => {
    if (!t.roleArn) return resolved.credentials;
    // One provider per role and external id, shared by that role's clients in every region.
    const key = `${t.roleArn}|${t.externalId ?? ''}`;
    let provider = roleCredentials.get(key);
    if (!provider) roleCredentials.set(key, (provider = assumedRoleCredentials(resolved, t.roleArn, t.externalId, t.sessionName ?? 'jetstate')));
    return provider;
  };

  const pool: StepFunctionsClients = {
    get(target = {}) {
      if (destroyed) fail(ErrorCode.Closed, 'the Step Functions client pool was destroyed; create a new one with createStepFunctionsClients()');
      const t = parseOptions(TargetSchema, 'Step Functions target', target);
      const region = t.region ?? resolved.region;
      const key = `${region}|${t.roleArn ?? ''}|${t.externalId ?? ''}|${t.longPoll ? 'poll' : ''}`;
      let client = clients.get(key);
      if (!client) {
        const requestTimeout = t.longPoll ? Math.max(resolved.requestTimeoutMs, LONG_POLL_REQUEST_TIMEOUT_MS) : resolved.requestTimeoutMs;
        client = new SFNClient({
          region,
          ...(resolved.endpoint ? { endpoint: resolved.endpoint } : {}),
          credentials: credentialsFor(t),
          maxAttempts: resolved.maxAttempts,
          requestHandler: { connectionTimeout: 5_000, requestTimeout, throwOnRequestTimeout: true },
        });
        clients.set(key, client);
      }
      return client;
    },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      for (const c of clients.values()) c.destroy();
      clients.clear();
      roleCredentials.clear();
    },
    [Symbol.dispose]() {
      pool.destroy();
    },
  };
  return pool;
}

/**
 * Credentials of an assumed role that refresh by themselves. Marked `memoized`, so the SDK asks
 * this provider on every call (it is cheap: a cached value) instead of applying its own 5-minute
 * rule, which would call STS on every request for credentials shorter-lived than that.
 */
function assumedRoleCredentials(
  options: ResolvedClientsOptions,
  roleArn: string,
  externalId: string | undefined,
  sessionName: string,
): AwsCredentialIdentityProvider {
  const { logger } = options;
  let assumeProvider: AwsCredentialIdentityProvider | undefined;
  // Loaded on first use: only processes that assume roles need @aws-sdk/credential-providers.
  const assume = async (): Promise<AwsCredentialIdentity> => {
    if (!assumeProvider) {
      let loaded: typeof import('@aws-sdk/credential-providers');
      try {
        loaded = await import('@aws-sdk/credential-providers');
      } catch (e) {
        throw new JetstateError(
          ErrorCode.InvalidOptions,
          `assuming role '${roleArn}' needs the package @aws-sdk/credential-providers; install it next to @aws-sdk/client-sfn`,
          { cause: e },
        );
      }
      assumeProvider = loaded.fromTemporaryCredentials({
        params: { RoleArn: roleArn, RoleSessionName: sessionName, ...(externalId ? { ExternalId: externalId } : {}) },
        ...(options.credentials ? { masterCredentials: options.credentials } : {}),
        clientConfig: {
          region: options.stsRegion ?? options.region,
          ...(options.stsEndpoint ? { endpoint: options.stsEndpoint } : {}),
          maxAttempts: options.maxAttempts,
          requestHandler: { connectionTimeout: 5_000, requestTimeout: options.requestTimeoutMs, throwOnRequestTimeout: true },
        },
      });
    }
    return assumeProvider();
  };
  let current: { credentials: AwsCredentialIdentity; fetchedAtMs: number } | undefined;
  let pending: Promise<AwsCredentialIdentity> | undefined;

  const refresh = (): Promise<AwsCredentialIdentity> =>
    (pending ??= assume()
      .then((credentials) => {
        current = { credentials, fetchedAtMs: Date.now() };
        logger.debug(`step-functions: new credentials for role '${roleArn}'${credentials.expiration ? ` until ${credentials.expiration.toISOString()}` : ''}`);
        return credentials;
      })
      .catch((e: unknown) => {
        throw assumeRoleError(roleArn, externalId, e);
      })
      .finally(() => {
        pending = undefined;
      }));

  const provider = async (): Promise<AwsCredentialIdentity> => {
    if (!current) return refresh();
    const { credentials, fetchedAtMs } = current;
    const expiresAtMs = credentials.expiration?.getTime();
    if (expiresAtMs === undefined) return credentials;
    const now = Date.now();
    const lifetimeMs = Math.max(0, expiresAtMs - fetchedAtMs);
    // Too close to expiry to sign with: wait for new ones.
    if (expiresAtMs - now <= Math.min(10_000, lifetimeMs / 4)) return refresh();
    // Inside the refresh window: fetch new ones in the background and sign with these meanwhile.
    if (expiresAtMs - now <= Math.min(options.refreshBeforeMs, lifetimeMs / 2)) {
      refresh().catch((e: unknown) =>
        logger.warn(
          `step-functions: refreshing the credentials of role '${roleArn}' failed (${(e as Error).message}); the current ones stay in use until they expire`,
        ),
      );
    }
    return credentials;
  };
  return Object.assign(provider, { memoized: true });
}

function assumeRoleError(roleArn: string, externalId: string | undefined, e: unknown): JetstateError {
  if (e instanceof JetstateError) return e;
  const err = e as { name?: string; message?: string };
  const denied = /AccessDenied|NotAuthorized|InvalidClientTokenId|SignatureDoesNotMatch/i.test(`${err.name} ${err.message}`);
  const fix = denied
    ? `check that the role's trust policy allows this process's identity${externalId ? ' and that the external id matches' : ' (and whether it requires an external id)'}, and that the caller may call sts:AssumeRole on it`
    : "check the STS endpoint and region, and this process's base credentials";
  return new JetstateError(ErrorCode.InvalidOptions, `AssumeRole of role '${roleArn}' failed (${err.name ?? 'Error'}: ${err.message ?? String(e)}); ${fix}`, {
    cause: e,
  });
}

/** What options that talk to Step Functions take: a client of yours, or the pool and a target. */
export interface StepFunctionsClientChoice {
  /** A client of yours, used as it is. */
  client?: SFNClient;
  /** The pool to take the client from (with `target`). */
  clients?: StepFunctionsClients;
  /** Account and region, when taking the client from `clients`. */
  target?: StepFunctionsTarget;
}

/**
 * The client of a {@link StepFunctionsClientChoice}: `client` if given, else `clients.get(target)`
 * (with `longPoll` for GetActivityTask). Throws `INVALID_OPTIONS` when neither is given.
 */
export function resolveStepFunctionsClient(choice: StepFunctionsClientChoice, what: string, longPoll = false): SFNClient {
  if (choice.client && choice.clients) fail(ErrorCode.InvalidOptions, `${what}: give either 'client' or 'clients' (with 'target'), not both`);
  if (choice.client) return choice.client;
  if (choice.clients) return choice.clients.get({ ...choice.target, ...(longPoll ? { longPoll: true } : {}) });
  return fail(ErrorCode.InvalidOptions, `${what}: give 'client' (an SFNClient) or 'clients' from createStepFunctionsClients() with an optional 'target'`);
}
