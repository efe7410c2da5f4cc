/**
 * How the engine proves who it is to NATS: token, user/password, an nkey seed, a JWT creds file
 * (decentralised auth), and TLS. Credentials in files are read again at every (re)connect, so a
 * creds or seed file rotated on disk is used from the next reconnect without restarting the
 * process; the TLS files are re-read at every connect by `@nats-io/transport-node` itself.
 *
 * The options are checked once, when they are parsed: exactly one way to authenticate, files that
 * exist, can be read and hold what they should. Messages name the option and the file, never a
 * secret.
 */
import { readFileSync } from 'node:fs';
import { credsAuthenticator, nkeyAuthenticator, nkeys, tokenAuthenticator, usernamePasswordAuthenticator } from '@nats-io/transport-node';
import type { Authenticator, ConnectionOptions, TlsOptions } from '@nats-io/transport-node';
import { z } from 'zod';
import { ErrorCode, fail } from '../errors.js';
import type { Logger } from '../logger.js';

const TlsSchema = z
  .object({
    /** PEM file of the CA(s) that signed the server's certificate; default: the system's CAs. */
    caFile: z.string().min(1).optional(),
    /** PEM client certificate, for servers that verify clients (`verify: true`); needs `keyFile`. */
    certFile: z.string().min(1).optional(),
    /** PEM private key of `certFile`. */
    keyFile: z.string().min(1).optional(),
    /** TLS before the NATS INFO, for servers with `handshake_first: true`. */
    handshakeFirst: z.boolean().optional(),
  })
  .strict();

/**
 * NATS authentication options (`auth` of the client and engine options). Give at most one way to
 * authenticate; `tls` combines with any of them.
 *
 * @example
 * ```ts
 * NatsAuthSchema.parse({ credsFile: '/run/secrets/jetstate.creds', tls: { caFile: '/etc/nats/ca.pem' } });
 * ```
 */
export const NatsAuthSchema = z
  .object({
    /** A token (`authorization { token: ... }` on the server). */
    token: z.string().min(1).optional(),
    /** User name; needs `pass`. */
    user: z.string().min(1).optional(),
    pass: z.string().optional(),
    /** A file holding a user nkey seed (`SU...`), re-read at every reconnect. */
    nkeySeedFile: z.string().min(1).optional(),
    /** A user nkey seed (`SU...`) given inline; prefer `nkeySeedFile`, which rotates. */
    nkeySeed: z.string().min(1).optional(),
    /** A `.creds` file (user JWT and seed, as written by `nsc`), re-read at every reconnect. */
    credsFile: z.string().min(1).optional(),
    tls: TlsSchema.optional(),
  })
  .strict()
  .superRefine((a, ctx) => {
    const issue = (message: string, path: string): void => void ctx.addIssue({ code: 'custom', message, path: [path] });
    const ways = [
      a.token !== undefined && 'token',
      (a.user !== undefined || a.pass !== undefined) && 'user/pass',
      (a.nkeySeed !== undefined || a.nkeySeedFile !== undefined) && 'nkeySeed/nkeySeedFile',
      a.credsFile !== undefined && 'credsFile',
    ].filter((w): w is string => w !== false);
    if (ways.length > 1) {
      issue(`give one way to authenticate, not ${ways.join(' and ')}: token, user/pass, nkeySeed/nkeySeedFile or credsFile`, 'token');
    }
    if (a.user !== undefined && a.pass === undefined) issue("give 'pass' with 'user'", 'pass');
    if (a.pass !== undefined && a.user === undefined) issue("give 'user' with 'pass'", 'user');
    if (a.nkeySeed !== undefined && a.nkeySeedFile !== undefined) issue("give 'nkeySeed' or 'nkeySeedFile', not both", 'nkeySeed');
    const check = (path: string, problem: string | undefined): void => {
      if (problem !== undefined) issue(problem, path);
    };
    if (a.nkeySeed !== undefined)
      check(
        'nkeySeed',
        problemOf(() => parseSeed(Buffer.from(a.nkeySeed!), 'nkeySeed')),
      );
    if (a.nkeySeedFile !== undefined) check('nkeySeedFile', fileProblem(a.nkeySeedFile, 'nkeySeedFile', parseSeed));
    if (a.credsFile !== undefined) check('credsFile', fileProblem(a.credsFile, 'credsFile', parseCreds));
    if (a.tls) {
      for (const f of ['caFile', 'certFile', 'keyFile'] as const) {
        const file = a.tls[f];
        if (file !== undefined) check(`tls.${f}`, fileProblem(file, `tls.${f}`, parsePem));
      }
      if ((a.tls.certFile === undefined) !== (a.tls.keyFile === undefined)) issue("give 'tls.certFile' and 'tls.keyFile' together", 'tls');
    }
  });

