/**
 * The pure step: given an instance record and its next events, compute the next record, the
 * history entries and the effects, with XState's pure transition functions. Nothing here does
 * I/O; the engine persists the result and only then runs the effects.
 */
import type { AnyMachineSnapshot } from 'xstate';
import type { WorkflowDefinition } from '../define/definition.js';
import { HistoryKind, InstanceStatus, RECORD_SCHEMA_VERSION, bornOf, effectKey, type HistoryEntry, type InstanceRecord } from '../protocol/record.js';
import { digest } from '../protocol/json.js';
import {
  EngineEvent,
  actorOutcome,
  isChildResult,
  isControl,
  isFail,
  isSelfSend,
  isStop,
  isForEarlierInstance,
  isTaskResult,
  isTimerFire,
  type ParentRef,
} from '../protocol/events.js';
import type { IdentitySummary } from '../protocol/identity.js';
import { errorText, statusOf, type MachineRunner } from './runner.js';
import { Plan, type Effect, type ScheduledTimer, type TaskChange } from './plan.js';
import { jsonProblem } from './json-safe.js';

export interface StartResult {
  record: InstanceRecord;
  snapshot: AnyMachineSnapshot;
  entry: HistoryEntry;
  effects: Effect[];
  timers: ScheduledTimer[];
  tasks: TaskChange[];
}

/**
 * The initial record of a new instance. `input` is already validated. `secrets`: the paths it
 * inherited from its parent (see security/inherited-secrets.ts), kept in the record.
 */
export function startInstance(
  def: WorkflowDefinition,
  runner: MachineRunner,
  id: string,
  input: unknown,
  nowMs: number,
  parent?: InstanceRecord['parent'],
  secrets?: readonly string[],
  born?: number,
  declared?: readonly string[],
): StartResult {
  let snapshot: AnyMachineSnapshot;
  const plan = new Plan(undefined, parent, secrets, declared);
  let error: string | undefined;
  try {
    const r = runner.initial(input, parent !== undefined);
    // What cannot be made durable fails the start, as a throw does.
    const problem = plan.problemOf(r.actions, r.snapshot, runner) ?? dataProblem(r.snapshot);
    if (problem !== undefined) throw new Error(problem);
    snapshot = r.snapshot;
    plan.add(r.actions, runner, def.name, id, 1, nowMs, { type: 'xstate.init', input }, born);
  } catch (e) {
    // A machine that throws on entry is recorded as failed, not lost.
    error = errorText(e);
    snapshot = { status: 'error', value: {}, context: undefined, error } as unknown as AnyMachineSnapshot;
  }
  const persisted = error === undefined ? runner.persist(snapshot) : { status: 'error', value: {}, error };
  const status = error === undefined ? statusOf(snapshot) : InstanceStatus.Failed;
  // XState reports some errors of the initial step in the snapshot rather than by a throw.
  if (status === InstanceStatus.Failed && error === undefined) error = errorText(snapshot.error);
  if (status !== InstanceStatus.Running) plan.finish(effectKey(def.name, { id, born }, 1));
  const entry: HistoryEntry = {
    kind: HistoryKind.Start,
    revision: 1,
    seq: 0,
    event: { type: 'jetstate.start', input },
    from: null,
    to: persisted['value'] ?? null,
    status,
    timeMs: nowMs,
  };
  if (error !== undefined) entry.reason = error;
  const record: InstanceRecord = {
    schemaVersion: RECORD_SCHEMA_VERSION,
    workflow: def.name,
    version: def.version,
    id,
    status,
    snapshot: persisted,
    input,
    inputDigest: digest(input),
    revision: 1,
    lastSeq: 0,
    ...bornOf({ born }),
    createdAtMs: nowMs,
    updatedAtMs: nowMs,
    lastHistory: [entry],
    ...plan.fields(snapshot.context),
  };
  if (status === InstanceStatus.Done) record.output = snapshot.output;
  if (error !== undefined) record.error = error;
  if (parent) record.parent = parent;
  if (secrets && secrets.length > 0) record.secrets = [...secrets];
  return { record, snapshot, entry, effects: plan.effects, timers: plan.pendingTimers(), tasks: plan.pendingTasks() };
}

