/**
 * `jetstate sfn-local`: the loopback Step Functions endpoint as a command, for offline
 * development. It creates the state machines of a folder and the named activities at start,
 * optionally runs a loopback STS for role assumption, forwards execution status events to NATS,
 * and stops on Ctrl-C (SIGINT) or SIGTERM. State is in memory.
 */
import { readdir, readFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ErrorCode, JetstateError } from '../../engine/internal.js';
import type { TaskHandlerContext } from '../testing/index.js';

export const SFN_LOCAL_USAGE = `Usage: jetstate sfn-local [options]

A Step Functions-compatible endpoint on loopback (state in memory), for offline development.

Options:
  --port N                 port (default 8083; 0 picks a free one)
  --host 127.0.0.1         address (loopback only)
  --region R               region of the ARNs (default us-east-1)
  --account N              account of the ARNs (default 123456789012)
  --definitions DIR        create a state machine per <name>.asl.json in DIR
  --activity NAME          create an activity (repeatable)
  --handlers MODULE        module exporting taskHandlers: Lambda function name -> async (payload) => result
                           (and optionally close(), called on stop)
  --role ARN               run a loopback STS (on port+1) that lets callers assume this role (repeatable)
  --events-nats URL        publish each execution status change event as JSON to this NATS
  --events-subject S       subject of those events (default aws.states.status)
  --access-key-id ID       accepted access key (default test)
  --secret-access-key S    its secret (default test)
`;

const FlagsSchema = z.object({
  port: z.coerce.number().int().min(0).max(65_535).default(8083),
  host: z.literal('127.0.0.1', { message: 'sfn-local listens on loopback only: --host 127.0.0.1' }).default('127.0.0.1'),
  region: z
    .string()
    .regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'a region like us-east-1')
    .default('us-east-1'),
  account: z
    .string()
    .regex(/^\d{12}$/, '12 digits')
    .default('123456789012'),
  definitions: z.string().min(1).optional(),
  activity: z.array(z.string().min(1)).default([]),
  handlers: z.string().min(1).optional(),
  role: z.array(z.string().regex(/^arn:aws:iam::\d{12}:role\/\S+$/, 'a role ARN like arn:aws:iam::123456789012:role/name')).default([]),
  'events-nats': z.string().min(1).optional(),
  'events-subject': z
    .string()
    .regex(/^[^\s*>]+$/, 'a NATS subject without wildcards')
    .default('aws.states.status'),
  'access-key-id': z.string().min(1).default('test'),
  'secret-access-key': z.string().min(1).default('test'),
});

const invalid = (message: string): JetstateError => new JetstateError(ErrorCode.InvalidOptions, `sfn-local: ${message}`);

type Handlers = Record<string, (payload: unknown, context: TaskHandlerContext) => unknown>;

/** The handlers of a module, and its `close()` if it exports one (called when sfn-local stops). */
async function loadHandlers(path: string): Promise<{ handlers: Handlers; close: (() => Promise<void>) | undefined }> {
  const url = pathToFileURL(isAbsolute(path) ? path : resolve(process.cwd(), path)).href;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (e) {
    throw invalid(`cannot load --handlers ${path}: ${(e as Error).message}`);
  }
  const handlers = (mod['taskHandlers'] ?? mod['default']) as Record<string, unknown> | undefined;
  if (!handlers || typeof handlers !== 'object' || !Object.values(handlers).every((h) => typeof h === 'function')) {
    throw invalid(`${path} must export taskHandlers (or a default export): an object of functions by Lambda function name`);
  }
  const close = typeof mod['close'] === 'function' ? async () => void (await (mod['close'] as () => unknown)()) : undefined;
  return { handlers: handlers as Handlers, close };
}

async function readDefinitions(dir: string): Promise<Array<{ name: string; file: string; text: string }>> {
  let files: string[];
  try {
    files = (await readdir(dir)).filter((f) => f.endsWith('.asl.json')).sort();
  } catch (e) {
    throw invalid(`cannot read --definitions ${dir}: ${(e as Error).message}`);
  }
  if (files.length === 0) throw invalid(`--definitions ${dir} has no <name>.asl.json files`);
  return Promise.all(files.map(async (f) => ({ name: f.slice(0, -'.asl.json'.length), file: join(dir, f), text: await readFile(join(dir, f), 'utf8') })));
}

/**
 * The entry the CLI dispatches to (this command parses its own flags): runs `jetstate sfn-local`
 * and turns an error into a message and an exit code (2 for bad options).
 */
export async function sfnLocalMain(argv: string[]): Promise<number> {
  try {
    return await runSfnLocal(argv);
  } catch (e) {
    process.stderr.write(`jetstate: ${(e as Error)?.message ?? String(e)}\n`);
    return e instanceof JetstateError && e.code === ErrorCode.InvalidOptions ? 2 : 1;
  }
}