export type NatsAuthOptions = z.input<typeof NatsAuthSchema>;
export type ResolvedNatsAuth = z.output<typeof NatsAuthSchema>;

/** The part of `connect()` options that {@link natsConnectionAuth} sets. */
export type NatsConnectionAuth = Pick<ConnectionOptions, 'authenticator' | 'tls' | 'ignoreAuthErrorAbort'>;

/**
 * Turns `auth` options into the `authenticator` and `tls` of `connect()`. Throws
 * `INVALID_OPTIONS` when `auth` is not valid (see {@link NatsAuthSchema}).
 *
 * Lifecycle: the authenticator runs at every connect and reconnect. For `credsFile` and
 * `nkeySeedFile` it reads the file then, so a rotated file is used from the next reconnect. A file
 * that cannot be read or parsed at that moment (say, half written) does not end the connection:
 * the last good content is used, and `logger.warn` says so once per distinct problem. Write
 * rotated files atomically (write a temporary file, then rename) all the same.
 *
 * With file credentials it also sets `ignoreAuthErrorAbort`: otherwise the client gives up
 * reconnecting after two authorization errors in a row, which is exactly what happens when the
 * server starts to require the new credentials a moment before the file holds them.
 *
 * @example
 * ```ts
 * const nc = await connect({ servers, ...natsConnectionAuth({ credsFile: '/run/secrets/app.creds' }, logger) });
 * ```
 */
export function natsConnectionAuth(auth: NatsAuthOptions | ResolvedNatsAuth | undefined, logger?: Pick<Logger, 'warn'>): NatsConnectionAuth {
  if (auth === undefined) return {};
  const parsed = NatsAuthSchema.safeParse(auth);
  if (!parsed.success) fail(ErrorCode.InvalidOptions, `NATS auth options are not valid:\n${z.prettifyError(parsed.error)}`);
  const a = parsed.data;
  const out: NatsConnectionAuth = {};
  if (a.token !== undefined) out.authenticator = tokenAuthenticator(a.token);
  else if (a.user !== undefined) out.authenticator = usernamePasswordAuthenticator(a.user, a.pass ?? '');
  else if (a.nkeySeed !== undefined) out.authenticator = nkeyAuthenticator(parseSeed(Buffer.from(a.nkeySeed), 'nkeySeed'));
  else if (a.nkeySeedFile !== undefined) {
    out.authenticator = nkeyAuthenticator(currentFile(a.nkeySeedFile, 'nkeySeedFile', parseSeed, logger));
    out.ignoreAuthErrorAbort = true;
  } else if (a.credsFile !== undefined) {
    const current = currentFile(a.credsFile, 'credsFile', parseCreds, logger);
    // One read per connect: `credsAuthenticator(fn)` would call `fn` twice (for the JWT and for
    // the seed) and could pair the JWT of the old file with the seed of the new one.
    out.authenticator = ((nonce?: string) => credsAuthenticator(current())(nonce)) satisfies Authenticator;
    out.ignoreAuthErrorAbort = true;
  }
  if (a.tls) {
    const tls: TlsOptions = {};
    if (a.tls.caFile !== undefined) tls.caFile = a.tls.caFile;
    if (a.tls.certFile !== undefined) tls.certFile = a.tls.certFile;
    if (a.tls.keyFile !== undefined) tls.keyFile = a.tls.keyFile;
    if (a.tls.handshakeFirst !== undefined) tls.handshakeFirst = a.tls.handshakeFirst;
    out.tls = tls;
  }
  return out;
}

/**
 * A sentence that says what to fix when `connect()` failed with `error` under `auth`, or
 * `undefined` when the error is not about credentials or TLS. For the message of a failed
 * connection, next to the server address.
 *
 * @example
 * ```ts
 * catch (e) { throw new Error(`cannot connect: ${e.message}${hint ? `; ${hint}` : ''}`) }
 * ```
 */
