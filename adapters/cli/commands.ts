/** The CLI's commands, each speaking in plain words and returning an exit code. */
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createClient, isWorkflowDefinition, JetstateError, ErrorCode, type Client, type HistoryEntry, type Instance, type ReencryptReport, type WorkflowDefinition } from '../../engine/index.js';
import { runDev } from './dev.js';
import { redactPaths } from '../../engine/internal.js';

export const USAGE = `Usage: jetstate <command> [options]

Commands:
  dev [--no-ui] [--port N]             run NATS (started here if none is reachable) and an engine with the workflows,
                                       and the web view (printed URL; --no-ui to skip it)
  ui [--port N] [--reveal] [--trace-url T]
                                       the web view on 127.0.0.1: workflows, a live instance list, each instance's
                                       statechart, context, timers, tasks, history; send and verify from the page
  start <workflow> --input JSON [--id ID]
                                       start an instance (idempotent by id)
  send <workflow> <id> <TYPE> [JSON]   send an event, e.g. send order o-1 PAY '{"amount":10}'
  get <workflow> <id>                  show an instance
  list <workflow> [--status S] [--state S]
                                       list instances
  history <workflow> <id>              show the applied transitions, in order
  verify <workflow> <id>               replay the history and compare it with the stored state
  wait <workflow> <id> --state S [--timeout-ms N]
                                       wait until the instance is in state S
  reencrypt <workflow>                 move the secrets of every instance (records and history, and those of the child
                                       workflows it invokes) to the newest key of $JETSTATE_KEYS; exits 1 when some
                                       could not be moved (listed with the reason)
  deadletters [--limit N]              show rejected events kept in the dead-letter stream, with reasons
  sfn-local [--port 8083] [--definitions DIR] ...
                                       a Step Functions-compatible endpoint on loopback (see sfn-local --help)

Options:
  -s, --server URL      NATS server (default: $NATS_URL, else nats://127.0.0.1:4222)
  -n, --namespace NAME  namespace of streams and buckets (default: jetstate)
  -w, --workflows PATH  module exporting the workflows (default: the bundled examples)
      --json            print JSON instead of text
      --token TOKEN     the sender's identity token for start/send (default: $JETSTATE_TOKEN)
      --reveal          show secret fields in clear (needs the key ring in $JETSTATE_KEYS); redacted otherwise
      --port N          port of the web view on 127.0.0.1 (default 7480; 0 picks a free one)
      --trace-url T     link of a trace in the web view, e.g. 'http://localhost:16686/trace/{traceId}'

Environment:
  JETSTATE_KEYS         key ring for workflows with secrets: 'id1:base64key,id2:base64key' (the last is the newest);
                        JETSTATE_SECRET_KEYS is read when JETSTATE_KEYS is not set
  OTEL_EXPORTER_OTLP_ENDPOINT  send traces and metrics over OTLP/HTTP (e.g. http://localhost:4318)
`;

export interface CliValues {
  server?: string | undefined;
  namespace?: string | undefined;
  workflows?: string | undefined;
  id?: string | undefined;
  input?: string | undefined;
  status?: string | undefined;
  state?: string | undefined;
  data?: string | undefined;
  'idempotency-key'?: string | undefined;
  'timeout-ms'?: string | undefined;
  json?: boolean | undefined;
  token?: string | undefined;
  reveal?: boolean | undefined;
  limit?: string | undefined;
  port?: string | undefined;
  'trace-url'?: string | undefined;
  'no-ui'?: boolean | undefined;
}

export const DEFAULT_SERVER = 'nats://127.0.0.1:4222';

/** Where `jetstate dev` keeps the key ring it made, when JETSTATE_KEYS is not set. */
export const DEV_KEYS_FILE = resolve(process.cwd(), '.jetstate', 'dev-keys');

/**
 * The key ring: JETSTATE_KEYS, else JETSTATE_SECRET_KEYS (the name older docs gave), else the one
 * `jetstate dev` made in this folder (development only).
 */
