/**
 * The pure step: given an instance record and its next events, compute the next record, the
 * history entries and the effects, with XState's pure transition functions. Nothing here does
 * I/O; the engine persists the result and only then runs the effects.
 */
import { createActor, type AnyActorScope, type AnyMachineSnapshot, type AnyStateMachine } from 'xstate';
import type { WorkflowDefinition } from '../define/definition.js';
import {
  HistoryKind,
  InstanceStatus,
  RECORD_SCHEMA_VERSION,
  digest,
  type HistoryEntry,
  type InstanceRecord,
  type TaskRecord,
  type TimerRecord,
} from '../protocol/record.js';
import { activitiesOf, type ActivityDefinition } from '../define/activity.js';
import { SEND_ACTION, sendResolverOf } from '../define/messages.js';
import { CHILD_EVENT, STOP_EVENT, childIdOf, childWorkflowsOf, isChildResult, isStop } from '../define/child.js';
import type { WorkflowDefinition as ChildDefinition } from '../define/definition.js';
import type { IdentitySummary } from '../gate/admission.js';

/**
 * An action XState asked to execute, for the effect executor, which runs it after the write:
 * - `action`: a custom action registered by name in `setup({ actions })`; kept in the record's
 *   outbox, so it runs again if a crash cut its run short (at least once);
 * - `send`: an event for another instance (`sendToInstance`), in the outbox like `action`;
 * - `child`: start (`jetstate.startChild`) or stop (`jetstate.stopChild`) a child workflow
 *   instance, in the outbox like `action`;
 * - `inline`: an inline action function; runs once after the write, not again after a crash;
 * - `unsupported`: an XState action the engine does not run yet (it is reported).
 */
export interface Effect {
  kind: 'action' | 'send' | 'child' | 'inline' | 'unsupported';
  /** Action type, e.g. a custom action's name or `xstate.sendTo`. */
  type: string;
  params: unknown;
  /** Stable idempotency key: `<workflow>.<id>.<revision>.<index>`. */
  key: string;
  /** The event being processed when XState asked for it. */
  event: unknown;
  /** XState's own executable action (this process only). */
  exec?: Executable;
}

/** An outbox entry: a custom action to run (again) after the write that produced it. */
export type OutboxEntry = InstanceRecord['outbox'][number];

interface Executable {
  type: string;
  params?: unknown;
  info?: { context: unknown; event: unknown; self?: unknown; system?: unknown };
  exec?: ((info: unknown, params: unknown) => void) | undefined;
}

/**
 * Runs one machine's transitions with a single reusable, inert actor scope. XState's exported
 * `transition()` builds a throw-away actor per call, which is most of its cost.
 */
export class MachineRunner {
  readonly machine: AnyStateMachine;
  /** Activities registered in `setup({ actors })`: invoking one starts a durable task. */
  readonly activities: Map<string, ActivityDefinition>;
  /** Child workflows registered with `childWorkflow()` in `setup({ actors })`. */
  readonly children: Map<string, ChildDefinition>;
  /** Custom actions registered in `setup({ actions })`, by name. */
  readonly actions: Map<string, (args: unknown, params: unknown) => unknown>;
  private readonly scope: AnyActorScope;
  private collected: Executable[] = [];

  constructor(machine: AnyStateMachine) {
    this.machine = machine;
    this.activities = activitiesOf(machine);
    this.children = childWorkflowsOf(machine);
    this.actions = new Map(
      Object.entries((machine.implementations?.actions ?? {}) as Record<string, unknown>).filter(
        (e): e is [string, (args: unknown, params: unknown) => unknown] => typeof e[1] === 'function' && !String((e[1] as { type?: unknown }).type ?? '').startsWith('xstate.'),
      ),
    );
    const self = createActor(machine);
    this.scope = {
      self,
      defer: () => {},
      id: '',
      logger: () => {},
      sessionId: '',
      stopChild: () => {},
      system: self.system,
      emit: () => {},
      actionExecutor: (action: Executable) => {
        this.collected.push(action);
      },
    } as unknown as AnyActorScope;
  }

  /** Stands for a child workflow's parent instance, so that XState resolves `sendParent`. */
  readonly parentRef = Object.freeze({ id: 'jetstate.parent', sessionId: 'jetstate.parent', send: () => {} });