export function describeNatsAuthError(error: unknown, auth: NatsAuthOptions | ResolvedNatsAuth | undefined): string | undefined {
  const chain: Array<{ message: string; code: string }> = [];
  for (let e: unknown = error; e instanceof Error && chain.length < 5; e = e.cause) {
    chain.push({ message: e.message, code: String((e as { code?: unknown }).code ?? '') });
  }
  const text = chain.map((c) => `${c.code} ${c.message}`).join(' | ');
  if (/CERT|certificate|self[- ]signed|unable to verify|altnames/i.test(text)) {
    const ca = auth?.tls?.caFile;
    return ca === undefined
      ? "the server's TLS certificate is not trusted by this system; give the CA that signed it as auth.tls.caFile"
      : `the server's TLS certificate is not signed by a CA in auth.tls.caFile '${ca}' (or does not name this host); give the CA that signed the server's certificate`;
  }
  if (/tls.*not available|TLS required|tls_required/i.test(text)) {
    return auth?.tls
      ? 'the server does not offer TLS; remove auth.tls or enable tls on the server'
      : 'the server requires TLS; set auth.tls (with caFile if its CA is private)';
  }
  if (/authorization violation|authentication|user authentication expired/i.test(text)) {
    const way =
      auth?.credsFile !== undefined
        ? `auth.credsFile '${auth.credsFile}'`
        : auth?.nkeySeedFile !== undefined
          ? `auth.nkeySeedFile '${auth.nkeySeedFile}'`
          : auth?.nkeySeed !== undefined
            ? 'auth.nkeySeed'
            : auth?.token !== undefined
              ? 'auth.token'
              : auth?.user !== undefined
                ? `auth.user '${auth.user}'`
                : undefined;
    return way === undefined
      ? 'the server requires authentication; set auth (token, user/pass, nkeySeedFile or credsFile)'
      : `the server rejected ${way}; check it is the credential the server (or its account) accepts now`;
  }
  return undefined;
}

/**
 * A reader of a credential file for an authenticator, which must never throw: nats.js closes the
 * connection for good when it does. So a file that cannot be used keeps the last good content.
 * The first read must succeed.
 */
function currentFile(file: string, option: string, parse: FileParser, logger: Pick<Logger, 'warn'> | undefined): () => Uint8Array {
  const what = `${option} '${file}'`;
  let last: Uint8Array;
  try {
    last = parse(readFileSync(file), what);
  } catch {
    fail(ErrorCode.InvalidOptions, fileProblem(file, option, parse) ?? `${what} cannot be used`);
  }
  let warned = '';
  return () => {
    try {
      last = parse(readFileSync(file), what);
      warned = '';
    } catch (e) {
      const message = `${what} cannot be used now (${(e as Error).message}); connecting with its last good content`;
      if (message !== warned) logger?.warn(message);
      warned = message;
    }
    return last;
  };
}

/** Checks a credential file's content and returns what the authenticator takes; throws a message that names `what` and never quotes the content. */
type FileParser = (bytes: Buffer, what: string) => Uint8Array;

/** Why `file` is not usable, or undefined. Never includes the file's content. */
function fileProblem(file: string, option: string, parse: FileParser): string | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const fix =
      code === 'ENOENT'
        ? 'check the path'
        : code === 'EACCES'
          ? 'let this process read it'
          : code === 'EISDIR'
            ? 'give a file, not a folder'
            : 'check the file';
    return `${option} '${file}' cannot be read (${code ?? (e as Error).message}); ${fix}`;
  }
  return problemOf(() => parse(bytes, `${option} '${file}'`));
}

function problemOf(check: () => unknown): string | undefined {
  try {
    check();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** A user nkey seed, trimmed (a seed file often ends with a newline). */
function parseSeed(bytes: Buffer, what: string): Uint8Array {
  const seed = new TextEncoder().encode(bytes.toString('utf8').trim());
  let publicKey: string;
  try {
    publicKey = nkeys.fromSeed(seed).getPublicKey();
  } catch {
    throw new Error(`${what} does not hold a valid nkey seed; it must hold one seed starting with 'SU' (e.g. from \`nk -gen user\`)`);
  }
  if (!publicKey.startsWith('U')) throw new Error(`${what} is not a user nkey seed (it must start with 'SU'); give the seed of the user the server accepts`);
  return seed;
}

function parseCreds(bytes: Buffer, what: string): Uint8Array {
  let auth: { jwt?: string; nkey?: string };
  try {
    // Parses the JWT and seed blocks and signs a nonce with the seed, as a connect does.
    auth = credsAuthenticator(bytes)('check') as typeof auth;
  } catch {
    throw new Error(`${what} is not a creds file (a JWT block and an nkey seed block); give one as written by \`nsc generate creds\``);
  }
  if (typeof auth.jwt !== 'string' || auth.jwt.split('.').length !== 3)
    throw new Error(`${what} does not hold a user JWT; give a creds file as written by \`nsc generate creds\``);
  if (!auth.nkey?.startsWith('U')) throw new Error(`${what} does not hold a user nkey seed; give a creds file as written by \`nsc generate creds\``);
  return bytes;
}

function parsePem(bytes: Buffer, what: string): Uint8Array {
  if (!/-----BEGIN [A-Z0-9 ]+-----/.test(bytes.toString('latin1'))) throw new Error(`${what} is not PEM; give a PEM file`);
  return bytes;
}