/** Runs `jetstate sfn-local` until SIGINT or SIGTERM; returns the exit code. */
export async function runSfnLocal(argv: string[]): Promise<number> {
  let values;
  try {
    values = parseArgs({
      args: argv,
      allowPositionals: false,
      options: {
        port: { type: 'string' },
        host: { type: 'string' },
        region: { type: 'string' },
        account: { type: 'string' },
        definitions: { type: 'string' },
        activity: { type: 'string', multiple: true },
        handlers: { type: 'string' },
        role: { type: 'string', multiple: true },
        'events-nats': { type: 'string' },
        'events-subject': { type: 'string' },
        'access-key-id': { type: 'string' },
        'secret-access-key': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    throw invalid(`${(e as Error).message}\n\n${SFN_LOCAL_USAGE}`);
  }
  if (values.help) {
    process.stdout.write(SFN_LOCAL_USAGE);
    return 0;
  }
  const parsed = FlagsSchema.safeParse(values);
  if (!parsed.success) throw invalid(z.prettifyError(parsed.error));
  const f = parsed.data;
  const credentials = { accessKeyId: f['access-key-id'], secretAccessKey: f['secret-access-key'] };
  const loaded = f.handlers ? await loadHandlers(f.handlers) : undefined;
  const taskHandlers: Handlers = loaded?.handlers ?? {};
  const definitions = f.definitions ? await readDefinitions(f.definitions) : [];

  // Loaded here, not at the top, so the other commands work without the optional packages.
  const { startLocalStepFunctions, startLocalSts, SfnApiError } = await import('../testing/index.js');

  const closers: Array<() => Promise<void>> = [];
  // Closed last (closers run in reverse): the handlers' own connections.
  if (loaded?.close) closers.push(loaded.close);
  const closeAll = async (): Promise<void> => {
    for (const close of closers.reverse()) await close().catch(() => {});
  };
  try {
    let publish: ((event: unknown) => void) | undefined;
    if (f['events-nats']) {
      const { connect } = await import('@nats-io/transport-node');
      const nc = await connect({ servers: f['events-nats'], name: 'jetstate-sfn-local' }).catch((e: Error) => {
        throw new JetstateError(ErrorCode.Closed, `sfn-local: cannot connect to NATS at ${f['events-nats']}: ${e.message}`);
      });
      closers.push(() => nc.drain());
      publish = (event) => nc.publish(f['events-subject'], JSON.stringify(event));
    }
    let sts: Awaited<ReturnType<typeof startLocalSts>> | undefined;
    if (f.role.length > 0) {
      sts = await startLocalSts({
        port: f.port === 0 ? 0 : f.port + 1,
        account: f.account,
        rootCredentials: [{ ...credentials, arn: `arn:aws:iam::${f.account}:user/${credentials.accessKeyId}` }],
      });
      closers.push(() => sts!.close());
      for (const role of f.role) sts.addRole(role);
    }
    const sfn = await startLocalStepFunctions({
      port: f.port,
      region: f.region,
      account: f.account,
      credentials: [credentials],
      sts,
      taskHandlers,
      onStatusChange: publish,
    });
    closers.push(() => sfn.close());

    const activities = f.activity.map((name) => sfn.createActivity(name));
    const machines: string[] = [];
    for (const d of definitions) {
      try {
        machines.push(`  ${sfn.createStateMachine(d.name, d.text)}  (${d.file})`);
      } catch (e) {
        if (e instanceof SfnApiError) throw invalid(`${d.file}: ${e.type}: ${e.message}`);
        throw e;
      }
    }
    const lines = [
      `sfn-local is listening on ${sfn.endpoint} (region ${f.region}, account ${f.account}; state is in memory)`,
      `credentials: accessKeyId ${credentials.accessKeyId}, secretAccessKey ${credentials.secretAccessKey}`,
    ];
    if (machines.length > 0) lines.push('state machines:', ...machines);
    if (activities.length > 0) lines.push('activities:', ...activities.map((a) => `  ${a}`));
    if (Object.keys(taskHandlers).length > 0) lines.push(`task handlers (Lambda functions): ${Object.keys(taskHandlers).join(', ')}`);
    if (sts) lines.push(`STS on ${sts.endpoint}: AssumeRole for ${f.role.join(', ')} with the credentials above; issued credentials work here`);
    if (publish) lines.push(`status change events are published to ${f['events-nats']} on '${f['events-subject']}'`);
    lines.push(
      '',
      'Point clients at it:',
      `  new SFNClient({ endpoint: '${sfn.endpoint}', region: '${f.region}', credentials: { accessKeyId: '${credentials.accessKeyId}', secretAccessKey: '${credentials.secretAccessKey}' } })`,
      `  AWS_ACCESS_KEY_ID=${credentials.accessKeyId} AWS_SECRET_ACCESS_KEY=${credentials.secretAccessKey} aws stepfunctions --endpoint-url ${sfn.endpoint} --region ${f.region} list-state-machines`,
      '',
      'Press Ctrl-C to stop.',
      '',
    );
    process.stdout.write(lines.join('\n'));
    await new Promise<void>((done) => {
      process.once('SIGINT', done);
      process.once('SIGTERM', done);
    });
    process.stdout.write('stopping sfn-local\n');
    await closeAll();
    process.stdout.write('stopped\n');
    return 0;
  } catch (e) {
    await closeAll();
    throw e;
  }
}
