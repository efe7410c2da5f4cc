/**
 * The history stream: the audit trail of every instance. One message per state write carries
 * the entries of that write; `Nats-Msg-Id` and read-side dedupe make republishing harmless.
 */
import type { Runtime } from './runtime.js';
import { HistoryKind, HistoryMessageSchema, instanceTag, type HistoryEntry, type InstanceRef, type InstanceRecord } from '../protocol/record.js';
import { readSubjectMessages } from './read.js';
import { decodeJson, encodeJson, shortHash } from '../protocol/json.js';
import { isCasConflict } from './nats-errors.js';

/** What identifies an entry: its revision, or for a rejection (which leaves the revision) its sequence. */
export function entryKey(e: HistoryEntry): string {
  return e.kind === HistoryKind.Rejected ? `x${e.seq}` : `r${e.revision}`;
}

/** Inherited secret paths travel with the entries they sealed (see security/codec.ts). */
function historyMessage(entries: HistoryEntry[], inherited: readonly string[] | undefined): { entries: HistoryEntry[]; secrets?: string[] } {
  return inherited && inherited.length > 0 ? { entries, secrets: [...inherited] } : { entries };
}

/**
 * Publishes the entries of one write, sealed with the workflow's secret paths and the instance's
 * `inherited` ones. Returns once the stream has them.
 */
export async function publishHistory(rt: Runtime, instance: InstanceRef, entries: HistoryEntry[], inherited?: readonly string[]): Promise<void> {
  if (entries.length === 0) return;
  const { workflow, id } = instance;
  const sealed = rt.security.codec.sealHistory(workflow, id, entries, inherited);
  await rt.publish(rt.names.historySubject(workflow, id), encodeJson(historyMessage(sealed, inherited)), {
    // Keyed: only engines publish history, and nobody else can take a write's id first. Every
    // entry names the message: two messages with the same id hold the same entries, so the
    // stream's deduplication never drops an entry another message did not store.
    msgID: rt.security.signer.messageId(`hist.${workflow}.${instanceTag(instance)}.${shortHash(entries.map(entryKey).join(','))}`),
  });
}

/** An instance's history as stored: entries still sealed, and the inherited paths they were sealed with. */
export interface StoredHistory {
  entries: HistoryEntry[];
  secrets: string[] | undefined;
}

/**
 * The history of one instance in order, each entry once. Entries are ordered by the sequence of
 * their event in the instance's partition stream, which is the order they were applied in, so a
 * message republished later (a repair after a crash, a re-encryption) cannot move them.
 */
export async function readHistory(rt: Runtime, workflow: string, id: string): Promise<StoredHistory> {
  const out: HistoryEntry[] = [];
  const seen = new Set<string>();
  let secrets: string[] | undefined;
  for (const m of await readSubjectMessages(rt, rt.names.historyStream, rt.names.historySubject(workflow, id))) {
    const parsed = HistoryMessageSchema.safeParse(safeDecode(m.data));
    if (!parsed.success) {
      rt.logger.warn(`history of workflow '${workflow}' instance '${id}' holds an unreadable message; it is skipped`);
      continue;
    }
    secrets ??= parsed.data.secrets;
    for (const e of parsed.data.entries) {
      const k = entryKey(e);
      if (seen.has(k)) continue;
      seen.add(k);
      out.push(e);
    }
  }
  // Messages may be stored out of order: a write's history is published while the next one is
  // computed, and a crash republishes.
  return { entries: sortHistory(out), secrets };
}

/**
 * Entries in the order they happened: by revision; a rejection after the transition that made
 * its revision; rejections among themselves in stream order.
 */
export function sortHistory(entries: HistoryEntry[]): HistoryEntry[] {
  const rank = (e: HistoryEntry): number => (e.kind === 'rejected' ? 1 : 0);
  return entries.sort((a, b) => a.revision - b.revision || rank(a) - rank(b) || a.seq - b.seq);
}

/** The stored history with the entries the record still journals (not yet confirmed in the stream) added, each once. */
export function withJournal(stored: readonly HistoryEntry[], journal: readonly HistoryEntry[]): HistoryEntry[] {
  const seen = new Set(stored.map(entryKey));
  return sortHistory([...stored, ...journal.filter((e) => !seen.has(entryKey(e)))]);
}