export function keyRingText(): string | undefined {
  const env = process.env['JETSTATE_KEYS'] || process.env['JETSTATE_SECRET_KEYS'];
  if (env) return env;
  try {
    return readFileSync(DEV_KEYS_FILE, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export function serverOf(values: CliValues): string {
  return values.server || process.env['NATS_URL'] || DEFAULT_SERVER;
}

/** Loads the workflows a module exports (a `workflows` array, or any exported definitions). */
export async function loadWorkflows(path: string | undefined): Promise<WorkflowDefinition[]> {
  const url = path
    ? pathToFileURL(isAbsolute(path) ? path : resolve(process.cwd(), path)).href
    : new URL('../../workflows/index.js', import.meta.url).href;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (e) {
    throw new JetstateError(ErrorCode.InvalidOptions, `cannot load workflows from ${path ?? 'the bundled examples'}: ${(e as Error).message}; pass --workflows with a module that exports them`);
  }
  const found = new Set<WorkflowDefinition>();
  if (Array.isArray(mod['workflows'])) for (const w of mod['workflows']) if (isWorkflowDefinition(w)) found.add(w);
  for (const v of Object.values(mod)) if (isWorkflowDefinition(v)) found.add(v);
  if (found.size === 0) throw new JetstateError(ErrorCode.InvalidOptions, `${path} exports no workflows; export them made with defineWorkflow()`);
  return [...found];
}

function pick(workflows: WorkflowDefinition[], name: string | undefined): WorkflowDefinition {
  if (!name) throw new JetstateError(ErrorCode.InvalidOptions, `name a workflow; known: ${names(workflows)}`);
  const versions = workflows.filter((w) => w.name === name).sort((a, b) => b.version - a.version);
  if (!versions[0]) throw new JetstateError(ErrorCode.InvalidOptions, `no workflow named '${name}'; known: ${names(workflows)}; pass --workflows to load others`);
  return versions[0];
}

const names = (ws: WorkflowDefinition[]): string => [...new Set(ws.map((w) => w.name))].join(', ');

function needs(value: string | undefined, what: string): string {
  if (!value) throw new JetstateError(ErrorCode.InvalidOptions, `missing ${what}; see jetstate --help`);
  return value;
}

function json(text: string | undefined, what: string): unknown {
  if (text === undefined) return {};
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new JetstateError(ErrorCode.InvalidOptions, `${what} is not valid JSON (${(e as Error).message}); quote it, e.g. '{"amount":10}'`);
  }
}

export function describeInstance(i: Instance): string {
  const lines = [
    `${i.workflow} ${i.id} (version ${i.version}): ${i.status}, state ${JSON.stringify(i.value)}, revision ${i.revision}`,
    `  context: ${JSON.stringify(i.context)}`,
  ];
  for (const t of i.timers) lines.push(`  timer ${t.id} due ${new Date(t.dueAtMs).toISOString()}`);
  for (const t of i.tasks) {
    const progress = t.attempt ? `, attempt ${t.attempt} failed: ${t.lastError}` : '';
    lines.push(`  task ${t.id} (${t.src}) running since ${new Date(t.startedAtMs).toISOString()}${progress}`);
  }
  if (i.output !== undefined) lines.push(`  output: ${JSON.stringify(i.output)}`);
  if (i.error !== undefined) lines.push(`  error: ${i.error}`);
  lines.push(`  created ${new Date(i.createdAtMs).toISOString()}, updated ${new Date(i.updatedAtMs).toISOString()}`);
  return lines.join('\n');
}

function describeEntry(e: HistoryEntry): string {
  const when = new Date(e.timeMs).toISOString();
  const ev = e.event as { type?: string; timerId?: string; invokeId?: string; ok?: boolean } | null;
  // Task and child outcomes as the machine saw them (entries written before actorEvent existed say the same).
  const outcome = (kind: string): string => `${e.actorEvent ?? `xstate.${ev?.ok ? 'done' : 'error'}.actor.${ev?.invokeId}`} (${kind})`;
  const type =
    ev?.type === 'jetstate.timer' ? `timer ${ev.timerId}` : ev?.type === 'jetstate.task' ? outcome('task') : ev?.type === 'jetstate.child' ? outcome('child') : (ev?.type ?? '?');
  if (e.kind === 'rejected') return `  -   ${when}  ${type} rejected: ${e.reason}`;
  const move = e.from === null ? `-> ${JSON.stringify(e.to)}` : `${JSON.stringify(e.from)} -> ${JSON.stringify(e.to)}`;
  return `  ${String(e.revision).padStart(3)} ${when}  ${type}  ${move}${e.reason ? `  (${e.reason})` : ''}`;
}

/** The newest rejected events of the namespace with their reasons (payloads redacted unless --reveal). */
async function showDeadLetters(client: Client, limit: number, out: (text: string, data: unknown) => void): Promise<number> {
  const letters = await client.deadLetters({ limit });
  out(
    letters.length === 0
      ? 'no dead letters'
      : letters.map((l) => `${new Date(l.timeMs).toISOString()}  ${l.workflow} ${l.id}  seq ${l.seq}: ${l.reason}\n    ${l.size} bytes`).join('\n'),
    letters,
  );
  return 0;
}

/** The re-encryption report in plain words: what moved, and each instance that could not, with why. */
export function describeReencrypt(workflow: string, r: ReencryptReport): string {
  const lines = [
    `re-encrypted ${r.resealed} fields under the newest key: ${r.records} ${workflow} records rewritten, ` +
      `history of ${r.history.instances} instances rewritten (${r.history.messages} messages)`,
  ];
  if (r.failed.length === 0) lines.push('nothing left on an older key');
  else {
    lines.push(`${r.failed.length} could not be re-encrypted (still on an older key; keep that key in the ring, fix the cause and run reencrypt again):`);
    for (const f of r.failed) lines.push(`  ${f.key}: ${f.reason}`);
  }
  return lines.join('\n');
}

const toJson = (v: unknown): string => JSON.stringify(v, (k, x: unknown) => (k === 'matches' ? undefined : x), 2);

export async function runCommand(command: string, args: string[], values: CliValues): Promise<number> {
  if (command === 'dev') return runDev(values);
  if (command === 'ui') return (await import('./ui.js')).runUi(values);
  const known = ['start', 'send', 'get', 'list', 'history', 'verify', 'wait', 'reencrypt', 'deadletters'];
  if (!known.includes(command)) throw new JetstateError(ErrorCode.InvalidOptions, `unknown command '${command}'; commands: dev, ui, sfn-local, ${known.join(', ')}`);
  const workflows = await loadWorkflows(values.workflows);
  const out = (text: string, data: unknown): void => void process.stdout.write((values.json ? toJson(data) : text) + '\n');
  // Secrets: sealing what is sent needs the key ring; reading shows them only when asked (--reveal).
  const keys = keyRingText();
  const reading = ['get', 'list', 'history', 'wait', 'verify', 'deadletters'].includes(command);
  if (values.reveal && !keys) throw new JetstateError(ErrorCode.InvalidOptions, '--reveal needs the key ring in JETSTATE_KEYS (or JETSTATE_SECRET_KEYS)');
  const keyRing = keys && (!reading || values.reveal || command === 'verify') ? keys : undefined;
  const token = values.token ?? (process.env['JETSTATE_TOKEN'] || undefined);
  let client: Client;
  try {
    client = await createClient({
      servers: serverOf(values),
      namespace: values.namespace,
      workflows,
      name: `jetstate-cli-${command}`,
      ...(keyRing ? { secrets: { keyRing } } : {}),
    });
  } catch (e) {
    if (e instanceof JetstateError && e.code === ErrorCode.Closed) {
      throw new JetstateError(ErrorCode.Closed, `${e.message.split(';')[0]}; is NATS running? start one with 'jetstate dev' or pass --server`);
    }
    throw e;
  }
  try {
    if (command === 'deadletters') return await showDeadLetters(client, Number(values.limit ?? 50), out);
    const workflow = pick(workflows, args[0]);
    switch (command) {
      case 'reencrypt': {
        const r = await client.reencrypt(workflow);
        out(describeReencrypt(workflow.name, r), r);
        return r.failed.length === 0 ? 0 : 1;
      }
      case 'start': {
        const input = json(needs(values.input, '--input JSON'), '--input');
        const started = await client.start(workflow, { ...(values.id ? { id: values.id } : {}), input, ...(token ? { token } : {}) });
        // start() returns the values it was given; the output shows secrets only with --reveal.
        const paths = workflow.security.secrets;
        const inst = values.reveal || paths.length === 0 ? started : { ...started, context: redactPaths(started.context, paths), output: redactPaths(started.output, paths) };
        out(`started ${describeInstance(inst)}`, inst);
        return 0;
      }
      case 'send': {
        const id = needs(args[1], 'instance id');
        const type = needs(args[2], 'event type');
        const payload = json(args[3] ?? values.data, 'the event payload');
        const event = { ...(payload as object), type } as never;
        const r = await client.send(workflow, id, event, { ...(values['idempotency-key'] ? { idempotencyKey: values['idempotency-key'] } : {}), ...(token ? { token } : {}) });
        out(r.duplicate ? `${type} was already accepted for ${workflow.name} ${id} (stream sequence ${r.seq})` : `accepted ${type} for ${workflow.name} ${id} (stream sequence ${r.seq})`, r);
        return 0;
      }
      case 'get': {
        const id = needs(args[1], 'instance id');
        const inst = await client.get(workflow, id);
        if (!inst) {
          process.stderr.write(`jetstate: ${workflow.name} ${id} does not exist\n`);
          return 1;
        }
        out(describeInstance(inst), inst);
        return 0;
      }
      case 'list': {
        const found: Instance[] = [];
        const filter = { ...(values.status ? { status: values.status as never } : {}), ...(values.state ? { state: values.state } : {}) };
        for await (const i of client.list(workflow, filter)) found.push(i);
        out(found.length === 0 ? `no ${workflow.name} instances match` : found.map((i) => `${i.id}  ${i.status}  ${JSON.stringify(i.value)}  revision ${i.revision}`).join('\n'), found);
        return 0;
      }
      case 'history': {
        const id = needs(args[1], 'instance id');
        if (!(await client.get(workflow, id))) throw new JetstateError(ErrorCode.InstanceNotFound, `${workflow.name} ${id} does not exist`);
        const entries = await client.history(workflow, id);
        out([`history of ${workflow.name} ${id} (${entries.length} entries):`, ...entries.map(describeEntry)].join('\n'), entries);
        return 0;
      }
      case 'verify': {
        const id = needs(args[1], 'instance id');
        const report = await client.verify(workflow, id);
        out(
          report.ok
            ? `ok: replaying ${report.replayed} events reproduces ${workflow.name} ${id} at revision ${report.revision}`
            : `MISMATCH for ${workflow.name} ${id}:\n${report.problems.map((p) => `  - ${p}`).join('\n')}`,
          report,
        );
        return report.ok ? 0 : 1;
      }
      case 'wait': {
        const id = needs(args[1], 'instance id');
        const state = needs(values.state, '--state');
        const timeoutMs = Number(values['timeout-ms'] ?? 30_000);
        const inst = await client.waitFor(workflow, id, (i) => i.matches(state), { timeoutMs });
        out(describeInstance(inst), inst);
        return 0;
      }
    }
    return 2;
  } finally {
    await client.close();
  }
}
