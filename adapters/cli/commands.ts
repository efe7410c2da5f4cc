/** The CLI's commands, each speaking in plain words and returning an exit code. */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  createClient,
  JetstateError,
  ErrorCode,
  type Client,
  type HistoryEntry,
  type Instance,
  type ReencryptReport,
  type WorkflowDefinition,
} from '../../engine/index.js';
import { redactPaths } from '../../engine/internal.js';
import { loadWorkflows } from './workflow-module.js';

export { loadWorkflows };

export interface CliValues {
  server?: string | undefined;
  namespace?: string | undefined;
  domain?: string | undefined;
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
  config?: string | undefined;
  suite?: string | undefined;
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

function pick(workflows: WorkflowDefinition[], name: string | undefined): WorkflowDefinition {
  if (!name) throw new JetstateError(ErrorCode.InvalidOptions, `name a workflow; known: ${names(workflows)}`);
  const versions = workflows.filter((w) => w.name === name).sort((a, b) => b.version - a.version);
  if (!versions[0])
    throw new JetstateError(
      ErrorCode.InvalidOptions,
      `no workflow named '${name}'; known: ${names(workflows)}; pass --workflows (or set JETSTATE_WORKFLOWS, or "workflows" in jetstate.config.json) to load others`,
    );
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

/** A whole-number flag (`--limit`, `--timeout-ms`), checked before anything connects. */
function wholeFlag(values: CliValues, name: 'limit' | 'timeout-ms', fallback: number, min: number, max: number): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > max)
    throw new JetstateError(ErrorCode.InvalidOptions, `--${name} '${raw}' is not a whole number from ${min} to ${max}; e.g. --${name} ${fallback}`);
  return n;
}

/** A send's payload: a JSON object whose fields go beside the event type. */
function eventPayload(text: string | undefined, type: string): Record<string, unknown> {
  const payload = json(text, 'the event payload');
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload))
    throw new JetstateError(
      ErrorCode.InvalidOptions,
      `the event payload must be a JSON object (its fields go beside the type), e.g. '{"amount":10}'; got ${text}`,
    );
  const given = (payload as { type?: unknown }).type;
  if (given !== undefined && given !== type)
    throw new JetstateError(
      ErrorCode.InvalidOptions,
      `the event payload says type ${typeof given === 'string' ? `'${given}'` : JSON.stringify(given)} and the command '${type}': give the type once, as the argument`,
    );
  return payload as Record<string, unknown>;
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
    ev?.type === 'jetstate.timer'
      ? `timer ${ev.timerId}`
      : ev?.type === 'jetstate.task'
        ? outcome('task')
        : ev?.type === 'jetstate.child'
          ? outcome('child')
          : (ev?.type ?? '?');
  if (e.kind === 'rejected') return `  -   ${when}  ${type} rejected: ${e.reason}`;
  const move = e.from === null ? `-> ${JSON.stringify(e.to)}` : `${JSON.stringify(e.from)} -> ${JSON.stringify(e.to)}`;
  return `  ${String(e.revision).padStart(3)} ${when}  ${type}  ${move}${e.reason ? `  (${e.reason})` : ''}`;
}

/** The newest rejected events of the namespace with their reasons (never their payloads: they may be hostile or hold secrets). */
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
  if (command === 'dev') return (await import('./dev.js')).runDev(values);
  if (command === 'ui') return (await import('./ui.js')).runUi(values);
  if (command === 'nats') return (await import('./nats.js')).runNats(args, values);
  const workflows = await loadWorkflows(values.workflows);
  const out = (text: string, data: unknown): void => void process.stdout.write((values.json ? toJson(data) : text) + '\n');
  // Secrets: sealing what is sent needs the key ring; reading shows them only when asked (--reveal).
  const keys = keyRingText();
  const reading = ['get', 'list', 'history', 'wait', 'verify', 'deadletters'].includes(command);
  if (values.reveal && !keys) throw new JetstateError(ErrorCode.InvalidOptions, '--reveal needs the key ring in JETSTATE_KEYS (or JETSTATE_SECRET_KEYS)');
  const keyRing = keys && (!reading || values.reveal || command === 'verify') ? keys : undefined;
  const token = values.token ?? (process.env['JETSTATE_TOKEN'] || undefined);
  // What the command line says is checked before anything connects.
  const limit = wholeFlag(values, 'limit', 50, 1, 10_000);
  const timeoutMs = wholeFlag(values, 'timeout-ms', 30_000, 0, 2_147_483_647);
  const input = command === 'start' ? json(needs(values.input, '--input JSON'), '--input') : undefined;
  if (command === 'send' && args[3] !== undefined && values.data !== undefined)
    throw new JetstateError(ErrorCode.InvalidOptions, 'give the event payload once: as the JSON argument or as --data, not both');
  const payload = command === 'send' ? eventPayload(args[3] ?? values.data, needs(args[2], 'event type')) : undefined;
  let client: Client;
  try {
    client = await createClient({
      servers: serverOf(values),
      namespace: values.namespace,
      ...(values.domain ? { jsDomain: values.domain } : {}),
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
    if (command === 'deadletters') return await showDeadLetters(client, limit, out);
    const workflow = pick(workflows, args[0]);
    switch (command) {
      case 'reencrypt': {
        const r = await client.reencrypt(workflow);
        out(describeReencrypt(workflow.name, r), r);
        return r.failed.length === 0 ? 0 : 1;
      }
      case 'start': {
        const started = await client.start(workflow, { ...(values.id !== undefined ? { id: values.id } : {}), input, ...(token ? { token } : {}) });
        // start() returns the values it was given; the output shows secrets only with --reveal.
        const paths = workflow.security.secrets;
        const inst =
          values.reveal || paths.length === 0
            ? started
            : { ...started, context: redactPaths(started.context, paths), output: redactPaths(started.output, paths) };
        out(`started ${describeInstance(inst)}`, inst);
        return 0;
      }
      case 'send': {
        const id = needs(args[1], 'instance id');
        const type = needs(args[2], 'event type');
        const event = { ...payload, type } as never;
        const r = await client.send(workflow, id, event, {
          ...(values['idempotency-key'] !== undefined ? { idempotencyKey: values['idempotency-key'] } : {}),
          ...(token ? { token } : {}),
        });
        out(
          r.duplicate
            ? `${type} was already accepted for ${workflow.name} ${id} (stream sequence ${r.seq})`
            : `accepted ${type} for ${workflow.name} ${id} (stream sequence ${r.seq})`,
          r,
        );
        return 0;
      }
      case 'get': {
        const id = needs(args[1], 'instance id');
        const inst = await client.get(workflow, id);
        if (!inst) {
          // A script reading --json gets null for a missing instance, and the exit code says it too.
          if (values.json) process.stdout.write('null\n');
          throw new JetstateError(ErrorCode.InstanceNotFound, `${workflow.name} ${id} does not exist`);
        }
        out(describeInstance(inst), inst);
        return 0;
      }
      case 'list': {
        const found: Instance[] = [];
        const filter = { ...(values.status ? { status: values.status as never } : {}), ...(values.state ? { state: values.state } : {}) };
        for await (const i of client.list(workflow, filter)) found.push(i);
        out(
          found.length === 0
            ? `no ${workflow.name} instances match`
            : found.map((i) => `${i.id}  ${i.status}  ${JSON.stringify(i.value)}  revision ${i.revision}`).join('\n'),
          found,
        );
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
        const report = await client.verify(workflow, id, { reveal: values.reveal === true });
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