/**
 * One event for the step: its stream sequence, the time the stream accepted it, and either the
 * parsed event or why it is rejected.
 */
export type StepEvent = (
  { seq: number; timeMs: number; event: { type: string }; rejected?: undefined } | { seq: number; timeMs: number; event: unknown; rejected: string }
) & {
  /** The verified sender: recorded in the history and given to the machine as `event.$identity`. */
  identity?: IdentitySummary | undefined;
  /**
   * Applied whatever its sequence (which then only moves `lastSeq` forward): the outcome of a task
   * that ran in this process (sequence 0: it never was in the stream), or an entry being replayed.
   */
  force?: boolean | undefined;
};

const hasIdentity = (e: StepEvent): boolean => e.identity !== undefined;

export interface StepResult {
  /** The next record; the same object when nothing was applied. */
  record: InstanceRecord;
  snapshot: AnyMachineSnapshot;
  /** History entries in order: applied transitions and rejections. */
  entries: HistoryEntry[];
  effects: Effect[];
  /** Timers scheduled by these events (already in `record.timers`). */
  timers: ScheduledTimer[];
  /** Tasks started by these events (already in `record.tasks`), and tasks to cancel. */
  tasks: TaskChange[];
  cancelledTasks: TaskChange[];
  /** True when the record changed and must be written. */
  changed: boolean;
}

/**
 * Applies events, in order, to an instance. Events at or below `record.lastSeq` were applied
 * before (a redelivery) and are skipped; this is what makes the state effect exactly-once.
 */
