/**
 * Everything the instance page shows, read through the public client (`get`, `history`), which
 * opens or redacts secrets as its key ring allows, plus the few record fields the `Instance` view
 * does not carry (children, parent, the last transition's trace context, each timer's event type),
 * read from the record in KV. Those fields hold names, ids and numbers only, never context values.
 */
import type { KV } from '@nats-io/kv';
import type { Client, HistoryEntry, Instance } from '../../engine/index.js';
import type { WorkflowCatalog } from './catalog.js';
import { describeState, type InstanceIndex } from './instance-index.js';
import type { HistoryRow, InstanceDetail, PendingExecution } from './protocol.js';

export interface DetailSources {
  reader: Client;
  /** The bucket holding a record key's record. */
  kv: (key: string) => KV;
  index: InstanceIndex;
  catalog: WorkflowCatalog;
  /** e.g. `http://localhost:16686/trace/{traceId}`. */
  traceUrl: string | undefined;
  revealed: boolean;
  /** Pending Step Functions executions of the namespace (null without the bucket), cached. */
  executions: () => Promise<PendingExecution[] | null>;
}

/** The parts of a stored record the client's Instance view leaves out, read leniently. */
interface RecordExtras {
  version: number | undefined;
  status: string | undefined;
  value: unknown;
  timers: Record<string, { dueAtMs?: number; event?: { type?: string } }>;
  tasks: Record<string, { src?: string; startedAtMs?: number }>;
  children: Record<string, { workflow?: string; id?: string }>;
  parent: { workflow?: string; id?: string; invokeId?: string } | undefined;
  trace: { traceparent?: string } | undefined;
  revision: number;
  createdAtMs: number;
  updatedAtMs: number;
}

const obj = (v: unknown): Record<string, never> => (v && typeof v === 'object' ? (v as Record<string, never>) : {});
const num = (v: unknown): number => (typeof v === 'number' ? v : 0);

async function readExtras(kv: KV, key: string): Promise<RecordExtras | null> {
  const entry = await kv.get(key);
  if (!entry || entry.operation !== 'PUT') return null;
  let r: Record<string, unknown>;
  try {
    r = obj(JSON.parse(entry.string()));
  } catch {
    r = {};
  }
  return {
    version: typeof r['version'] === 'number' ? r['version'] : undefined,
    status: typeof r['status'] === 'string' ? r['status'] : undefined,
    value: obj(r['snapshot'])['value'],
    timers: obj(r['timers']),
    tasks: obj(r['tasks']),
    children: obj(r['children']),
    parent: r['parent'] ? obj(r['parent']) : undefined,
    trace: r['trace'] ? obj(r['trace']) : undefined,
    revision: num(r['revision']),
    createdAtMs: num(r['createdAtMs']),
    updatedAtMs: num(r['updatedAtMs']),
  };
}

/** The trace id of a W3C traceparent (`00-<trace id>-<span id>-<flags>`), or null. */
export function traceIdOf(traceparent: string | undefined): { traceId: string; spanId: string } | null {
  const m = /^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/.exec(traceparent ?? '');
  return m ? { traceId: m[1]!, spanId: m[2]! } : null;
}

export function traceLink(template: string | undefined, ids: { traceId: string; spanId: string }): string | null {
  return template ? template.replaceAll('{traceId}', ids.traceId).replaceAll('{spanId}', ids.spanId) : null;
}

/** What a history entry's event was, in words (the CLI's `history` says the same). */
export function describeEvent(entry: { kind: string; event: unknown; actorEvent?: string | undefined }): string {
  if (entry.kind === 'start') return 'start';
  const e = obj(entry.event) as Record<string, unknown>;
  const type = typeof e['type'] === 'string' ? e['type'] : '?';
  if (type === 'jetstate.timer') return `timer ${String(e['timerId'] ?? '')}`;
  const outcome = (kind: string): string => `${entry.actorEvent ?? `xstate.${e['ok'] ? 'done' : 'error'}.actor.${String(e['invokeId'] ?? '')}`} (${kind})`;
  if (type === 'jetstate.task') return outcome('task');
  if (type === 'jetstate.child') return outcome('child');
  return type;
}

