/**
 * `verify`: replays an instance's recorded history from its start and checks that it reproduces
 * the stored snapshot (guarantee 6, deterministic history).
 */
import type { WorkflowDefinition } from '../define/definition.js';
import { HistoryKind, type HistoryEntry, type InstanceRecord } from '../protocol/record.js';
import { applyEvents, startInstance } from './step.js';
import type { MachineRunner } from './runner.js';
import { canonicalJson } from '../protocol/json.js';

export interface VerifyReport {
  ok: boolean;
  workflow: string;
  id: string;
  /** Revision of the stored record. */
  revision: number;
  /** Events replayed after the start. */
  replayed: number;
  /** What differs, in plain words; empty when ok. */
  problems: string[];
}

export function verifyInstance(def: WorkflowDefinition, runner: MachineRunner, record: InstanceRecord, history: HistoryEntry[]): VerifyReport {
  const problems: string[] = [];
  const start = history.find((e) => e.kind === HistoryKind.Start);
  if (!start) problems.push('history has no start entry; replaying from the input stored in the record');
  const input = start ? (start.event as { input?: unknown }).input : record.input;
  let { record: current, snapshot } = startInstance(def, runner, record.id, input, record.createdAtMs, record.parent, record.secrets);
  let replayed = 0;
  let expectedRevision = 2;
  for (const entry of history) {
    if (entry.kind !== HistoryKind.Event) continue;
    if (entry.revision > record.revision) break; // written to history, not yet to the record
    if (entry.revision !== expectedRevision) problems.push(`history skips from revision ${expectedRevision - 1} to ${entry.revision}`);
    expectedRevision = entry.revision + 1;
    const step = applyEvents(runner, current, snapshot, [{ seq: entry.seq, timeMs: entry.timeMs, event: entry.event as { type: string }, identity: entry.identity, force: true }], entry.timeMs);
    current = step.record;
    snapshot = step.snapshot;
    replayed++;
    const got = step.entries[0];
    if (got && canonicalJson(got.to) !== canonicalJson(entry.to)) {
      problems.push(`revision ${entry.revision}: replay reached ${JSON.stringify(got.to)}, history says ${JSON.stringify(entry.to)}`);
    }
  }
  if (current.revision !== record.revision) problems.push(`replay ends at revision ${current.revision}, the record is at ${record.revision}`);
  if (current.status !== record.status) problems.push(`replay ends ${current.status}, the record is ${record.status}`);
  if (canonicalJson(current.timers) !== canonicalJson(record.timers)) {
    problems.push(`replayed pending timers differ: replay ${canonicalJson(current.timers)} vs stored ${canonicalJson(record.timers)}`);
  }
  if (canonicalJson(current.snapshot) !== canonicalJson(record.snapshot)) {
    problems.push(`replayed snapshot differs from the stored one: replay ${canonicalJson(current.snapshot)} vs stored ${canonicalJson(record.snapshot)}`);
  }
  return { ok: problems.length === 0, workflow: record.workflow, id: record.id, revision: record.revision, replayed, problems };
}