export function applyEvents(
  runner: MachineRunner,
  record: InstanceRecord,
  snapshot: AnyMachineSnapshot,
  events: readonly StepEvent[],
  nowMs: number,
  declared?: readonly string[],
): StepResult {
  const entries: HistoryEntry[] = [];
  const plan = new Plan(record, record.parent, record.secrets, declared);
  let revision = record.revision;
  let lastSeq = record.lastSeq;
  let status = record.status;
  let current = snapshot;
  let error = record.error;
  let applied = 0;
  /**
   * One transition of the machine: `machineEvent` is what XState sees, `e.event` what history keeps
   * (and replay applies). A step whose actions or data cannot be made durable fails the instance,
   * like a throw, leaving the state as it was.
   */
  const transition = (e: StepEvent, recorded: unknown, machineEvent: { type: string }, actorEvent?: string): void => {
    const from = current.value;
    lastSeq = Math.max(lastSeq, e.seq);
    revision += 1;
    applied += 1;
    const named = actorEvent ? { actorEvent } : {};
    if (status !== InstanceStatus.Running) {
      // A finished instance takes no more transitions; the event is recorded, not applied.
      entries.push({
        kind: HistoryKind.Event,
        revision,
        seq: e.seq,
        event: recorded,
        from,
        to: from,
        status,
        timeMs: e.timeMs,
        reason: `instance is ${status}`,
        ...named,
      });
      return;
    }
    try {
      // The verified sender is part of the event the machine sees (and of the history, for replay).
      const r = runner.transition(
        current,
        e.identity ? ({ ...machineEvent, $identity: e.identity } as typeof machineEvent) : machineEvent,
        record.parent !== undefined,
      );
      const problem = plan.problemOf(r.actions, r.snapshot, runner, current) ?? dataProblem(r.snapshot, current.context);
      if (problem !== undefined) throw new Error(problem);
      // XState hands back the very same snapshot, and asks for nothing, when no transition took the event.
      const unchanged = r.snapshot === current && r.actions.length === 0;
      current = r.snapshot;
      status = statusOf(current);
      if (status === InstanceStatus.Failed) error = errorText(current.error);
      plan.add(r.actions, runner, record.workflow, record.id, revision, e.timeMs, machineEvent, record.born);
      const entry: HistoryEntry = {
        kind: HistoryKind.Event,
        revision,
        seq: e.seq,
        event: recorded,
        from,
        to: current.value,
        status,
        timeMs: e.timeMs,
        ...named,
      };
      if (unchanged) {
        entry.unchanged = true;
        entry.reason = `no transition of state ${JSON.stringify(from)} takes '${machineEvent.type}': it changed nothing`;
      }
      entries.push(entry);
    } catch (err) {
      // A guard or action that throws fails the instance deterministically; replay does the same.
      status = InstanceStatus.Failed;
      error = errorText(err);
      entries.push({ kind: HistoryKind.Event, revision, seq: e.seq, event: recorded, from, to: from, status, timeMs: e.timeMs, reason: error, ...named });
    }
  };
  /** A pending timer fires: its event to the machine, or (a delayed sendTo another instance) to that instance. */
  const fire = (e: StepEvent, key: string, recorded: unknown): void => {
    const timer = plan.takeTimer(key);
    if (!timer.to || status !== InstanceStatus.Running) {
      transition(e, recorded, timer.event);
      return;
    }
    lastSeq = Math.max(lastSeq, e.seq);
    revision += 1;
    applied += 1;
    plan.deliver(timer, effectKey(record.workflow, record, revision, 0), recorded);
    entries.push({ kind: HistoryKind.Event, revision, seq: e.seq, event: recorded, from: current.value, to: current.value, status, timeMs: e.timeMs });
  };
  for (const e of events) {
    if (e.seq <= lastSeq && !e.force) continue;
    const from = current.value;
    if (e.rejected !== undefined) {
      entries.push({ kind: HistoryKind.Rejected, revision, seq: e.seq, event: e.event, from, to: from, status, timeMs: e.timeMs, reason: e.rejected });
      continue;
    }
    // A timer or task of an earlier instance with this id (deleted, then started again).
    if (isForEarlierInstance(e.event, record.born)) continue;
    if (isTimerFire(e.event)) {
      // A timer whose state was exited (or re-entered since) is no longer pending: it changes nothing.
      let key = plan.findTimer(e.event.timerId, e.event.token);
      if (key === undefined) continue;
      // Timers overdue together fire as XState fires them: by due time, ties in scheduling order.
      // Each one due before this one fires first, as its own transition recorded with its own fire
      // event (so replay does the same); its own fire message, later, finds it gone. An earlier one
      // with the same send id moves this one to a derived key (see Plan.takeTimer): found again.
      for (let k = plan.timerBefore(key); k !== undefined && status === InstanceStatus.Running; k = key && plan.timerBefore(key)) {
        fire(e, k, { type: EngineEvent.Timer, timerId: plan.fireName(k), token: plan.timers[k]!.token });
        key = plan.findTimer(e.event.timerId, e.event.token);
      }
      // One of them may have exited its state.
      if (key !== undefined) fire(e, key, e.event);
      continue;
    }
    if (isChildResult(e.event)) {
      const child = plan.children[e.event.invokeId];
      const about = e.event.child;
      if (!child || child.token !== e.event.token || (about !== undefined && (about.workflow !== child.workflow || about.id !== child.id))) continue;
      delete plan.children[e.event.invokeId];
      const event = actorOutcome(e.event);
      transition(e, e.event, event, event.type);
      continue;
    }
    if (isTaskResult(e.event)) {
      const task = plan.tasks[e.event.invokeId];
      // The outcome of a task whose state was exited, or of an attempt already applied, changes nothing.
      if (!task || task.token !== e.event.token) continue;
      delete plan.tasks[e.event.invokeId];
      const event = actorOutcome(e.event);
      transition(e, e.event, event, event.type);
      continue;
    }
    if (isSelfSend(e.event)) {
      // An event the instance sent itself (sendTo self): the machine sees the event it sent.
      transition(e, e.event, e.event.event, e.event.event.type);
      continue;
    }
    if (isStop(e.event)) {
      // The parent's invoking state was exited: this child stops where it is (a stop meant for an
      // earlier invocation with the same child id changes nothing).
      const { token, parent } = e.event as { token?: unknown; parent?: Partial<ParentRef> };
      if (status !== InstanceStatus.Running || (typeof token === 'number' && record.parent?.token !== token)) continue;
      // From another parent whose child's id this instance holds (stops made before `parent` was
      // added name none, and are matched by token alone).
      if (parent !== undefined && !isParent(record.parent, parent)) continue;
      lastSeq = Math.max(lastSeq, e.seq);
      revision += 1;
      applied += 1;
      status = InstanceStatus.Stopped;
      entries.push({
        kind: HistoryKind.Event,
        revision,
        seq: e.seq,
        event: e.event,
        from,
        to: from,
        status,
        timeMs: e.timeMs,
        reason: 'stopped by its parent',
      });
      continue;
    }
    if (isFail(e.event)) {
      // An inline action threw after the write that ran it: the instance fails where it is.
      if (status !== InstanceStatus.Running) continue;
      lastSeq = Math.max(lastSeq, e.seq);
      revision += 1;
      applied += 1;
      status = InstanceStatus.Failed;
      error = e.event.reason;
      entries.push({ kind: HistoryKind.Event, revision, seq: e.seq, event: e.event, from, to: from, status, timeMs: e.timeMs, reason: error });
      continue;
    }
    if (isControl(e.event, EngineEvent.Terminate) || (isControl(e.event, EngineEvent.Cancel) && !handlesCancel(current))) {
      // Terminate, or a cancel the current state does not handle: the instance stops where it is.
      // A finished one records it and stays as it is, as it does any event.
      if (status !== InstanceStatus.Running) {
        transition(e, e.event, e.event);
        continue;
      }
      const how = isControl(e.event, EngineEvent.Terminate) ? 'terminated' : 'cancelled';
      const why = typeof e.event.reason === 'string' && e.event.reason !== '' ? `${how}: ${e.event.reason}` : how;
      lastSeq = Math.max(lastSeq, e.seq);
      revision += 1;
      applied += 1;
      status = InstanceStatus.Stopped;
      error = why;
      entries.push({ kind: HistoryKind.Event, revision, seq: e.seq, event: e.event, from, to: from, status, timeMs: e.timeMs, reason: why });
      continue;
    }
    transition(e, e.event, e.event);
  }
  if (events.some(hasIdentity)) {
    const bySeq = new Map(events.map((x) => [x.seq, x.identity]));
    for (const entry of entries) {
      const identity = bySeq.get(entry.seq);
      if (identity) entry.identity = identity;
    }
  }
  if (applied === 0) return { record, snapshot, entries, effects: [], timers: [], tasks: [], cancelledTasks: [], changed: false };
  const running = status === InstanceStatus.Running;
  if (!running) plan.finish(effectKey(record.workflow, record, revision));
  const next: InstanceRecord = {
    ...record,
    status,
    // No transition (events recorded by a finished instance, a stop, a terminate): the snapshot as stored.
    snapshot: current === snapshot ? record.snapshot : runner.persist(current),
    revision,
    lastSeq,
    updatedAtMs: nowMs,
    lastHistory: entries,
    ...plan.fields(current.context),
  };
  if (status === InstanceStatus.Done) next.output = current.output;
  if (error !== undefined) next.error = error;
  return {
    record: next,
    snapshot: current,
    entries,
    effects: plan.effects,
    timers: plan.pendingTimers(),
    tasks: plan.pendingTasks(),
    cancelledTasks: plan.cancelledTasks,
    changed: true,
  };
}

