/**
 * Key rotation: re-encrypts every stored secret of some workflows under the primary key of the
 * ring, so that older keys can leave it. Two places hold sealed data for long: instance records
 * (KV) and the history stream; both are rewritten. Events streams are not: their messages are
 * trimmed once applied (two minutes later). Dead letters are not: they are raw copies of refused
 * events, kept a week, meant to be looked at as they came. Task and timer messages hold no
 * payload.
 *
 * Nothing stops at the first problem: every record and every history is tried, and the ones that
 * could not be re-encrypted (a key missing from the ring, an unreadable record, a record that kept
 * changing) are reported with the reason; the rest are done.
 */
import { decodeJson, encodeJson } from '../protocol/json.js';
import { parseStoredRecord } from '../protocol/record.js';
import { isCasConflict } from './nats-errors.js';
import { rewriteHistory } from './history.js';
import type { Runtime } from './runtime.js';

/** What a re-encryption did. */
export interface ReencryptReport {
  /** Records rewritten. */
  records: number;
  /** Envelopes moved to the primary key, in records and history. */
  resealed: number;
  /** What could not be re-encrypted (the instance key, and why): still sealed with an older key. */
  failed: Array<{ key: string; reason: string }>;
  /** Instances whose history was rewritten, and the messages published again for them. */
  history: { instances: number; messages: number };
}

/** Compare-and-set attempts on one record that a live engine keeps writing. */
const CAS_ATTEMPTS = 20;

/** Re-encrypts the records and histories of these workflows (see the module comment). */
export async function reencryptWorkflows(rt: Runtime, workflows: readonly string[]): Promise<ReencryptReport> {
  const report: ReencryptReport = { records: 0, resealed: 0, failed: [], history: { instances: 0, messages: 0 } };
  for (const workflow of workflows) {
    await reencryptRecords(rt, workflow, report);
    await reencryptHistories(rt, workflow, report);
  }
  return report;
}

async function reencryptRecords(rt: Runtime, workflow: string, report: ReencryptReport): Promise<void> {
  const { codec } = rt.security;
  const keys: string[] = [];
  for (const kv of rt.records.all) for await (const key of await kv.keys(`${workflow}.>`)) keys.push(key);
  for (const key of keys.sort()) {
    let done = false;
    for (let attempt = 0; attempt < CAS_ATTEMPTS && !done; attempt++) {
      const entry = await rt.records.ofKey(key).get(key);
      if (!entry || entry.operation !== 'PUT') break;
      let parsed;
      try {
        parsed = parseStoredRecord(decodeJson(entry.value));
      } catch (e) {
        report.failed.push({ key, reason: `the record is not UTF-8 JSON (${(e as Error).message})` });
        break;
      }
      if (!parsed.success) {
        report.failed.push({ key, reason: 'the record does not match the record schema' });
        break;
      }
      let r;
      try {
        r = codec.resealRecord(parsed.data);
      } catch (e) {
        report.failed.push({ key, reason: (e as Error).message });
        break;
      }
      if (r.resealed === 0) break;
      try {
        await rt.records.ofKey(key).update(key, encodeJson(r.record), entry.revision);
        report.records++;
        report.resealed += r.resealed;
        done = true;
      } catch (e) {
        if (!isCasConflict(e)) throw e;
        if (attempt + 1 === CAS_ATTEMPTS)
          report.failed.push({ key, reason: `the record changed ${CAS_ATTEMPTS} times while it was re-encrypted; run reencrypt again` });
      }
    }
  }
}

async function reencryptHistories(rt: Runtime, workflow: string, report: ReencryptReport): Promise<void> {
  const { codec } = rt.security;
  const prefix = `${rt.names.namespace}.hist.${workflow}.`;
  const info = await rt.jsm.streams.info(rt.names.historyStream, { subjects_filter: `${prefix}>` });
  const ids = Object.keys(info.state.subjects ?? {})
    .map((s) => s.slice(prefix.length))
    .sort();
  for (const id of ids) {
    try {
      const r = await rewriteHistory(rt, workflow, id, (entries, inherited) => codec.resealHistory(workflow, id, entries, inherited));
      if (r.messages === 0) continue;
      report.history.instances++;
      report.history.messages += r.messages;
      report.resealed += r.resealed;
    } catch (e) {
      report.failed.push({ key: rt.names.instanceKey(workflow, id), reason: `history: ${(e as Error).message}` });
    }
  }
}
