/**
 * The history stream: the audit trail of every instance. One message per state write carries
 * the entries of that write; `Nats-Msg-Id` and read-side dedupe make republishing harmless.
 */
import type { Runtime } from './runtime.js';
import { HistoryKind, HistoryMessageSchema, type HistoryEntry, type InstanceRecord } from '../protocol/record.js';
import { readSubject } from './read.js';
import { decodeJson, encodeJson } from '../protocol/json.js';

function entryKey(e: HistoryEntry): string {
  return e.kind === HistoryKind.Rejected ? `x${e.seq}` : `r${e.revision}`;
}

/** Publishes the entries of one write. Returns once the stream has them. */
export async function publishHistory(rt: Runtime, workflow: string, id: string, entries: HistoryEntry[]): Promise<void> {
  if (entries.length === 0) return;
  const sealed = rt.security.codec.sealHistory(workflow, id, entries);
  await rt.js.publish(rt.names.historySubject(workflow, id), encodeJson({ entries: sealed }), {
    // Keyed: only engines publish history, and nobody else can take a write's id first.
    msgID: rt.security.signer.messageId(`hist.${workflow}.${id}.${entryKey(entries[0]!)}`),
  });
}

/** The history of one instance in order, each entry once. */
export async function readHistory(rt: Runtime, workflow: string, id: string): Promise<HistoryEntry[]> {
  const out: HistoryEntry[] = [];
  const seen = new Set<string>();
  for (const data of await readSubject(rt, rt.names.historyStream, rt.names.historySubject(workflow, id))) {
    const parsed = HistoryMessageSchema.safeParse(decodeJson(data));
    if (!parsed.success) {
      rt.logger.warn(`history of workflow '${workflow}' instance '${id}' holds an unreadable message; it is skipped`);
      continue;
    }
    for (const e of parsed.data.entries) {
      const k = entryKey(e);
      if (seen.has(k)) continue;
      seen.add(k);
      out.push(e);
    }
  }
  return out;
}

/**
 * Announces a finished instance on `<ns>.done.<workflow>.<id>` (core NATS, best effort: the record
 * and its history are the durable truth). Other services subscribe to `<ns>.done.<workflow>.>`.
 */
export function publishCompletion(rt: Runtime, record: InstanceRecord): void {
  if (record.status === 'running') return;
  const message: Record<string, unknown> = { workflow: record.workflow, id: record.id, status: record.status, revision: record.revision };
  if (record.output !== undefined) message['output'] = rt.security.codec.seal(record.workflow, record.id, 'output', record.output);
  if (record.error !== undefined) message['error'] = record.error;
  rt.nc.publish(rt.names.doneSubject(record.workflow, record.id), encodeJson(message));
}