  private setParent(hasParent: boolean): void {
    (this.scope.self as unknown as { _parent: unknown })._parent = hasParent ? this.parentRef : undefined;
  }

  initial(input: unknown, hasParent = false): { snapshot: AnyMachineSnapshot; actions: Executable[] } {
    this.collected = [];
    this.setParent(hasParent);
    const snapshot = this.machine.getInitialSnapshot(this.scope, input) as AnyMachineSnapshot;
    return { snapshot, actions: this.collected };
  }

  transition(snapshot: AnyMachineSnapshot, event: { type: string }, hasParent = false): { snapshot: AnyMachineSnapshot; actions: Executable[] } {
    this.collected = [];
    this.setParent(hasParent);
    (this.scope.self as unknown as { _snapshot: unknown })._snapshot = snapshot;
    const next = this.machine.transition(snapshot, event, this.scope) as AnyMachineSnapshot;
    return { snapshot: next, actions: this.collected };
  }

  restore(persisted: Record<string, unknown>): AnyMachineSnapshot {
    return this.machine.restoreSnapshot(persisted as never, this.scope) as AnyMachineSnapshot;
  }

  persist(snapshot: AnyMachineSnapshot): Record<string, unknown> {
    return this.machine.getPersistedSnapshot(snapshot) as Record<string, unknown>;
  }
}

export function statusOf(snapshot: AnyMachineSnapshot): InstanceStatus {
  if (snapshot.status === 'done') return InstanceStatus.Done;
  if (snapshot.status === 'error') return InstanceStatus.Failed;
  return InstanceStatus.Running;
}

function errorText(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  // A task's or child's failure arrives as plain data { name, message, ... }.
  const e = error as { name?: unknown; message?: unknown } | null;
  if (e && typeof e === 'object' && typeof e.message === 'string') return typeof e.name === 'string' ? `${e.name}: ${e.message}` : e.message;
  if (typeof error === 'object' && error !== null) {
    try {
      return JSON.stringify(error);
    } catch {
      // fall through
    }
  }
  return String(error);
}

/**
 * Sent by `start()` when the initial state has custom actions: the engine that owns the instance
 * runs the start's outbox. It changes no state.
 */
export const KICK_EVENT = 'jetstate.kick';
export function isKick(event: unknown): boolean {
  return typeof event === 'object' && event !== null && (event as { type?: unknown }).type === KICK_EVENT;
}

export const START_CHILD = 'jetstate.startChild';
export const STOP_CHILD = 'jetstate.stopChild';
export { CHILD_EVENT, STOP_EVENT };

/** The internal event a timer sends into its instance's event stream when it comes due. */
export const TIMER_EVENT = 'jetstate.timer';
export interface TimerFireEvent {
  type: typeof TIMER_EVENT;
  timerId: string;
  token: number;
}

export function isTimerFire(event: unknown): event is TimerFireEvent {
  const e = event as Partial<TimerFireEvent> | null;
  return typeof e === 'object' && e !== null && e.type === TIMER_EVENT && typeof e.timerId === 'string' && typeof e.token === 'number';
}

/** A timer scheduled by a step, to be published to the timers stream. */
export interface ScheduledTimer {
  timerId: string;
  token: number;
  dueAtMs: number;
}

/** The internal event a task's outcome sends into its instance's event stream. */
export const TASK_EVENT = 'jetstate.task';
export interface TaskResultEvent {
  type: typeof TASK_EVENT;
  invokeId: string;
  token: number;
  ok: boolean;
  output?: unknown;
  error?: { name: string; message: string };
}

export function isTaskResult(event: unknown): event is TaskResultEvent {
  const e = event as Partial<TaskResultEvent> | null;
  return typeof e === 'object' && e !== null && e.type === TASK_EVENT && typeof e.invokeId === 'string' && typeof e.token === 'number' && typeof e.ok === 'boolean';
}

/** The XState event for the outcome of an invoked task or child workflow. */
function actorOutcome(e: { invokeId: string; ok: boolean; output?: unknown; error?: unknown }): { type: string } {
  return e.ok ? ({ type: `xstate.done.actor.${e.invokeId}`, output: e.output } as { type: string }) : ({ type: `xstate.error.actor.${e.invokeId}`, error: e.error } as { type: string });
}

