/**
 * `verify`: replays an instance's recorded history from its start and checks that it reproduces
 * the stored snapshot (guarantee 6, deterministic history).
 */
import type { WorkflowDefinition } from '../define/definition.js';
import { HistoryKind, type HistoryEntry, type InstanceRecord } from '../protocol/record.js';
import { applyEvents, startInstance } from './step.js';
import type { MachineRunner } from './runner.js';
import { canonicalJson } from '../protocol/json.js';
import { redactPaths } from '../security/redact.js';

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

/**
 * Replays `history` over the record's start and compares. `redact`: the instance's secret paths,
 * whose values the report shows as `[redacted]` (the replay itself sees them in the clear).
 */
export function verifyInstance(
  def: WorkflowDefinition,
  runner: MachineRunner,
  record: InstanceRecord,
  history: HistoryEntry[],
  redact: readonly string[] = [],
): VerifyReport {
  const shown = (snapshot: Record<string, unknown>): string =>
    canonicalJson(redact.length === 0 ? snapshot : { ...snapshot, context: redactPaths(snapshot['context'], redact) });
  const shownTimers = (timers: InstanceRecord['timers']): string =>
    canonicalJson(
      redact.length === 0 ? timers : Object.fromEntries(Object.entries(timers).map(([k, t]) => [k, { ...t, event: redactPaths(t.event, redact) }])),
    );
  const problems: string[] = [];
  const start = history.find((e) => e.kind === HistoryKind.Start);
  if (!start) problems.push('history has no start entry; replaying from the input stored in the record');
  const input = start ? (start.event as { input?: unknown }).input : record.input;
  let { record: current, snapshot } = startInstance(def, runner, record.id, input, record.createdAtMs, record.parent, record.secrets, record.born);
  let replayed = 0;
  let expectedRevision = 2;
  const applied = history.filter((e) => e.kind === HistoryKind.Event && e.revision <= record.revision); // later ones: written to history, not yet to the record
  for (let i = 0; i < applied.length;) {
    // One stream event may have made several entries: a timer fire fires the timers due before it
    // first, each its own entry with the same sequence. Replaying that event makes them all again.
    let j = i + 1;
    // (Outcomes of tasks run in the engine's process carry no sequence, 0: each is its own event.)
    while (j < applied.length && applied[i]!.seq > 0 && applied[j]!.seq === applied[i]!.seq) j++;
    const group = applied.slice(i, j);
    const last = group[group.length - 1]!;
    for (const entry of group) {
      if (entry.revision !== expectedRevision) problems.push(`history skips from revision ${expectedRevision - 1} to ${entry.revision}`);
      expectedRevision = entry.revision + 1;
    }
    const step = applyEvents(
      runner,
      current,
      snapshot,
      [{ seq: last.seq, timeMs: last.timeMs, event: last.event as { type: string }, identity: last.identity, force: true }],
      last.timeMs,
    );
    current = step.record;
    snapshot = step.snapshot;
    replayed += group.length;
    group.forEach((entry, k) => {
      const got = step.entries[k];
      if (got && canonicalJson(got.to) !== canonicalJson(entry.to)) {
        problems.push(`revision ${entry.revision}: replay reached ${JSON.stringify(got.to)}, history says ${JSON.stringify(entry.to)}`);
      }
    });
    i = j;
  }
  if (current.revision !== record.revision) problems.push(`replay ends at revision ${current.revision}, the record is at ${record.revision}`);
  if (current.status !== record.status) problems.push(`replay ends ${current.status}, the record is ${record.status}`);
  if (canonicalJson(current.timers) !== canonicalJson(record.timers)) {
    problems.push(`replayed pending timers differ: replay ${shownTimers(current.timers)} vs stored ${shownTimers(record.timers)}`);
  }
  if (canonicalJson(current.snapshot) !== canonicalJson(record.snapshot)) {
    problems.push(`replayed snapshot differs from the stored one: replay ${shown(current.snapshot)} vs stored ${shown(record.snapshot)}`);
  }
  return { ok: problems.length === 0, workflow: record.workflow, id: record.id, revision: record.revision, replayed, problems };
}