/** The instance page's data, or null when the instance does not exist. */
export async function instanceDetail(src: DetailSources, workflow: string, id: string): Promise<InstanceDetail | null> {
  const key = `${workflow}.${id}`;
  const extras = await readExtras(src.kv(key), key);
  if (!extras) return null;
  const problems: string[] = [];
  const def = src.catalog.resolve(workflow, extras.version);
  let instance: Instance | null = null;
  let history: HistoryEntry[] = [];
  if (!def) {
    problems.push(`workflow '${workflow}' is not among the loaded workflows; pass the module that defines it with --workflows`);
  } else {
    if (extras.version !== undefined && def.version !== extras.version)
      problems.push(`version ${extras.version} is not loaded; the chart shows version ${def.version}`);
    try {
      instance = await src.reader.get(def, id);
      history = await src.reader.history(def, id);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  const value = instance?.value ?? extras.value;
  const ids = traceIdOf(extras.trace?.traceparent);
  const revision = instance?.revision ?? extras.revision;
  const rows: HistoryRow[] = history.map((h) => {
    const row: HistoryRow = {
      kind: h.kind,
      revision: h.revision,
      seq: h.seq,
      timeMs: h.timeMs,
      label: describeEvent(h),
      event: h.event,
      from: h.from,
      to: h.to,
      status: h.status,
    };
    if (h.reason !== undefined) row.reason = h.reason;
    if (h.identity) row.identity = h.identity;
    // The record keeps the trace context of its last transition only.
    if (ids && h.kind !== 'rejected' && h.revision === revision) {
      row.traceId = ids.traceId;
      const url = traceLink(src.traceUrl, ids);
      if (url) row.traceUrl = url;
    }
    return row;
  });
  const detail: InstanceDetail = {
    workflow,
    id,
    version: instance?.version ?? extras.version ?? 0,
    status: instance?.status ?? extras.status ?? 'unreadable',
    value,
    context: instance ? instance.context : null,
    revision,
    createdAtMs: instance?.createdAtMs ?? extras.createdAtMs,
    updatedAtMs: instance?.updatedAtMs ?? extras.updatedAtMs,
    active: describeState(value).paths,
    timers: Object.entries(extras.timers)
      .map(([tid, t]) => ({ id: tid, dueAtMs: num(t.dueAtMs), eventType: String(t.event?.type ?? tid) }))
      .sort((a, b) => a.dueAtMs - b.dueAtMs),
    tasks: instance
      ? instance.tasks
      : Object.entries(extras.tasks).map(([tid, t]) => ({ id: tid, src: String(t.src ?? '?'), startedAtMs: num(t.startedAtMs) })),
    children: Object.entries(extras.children).map(([invokeId, c]) => {
      const child = src.index.get(`${c.workflow}.${c.id}`);
      return { invokeId, workflow: String(c.workflow), id: String(c.id), status: child?.status ?? null, state: child?.state ?? null };
    }),
    parent: extras.parent ? { workflow: String(extras.parent.workflow), id: String(extras.parent.id), invokeId: String(extras.parent.invokeId) } : null,
    trace: ids ? { traceparent: extras.trace!.traceparent!, traceId: ids.traceId, url: traceLink(src.traceUrl, ids) } : null,
    history: rows,
    revealed: src.revealed,
  };
  if (Object.keys(extras.tasks).length > 0) {
    const pending = await src.executions().catch(() => null);
    const mine = pending?.filter((x) => x.workflow === workflow && x.id === id) ?? [];
    if (mine.length > 0) detail.executions = mine;
  }
  if (instance?.output !== undefined) detail.output = instance.output;
  if (instance?.error !== undefined) detail.error = instance.error;
  if (problems.length > 0) detail.problem = problems.join('; ');
  return detail;
}