/** A task started or cancelled by a step. */
export interface TaskChange {
  invokeId: string;
  token: number;
  src: string;
  input: unknown;
}

/** What a step's XState actions amount to, besides the snapshot. */
class Plan {
  readonly timers: Record<string, TimerRecord>;
  readonly tasks: Record<string, TaskRecord>;
  readonly children: InstanceRecord['children'];
  readonly scheduledTimers: ScheduledTimer[] = [];
  readonly startedTasks: TaskChange[] = [];
  readonly cancelledTasks: TaskChange[] = [];
  readonly effects: Effect[] = [];

  constructor(
    record?: InstanceRecord,
    private readonly parent: InstanceRecord['parent'] = record?.parent,
  ) {
    this.timers = { ...record?.timers };
    this.tasks = { ...record?.tasks };
    this.children = { ...record?.children };
  }

  /**
   * Sorts XState's actions: delayed raises become durable timers (due at the event's time plus
   * the delay, so a recomputation gives the same due time), invoked activities become tasks,
   * cancels and stops remove them, and everything else is an effect for the executor.
   */
  add(actions: Executable[], runner: MachineRunner, workflow: string, id: string, revision: number, atMs: number, event: unknown): void {
    actions.forEach((a, i) => {
      const params = (a.params ?? {}) as { delay?: unknown; event?: { type: string }; id?: unknown; sendId?: unknown; src?: unknown; input?: unknown; actorRef?: { id?: unknown } };
      if (a.type === 'xstate.raise' && typeof params.delay === 'number' && params.event) {
        const timerId = typeof params.id === 'string' ? params.id : `jetstate.delayed.${revision}.${i}`;
        const dueAtMs = atMs + params.delay;
        this.timers[timerId] = { dueAtMs, token: revision, event: params.event };
        this.scheduledTimers.push({ timerId, token: revision, dueAtMs });
      } else if (a.type === 'xstate.cancel' && typeof params.sendId === 'string') {
        delete this.timers[params.sendId];
      } else if (a.type === 'xstate.spawnChild' && typeof params.src === 'string' && typeof params.id === 'string' && runner.activities.has(params.src)) {
        const task: TaskRecord = { src: params.src, token: revision, input: params.input ?? null, startedAtMs: atMs };
        this.tasks[params.id] = task;
        this.startedTasks.push({ invokeId: params.id, token: revision, src: task.src, input: task.input });
      } else if (a.type === 'xstate.spawnChild' && typeof params.src === 'string' && typeof params.id === 'string' && runner.children.has(params.src)) {
        const child = { workflow: runner.children.get(params.src)!.name, id: childIdOf(id, params.id), token: revision };
        this.children[params.id] = child;
        const start = { ...child, input: params.input ?? {}, parent: { workflow, id, invokeId: params.id, token: revision } };
        this.effects.push({ kind: 'child', type: START_CHILD, params: start, key: `${workflow}.${id}.${revision}.${i}`, event });
      } else if (a.type === 'xstate.stopChild' && typeof (params.actorRef ?? params).id === 'string' && this.tasks[(params.actorRef ?? params).id as string]) {
        this.cancel((params.actorRef ?? params).id as string);
      } else if (a.type === 'xstate.stopChild' && typeof (params.actorRef ?? params).id === 'string' && this.children[(params.actorRef ?? params).id as string]) {
        this.stopChild((params.actorRef ?? params).id as string, `${workflow}.${id}.${revision}.${i}`, event);
      } else if (a.type === 'xstate.stopChild') {
        // A task or child that already finished: nothing runs in memory to stop.
      } else if (a.type === 'xstate.sendTo' && params.delay === undefined && this.sendTarget((params as { to?: unknown }).to)) {
        // XState's sendParent, or sendTo an invoked child workflow: through that instance's inbox.
        const target = this.sendTarget((params as { to?: unknown }).to)!;
        this.effects.push({ kind: 'send', type: SEND_ACTION, params: { ...target, event: (params as { event: unknown }).event }, key: `${workflow}.${id}.${revision}.${i}`, event });
      } else if (a.type === SEND_ACTION && sendResolverOf(a.exec)) {
        // Resolved now, in the pure step, so a re-run after a crash sends the same event.
        const send = sendResolverOf(a.exec)!(a.info);
        this.effects.push({ kind: 'send', type: SEND_ACTION, params: send, key: `${workflow}.${id}.${revision}.${i}`, event });
      } else {
        const kind = runner.actions.has(a.type) ? 'action' : a.type.startsWith('xstate.') ? 'unsupported' : 'inline';
        this.effects.push({ kind, type: a.type, params: a.params ?? null, key: `${workflow}.${id}.${revision}.${i}`, event, exec: a });
      }
    });
  }