/**
 * Why a snapshot's data would not survive the record's JSON (see json-safe.ts): its context
 * (`previous`: the context before, already checked), and the output of a finished machine.
 */
function dataProblem(snapshot: AnyMachineSnapshot, previous?: unknown): string | undefined {
  return jsonProblem(snapshot.context, 'context', previous) ?? (snapshot.status === 'done' ? jsonProblem(snapshot.output, 'output') : undefined);
}

/** True when `claimed` names `parent` (born compared when both have one). */
function isParent(parent: ParentRef | undefined, claimed: Partial<ParentRef>): boolean {
  return (
    parent !== undefined &&
    parent.workflow === claimed.workflow &&
    parent.id === claimed.id &&
    parent.invokeId === claimed.invokeId &&
    (parent.born === undefined || claimed.born === undefined || parent.born === claimed.born)
  );
}

/**
 * Whether the current state handles a cancel itself: a transition that names `jetstate.cancel`
 * (or `jetstate.*`). A catch-all `'*'` does not count: it is there for events the machine does
 * not know, and would otherwise make an instance that cannot be cancelled.
 */
function handlesCancel(snapshot: AnyMachineSnapshot): boolean {
  const transitions = snapshot.machine.getTransitionData(snapshot as never, { type: EngineEvent.Cancel }) ?? [];
  return transitions.some((t) => t.eventType !== '*' && (t.target !== undefined || t.actions.length > 0));
}