/** What {@link rewriteHistory} did to one instance's history. */
export interface HistoryRewrite {
  /** Messages published again (every message of the instance, when one needed a change). */
  messages: number;
  /** Envelopes moved. */
  resealed: number;
}

/** Rewrites of one history started again after it changed under them, before giving up. */
const REWRITE_ATTEMPTS = 20;

/**
 * Rewrites the history of one instance with `reseal` applied to each message's entries (the
 * re-encrypt command). When no message changes, nothing is written. Otherwise every message of
 * the instance is published again, in order (changed or not, so the order stays), each only
 * while the subject ends where the last one left it: a message an engine wrote meanwhile, or a
 * delete's purge, makes it read the history again and start over, so a copy never brings back
 * history a delete removed, nor lands out of order. Then the messages read are purged: a purge of
 * the instance's subject bounded by the last sequence read. A crash in between leaves both copies,
 * which `readHistory` deduplicates; running it again finishes the job. `reseal` may throw (a key
 * not in the ring): then nothing is written.
 */
export async function rewriteHistory(
  rt: Runtime,
  workflow: string,
  id: string,
  reseal: (entries: HistoryEntry[], inherited: string[] | undefined) => { entries: HistoryEntry[]; resealed: number },
): Promise<HistoryRewrite> {
  for (let attempt = 1; ; attempt++) {
    const done = await rewriteOnce(rt, workflow, id, reseal);
    if (done) return done;
    if (attempt >= REWRITE_ATTEMPTS)
      throw new Error(`the history of workflow '${workflow}' instance '${id}' changed ${attempt} times while it was rewritten; run it again`);
  }
}

/** One read and rewrite; undefined when the history changed while the copies were published. */
async function rewriteOnce(
  rt: Runtime,
  workflow: string,
  id: string,
  reseal: (entries: HistoryEntry[], inherited: string[] | undefined) => { entries: HistoryEntry[]; resealed: number },
): Promise<HistoryRewrite | undefined> {
  const stream = rt.names.historyStream;
  const subject = rt.names.historySubject(workflow, id);
  const stored = await readSubjectMessages(rt, stream, subject);
  const next: Uint8Array[] = [];
  let resealed = 0;
  for (const m of stored) {
    const parsed = HistoryMessageSchema.safeParse(safeDecode(m.data));
    // A message that is not history is kept as it is, in its place.
    if (!parsed.success) {
      next.push(m.data);
      continue;
    }
    const r = reseal(parsed.data.entries, parsed.data.secrets);
    resealed += r.resealed;
    next.push(r.resealed === 0 ? m.data : encodeJson(historyMessage(r.entries, parsed.data.secrets)));
  }
  if (resealed === 0) return { messages: 0, resealed: 0 };
  let last = stored.at(-1)!.seq;
  for (const data of next) {
    try {
      last = (await rt.js.publish(subject, data, { expect: { lastSubjectSequence: last } })).seq;
    } catch (e) {
      if (isCasConflict(e)) return undefined;
      throw e;
    }
  }
  await rt.jsm.streams.purge(stream, { filter: subject, seq: stored.at(-1)!.seq + 1 });
  return { messages: next.length, resealed };
}

function safeDecode(data: Uint8Array): unknown {
  try {
    return decodeJson(data);
  } catch {
    return undefined;
  }
}

/**
 * Announces a finished instance on `<ns>.done.<workflow>.<id>` (core NATS, best effort: the record
 * and its history are the durable truth). Other services subscribe to `<ns>.done.<workflow>.>`.
 */
export function publishCompletion(rt: Runtime, record: InstanceRecord): void {
  if (record.status === 'running') return;
  const message: Record<string, unknown> = { workflow: record.workflow, id: record.id, status: record.status, revision: record.revision };
  if (record.output !== undefined) message['output'] = rt.security.codec.seal(record.workflow, record.id, 'output', record.output, record.secrets);
  if (record.secrets && record.secrets.length > 0 && record.output !== undefined) message['secrets'] = record.secrets;
  if (record.error !== undefined) message['error'] = record.error;
  rt.nc.publish(rt.names.doneSubject(record.workflow, record.id), encodeJson(message));
}