  private sendTarget(to: unknown): { workflow: string; id: string } | undefined {
    if (to === undefined || to === null) return undefined;
    if ((to as { id?: unknown }).id === 'jetstate.parent') return this.parent ? { workflow: this.parent.workflow, id: this.parent.id } : undefined;
    const childId = typeof to === 'string' ? to : (to as { id?: unknown }).id;
    const child = typeof childId === 'string' ? this.children[childId] : undefined;
    return child ? { workflow: child.workflow, id: child.id } : undefined;
  }

  cancel(invokeId: string): void {
    const task = this.tasks[invokeId]!;
    delete this.tasks[invokeId];
    this.cancelledTasks.push({ invokeId, token: task.token, src: task.src, input: task.input });
  }

  stopChild(invokeId: string, key: string, event: unknown): void {
    const child = this.children[invokeId]!;
    delete this.children[invokeId];
    this.effects.push({ kind: 'child', type: STOP_CHILD, params: { workflow: child.workflow, id: child.id }, key, event });
  }

  /** A finished instance has no pending timers, tasks or children. */
  finish(key: string): void {
    for (const k of Object.keys(this.timers)) delete this.timers[k];
    for (const k of Object.keys(this.tasks)) this.cancel(k);
    Object.keys(this.children).forEach((k, i) => this.stopChild(k, `${key}.stop.${i}`, null));
  }

  /** The record fields this plan decides. */
  fields(): Pick<InstanceRecord, 'timers' | 'tasks' | 'children' | 'outbox'> {
    return { timers: this.timers, tasks: this.tasks, children: this.children, outbox: this.outbox() };
  }

  /** Custom actions to keep in the record until they have run. */
  outbox(): OutboxEntry[] {
    return this.effects.filter((e) => e.kind === 'action' || e.kind === 'send' || e.kind === 'child').map((e) => ({ key: e.key, type: e.type, params: e.params, event: e.event }));
  }

  /** Only what is still pending at the end of the step is started. */
  pendingTimers(): ScheduledTimer[] {
    return this.scheduledTimers.filter((t) => this.timers[t.timerId]?.token === t.token);
  }

  pendingTasks(): TaskChange[] {
    return this.startedTasks.filter((t) => this.tasks[t.invokeId]?.token === t.token);
  }
}

export interface StartResult {
  record: InstanceRecord;
  snapshot: AnyMachineSnapshot;
  entry: HistoryEntry;
  effects: Effect[];
  timers: ScheduledTimer[];
  tasks: TaskChange[];
}

/** The initial record of a new instance. `input` is already validated. */
export function startInstance(
  def: WorkflowDefinition,
  runner: MachineRunner,
  id: string,
  input: unknown,
  nowMs: number,
  parent?: InstanceRecord['parent'],
): StartResult {
  let snapshot: AnyMachineSnapshot;
  const plan = new Plan(undefined, parent);
  let error: string | undefined;
  try {
    const r = runner.initial(input, parent !== undefined);
    snapshot = r.snapshot;
    plan.add(r.actions, runner, def.name, id, 1, nowMs, { type: 'xstate.init', input });
  } catch (e) {
    // A machine that throws on entry is recorded as failed, not lost.
    error = errorText(e);
    snapshot = { status: 'error', value: {}, context: undefined, error } as unknown as AnyMachineSnapshot;
  }
  const persisted = error === undefined ? runner.persist(snapshot) : { status: 'error', value: {}, error };
  const status = error === undefined ? statusOf(snapshot) : InstanceStatus.Failed;
  if (status !== InstanceStatus.Running) plan.finish(`${def.name}.${id}.1`);
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
    createdAtMs: nowMs,
    updatedAtMs: nowMs,
    lastHistory: [entry],
    ...plan.fields(),
  };
  if (status === InstanceStatus.Done) record.output = snapshot.output;
  if (error !== undefined) record.error = error;
  if (parent) record.parent = parent;
  return { record, snapshot, entry, effects: plan.effects, timers: plan.pendingTimers(), tasks: plan.pendingTasks() };
}

