/**
 * The CLI's commands and options as data: what each command accepts, and the help printed by
 * `jetstate --help` and `jetstate <command> --help`. The parser takes a command's options from
 * here, so help and parsing cannot drift apart.
 */

/** An option of the CLI, as `node:util` parseArgs takes it, with its help line. */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** Placeholder of the value in help, e.g. 'URL'. */
  value?: string;
  help: string;
}

export const OPTIONS = {
  server: { type: 'string', short: 's', value: 'URL', help: 'NATS server (default: $NATS_URL, else "server" of the config file, else nats://127.0.0.1:4222)' },
  namespace: {
    type: 'string',
    short: 'n',
    value: 'NAME',
    help: 'namespace of streams and buckets (default: $JETSTATE_NAMESPACE, else the config file, else jetstate)',
  },
  domain: {
    type: 'string',
    value: 'NAME',
    help: "JetStream domain of the namespace, e.g. a leaf node's (default: $JETSTATE_DOMAIN, else the config file, else the server's own)",
  },
  workflows: {
    type: 'string',
    short: 'w',
    value: 'PATH',
    help: 'module exporting the workflows, .js or .ts (default: $JETSTATE_WORKFLOWS, else the config file, else the bundled examples)',
  },
  config: { type: 'string', short: 'c', value: 'FILE', help: 'config file (default: ./jetstate.config.json when it exists)' },
  json: { type: 'boolean', help: 'print JSON instead of text; errors as {"error":{"code","message"}} on stderr' },
  id: { type: 'string', value: 'ID', help: 'instance id (default: a new random one)' },
  input: { type: 'string', short: 'i', value: 'JSON', help: 'the start input, e.g. \'{"orderId":"o-1"}\'' },
  data: { type: 'string', value: 'JSON', help: 'the event payload (instead of the positional JSON)' },
  'idempotency-key': { type: 'string', value: 'KEY', help: 'deduplicates retries of this send' },
  status: { type: 'string', value: 'S', help: 'only instances with this status (running, done, failed, stopped)' },
  state: { type: 'string', value: 'S', help: 'only instances in this state (e.g. paid, or shipping.packed)' },
  'timeout-ms': { type: 'string', value: 'N', help: 'how long to wait (default 30000)' },
  token: { type: 'string', value: 'TOKEN', help: "the sender's identity token (default: $JETSTATE_TOKEN)" },
  reveal: { type: 'boolean', help: 'show secret fields in clear (needs the key ring in $JETSTATE_KEYS); redacted otherwise' },
  limit: { type: 'string', value: 'N', help: 'at most N entries (default 50)' },
  port: { type: 'string', value: 'N', help: 'port of the web view on 127.0.0.1 (default 7480; 0 picks a free one)' },
  'trace-url': { type: 'string', value: 'T', help: "link of a trace in the web view, e.g. 'http://localhost:16686/trace/{traceId}'" },
  'no-ui': { type: 'boolean', help: 'do not serve the web view' },
  suite: { type: 'string', value: 'SUITE', help: 'fetch from this Debian suite (e.g. trixie, sid) even if a nats-server is found' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
} as const satisfies Record<string, OptionSpec>;

export type OptionName = keyof typeof OPTIONS;

/** The options every command that talks to NATS takes. */
const CONNECTION: OptionName[] = ['server', 'namespace', 'domain', 'workflows', 'config', 'json'];

export interface CommandSpec {
  /** Arguments after the command name, as shown in help. */
  args: string;
  summary: string;
  /** More lines shown by `jetstate <command> --help`. */
  details?: string;
  options: OptionName[];
  /** Runs until Ctrl-C (its telemetry exporter keeps the SDK's timeouts). */
  longRunning?: boolean;
}

export const COMMANDS: Record<string, CommandSpec> = {
  dev: {
    args: '[--no-ui] [--port N]',
    summary: 'run NATS (started here if none answers) and an engine with the workflows, and the web view',
    details:
      'Uses the NATS at --server / $NATS_URL / the config file / 127.0.0.1:4222 when one answers. Otherwise starts a\n' +
      'nats-server with JetStream whose data stays in ./.jetstate/dev-data, fetching one first into ./.jetstate/nats\n' +
      "(as 'jetstate nats install' does) when none is found. Runs until Ctrl-C; in-flight events are drained first.",
    options: [...CONNECTION, 'port', 'no-ui', 'reveal', 'trace-url'],
    longRunning: true,
  },
  ui: {
    args: '[--port N] [--reveal] [--trace-url T]',
    summary: "the web view on 127.0.0.1: workflows, instances, each instance's statechart, history; send and verify",
    options: [...CONNECTION, 'port', 'reveal', 'trace-url'],
    longRunning: true,
  },
  start: {
    args: '<workflow> --input JSON [--id ID]',
    summary: 'start an instance (idempotent by id)',
    options: [...CONNECTION, 'id', 'input', 'token', 'reveal'],
  },
  send: {
    args: '<workflow> <id> <TYPE> [JSON]',
    summary: 'send an event, e.g. send order o-1 PAY \'{"amount":10}\'',
    options: [...CONNECTION, 'data', 'idempotency-key', 'token'],
  },
  get: {
    args: '<workflow> <id>',
    summary: 'show an instance',
    details: 'Exits with 1 when the instance does not exist (with --json it prints null).',
    options: [...CONNECTION, 'reveal'],
  },
  list: {
    args: '<workflow> [--status S] [--state S]',
    summary: 'list instances',
    options: [...CONNECTION, 'status', 'state', 'reveal'],
  },
  history: {
    args: '<workflow> <id>',
    summary: 'show the applied transitions, in order',
    options: [...CONNECTION, 'reveal'],
  },
  verify: {
    args: '<workflow> <id>',
    summary: 'replay the history and compare it with the stored state',
    details: 'Exits with 1 when the replay does not reproduce the stored state.',
    options: [...CONNECTION],
  },
  wait: {
    args: '<workflow> <id> --state S [--timeout-ms N]',
    summary: 'wait until the instance is in state S',
    options: [...CONNECTION, 'state', 'timeout-ms', 'reveal'],
  },
  reencrypt: {
    args: '<workflow>',
    summary: "move every instance's secrets to the newest key of $JETSTATE_KEYS",
    details:
      'Records and history, and those of the child workflows each instance invokes. Exits with 1 when some could\n' +
      'not be moved, listing each with the reason (keep the older key in the ring, fix the cause, run it again).',
    options: [...CONNECTION],
  },
  deadletters: {
    args: '[--limit N]',
    summary: 'show rejected events kept in the dead-letter stream, with reasons',
    options: [...CONNECTION, 'limit'],
  },
  nats: {
    args: 'install [--suite SUITE]',
    summary: 'fetch a nats-server 2.10+ into ./.jetstate/nats (Debian/Ubuntu package, nothing installed system-wide)',
    details:
      'Uses $JETSTATE_NATS_SERVER, ./.jetstate/nats or a nats-server on PATH when it is 2.10 or newer. Otherwise\n' +
      'downloads the distribution\'s package with apt-get download (from Debian 13 "trixie" through a private\n' +
      "source list when the system's own is older than 2.10) and unpacks it with dpkg-deb -x into ./.jetstate/nats.\n" +
      "Prints the binary's path on the last line of stdout. On other systems it says what to install.",
    options: ['suite', 'json'],
  },
  'sfn-local': {
    args: '[--port 8083] [--definitions DIR] ...',
    summary: 'a Step Functions-compatible endpoint on loopback (see jetstate sfn-local --help)',
    options: [],
    longRunning: true,
  },
};

const ENVIRONMENT = `Environment:
  NATS_URL              NATS server, when --server is not given
  JETSTATE_WORKFLOWS    module exporting the workflows, when --workflows is not given
  JETSTATE_NAMESPACE    namespace, when --namespace is not given
  JETSTATE_DOMAIN       JetStream domain, when --domain is not given
  JETSTATE_KEYS         key ring for workflows with secrets: 'id1:base64key,id2:base64key' (the last is the newest)
  JETSTATE_TOKEN        the sender's identity token, when --token is not given
  JETSTATE_NATS_SERVER  path of the nats-server binary for 'dev' and 'nats install'
  OTEL_EXPORTER_OTLP_ENDPOINT  send traces and metrics over OTLP/HTTP (e.g. http://localhost:4318);
                        needs @opentelemetry/sdk-node installed beside jetstate

Config file (jetstate.config.json in the current folder, or --config FILE); paths are relative to it:
  { "workflows": "./dist/workflows.js", "server": "nats://127.0.0.1:4222", "namespace": "shop" }
`;

const optionLine = (name: OptionName): string => {
  const o: OptionSpec = OPTIONS[name];
  const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.value ? ` ${o.value}` : ''}`;
  return `  ${flag.padEnd(28)}${o.help}`;
};

/** `jetstate --help`. */
export function overview(): string {
  const lines = ['Usage: jetstate <command> [options]', '', 'Commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(12)} ${c.summary}`);
  lines.push(
    '',
    'Options of the commands that talk to NATS:',
    ...CONNECTION.map(optionLine),
    optionLine('help'),
    '      --version               print the version',
    '',
    ENVIRONMENT,
    "Run 'jetstate <command> --help' for a command's arguments and options.",
    '',
  );
  return lines.join('\n');
}

/** `jetstate <command> --help`. */
export function commandHelp(name: string): string {
  const c = COMMANDS[name];
  if (!c) return overview();
  const lines = [`Usage: jetstate ${name} ${c.args}`, '', c.summary.charAt(0).toUpperCase() + c.summary.slice(1) + '.'];
  if (c.details) lines.push('', c.details);
  lines.push('', 'Options:', ...[...c.options, 'help' as const].map(optionLine), '');
  return lines.join('\n');
}