/**
 * One event for the step: its stream sequence, the time the stream accepted it, and either the
 * parsed event or why it is rejected.
 */
export type StepEvent = ({ seq: number; timeMs: number; event: { type: string }; rejected?: undefined } | { seq: number; timeMs: number; event: unknown; rejected: string }) & {
  /** The verified sender: recorded in the history and given to the machine as `event.$identity`. */
  identity?: IdentitySummary | undefined;
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
): StepResult {
  const entries: HistoryEntry[] = [];
  const plan = new Plan(record);
  let revision = record.revision;
  let lastSeq = record.lastSeq;
  let status = record.status;
  let current = snapshot;
  let error = record.error;
  let applied = 0;
  for (const e of events) {
    if (e.seq <= lastSeq) continue;
    const from = current.value;
    if (e.rejected !== undefined) {
      entries.push({ kind: HistoryKind.Rejected, revision, seq: e.seq, event: e.event, from, to: from, status, timeMs: e.timeMs, reason: e.rejected });
      continue;
    }
    let event: { type: string } = e.event;
    if (isTimerFire(e.event)) {
      const timer = plan.timers[e.event.timerId];
      // A timer whose state was exited (or re-entered since) is no longer pending: it changes nothing.
      if (!timer || timer.token !== e.event.token) continue;
      delete plan.timers[e.event.timerId];
      event = timer.event;
    } else if (isChildResult(e.event)) {
      const child = plan.children[e.event.invokeId];
      if (!child || child.token !== e.event.token) continue;
      delete plan.children[e.event.invokeId];
      event = actorOutcome(e.event);
    } else if (isStop(e.event)) {
      // The parent's invoking state was exited: this child stops where it is.
      if (status !== InstanceStatus.Running) continue;
      lastSeq = e.seq;
      revision += 1;
      applied += 1;
      status = InstanceStatus.Stopped;
      entries.push({ kind: HistoryKind.Event, revision, seq: e.seq, event: e.event, from, to: from, status, timeMs: e.timeMs, reason: 'stopped by its parent' });
      continue;
    } else if (isTaskResult(e.event)) {
      const task = plan.tasks[e.event.invokeId];
      // The outcome of a task whose state was exited, or of an attempt already applied, changes nothing.
      if (!task || task.token !== e.event.token) continue;
      delete plan.tasks[e.event.invokeId];
      event = actorOutcome(e.event);
    }
    lastSeq = e.seq;
    revision += 1;
    applied += 1;
    if (status !== InstanceStatus.Running) {
      // A finished instance takes no more transitions; the event is recorded, not applied.
      entries.push({ kind: HistoryKind.Event, revision, seq: e.seq, event: e.event, from, to: from, status, timeMs: e.timeMs, reason: `instance is ${status}` });
      continue;
    }
    try {
      // The verified sender is part of the event the machine sees (and of the history, for replay).
      const r = runner.transition(current, e.identity ? ({ ...event, $identity: e.identity } as typeof event) : event, record.parent !== undefined);
      current = r.snapshot;
      status = statusOf(current);
      if (status === InstanceStatus.Failed) error = errorText(current.error);
      plan.add(r.actions, runner, record.workflow, record.id, revision, e.timeMs, event);
      entries.push({ kind: HistoryKind.Event, revision, seq: e.seq, event: e.event, from, to: current.value, status, timeMs: e.timeMs });
    } catch (err) {
      // A guard or action that throws fails the instance deterministically; replay does the same.
      status = InstanceStatus.Failed;
      error = errorText(err);
      entries.push({ kind: HistoryKind.Event, revision, seq: e.seq, event: e.event, from, to: from, status, timeMs: e.timeMs, reason: error });
    }
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
  if (!running) plan.finish(`${record.workflow}.${record.id}.${revision}`);
  const next: InstanceRecord = {
    ...record,
    status,
    snapshot: runner.persist(current),
    revision,
    lastSeq,
    updatedAtMs: nowMs,
    lastHistory: entries,
    ...plan.fields(),
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
