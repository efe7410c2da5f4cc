/**
 * What a step's XState actions amount to: delayed raises become durable timers, invoked
 * activities become tasks, invoked child workflows become child starts, cancels and stops remove
 * them, and everything else is an effect that runs after the write (the outbox).
 */
import { bornOf, effectKey, type InstanceRecord, type TaskRecord, type TimerRecord } from '../protocol/record.js';
import { EngineEvent, OutboxKind } from '../protocol/events.js';
import { SEND_ACTION, sendResolverOf } from '../define/messages.js';
import { childIdOf } from '../define/child.js';
import type { AnyMachineSnapshot } from 'xstate';
import type { Executable, MachineRunner } from './runner.js';
import { childSecretPaths, mergeSecretPaths } from '../security/inherited-secrets.js';

/**
 * An action XState asked to execute, for the effect executor, which runs it after the write:
 * - `action`: a custom action registered by name in `setup({ actions })`; kept in the record's
 *   outbox, so it runs again if a crash cut its run short (at least once);
 * - `send`: an event for another instance (`sendToInstance`, `sendParent`, `sendTo` a child
 *   workflow) or for this one (`sendTo` self, wrapped as `jetstate.self`), in the outbox like `action`;
 * - `child`: start (`jetstate.startChild`) or stop (`jetstate.stopChild`) a child workflow
 *   instance, in the outbox like `action`;
 * - `inline`: an inline action function; runs once after the write, not again after a crash (at
 *   most once); one that throws fails the instance;
 * - `log`: XState's `log`, through the engine's logger (at most once);
 * - `emit`: XState's `emit`, published on the instance's emit subject (core NATS, best effort);
 * - `unsupported`: an XState action the engine does not know (it is reported).
 */
export interface Effect {
  kind: 'action' | 'send' | 'child' | 'inline' | 'log' | 'emit' | 'unsupported';
  /** Action type, e.g. a custom action's name or `xstate.sendTo`. */
  type: string;
  params: unknown;
  /** Stable idempotency key: `<workflow>.<id>@<born>.<revision>.<index>` (see instanceTag). */
  key: string;
  /** The event being processed when XState asked for it. */
  event: unknown;
  /** XState's own executable action (this process only). */
  exec?: Executable;
}

/** An outbox entry: a custom action to run (again) after the write that produced it. */
export type OutboxEntry = InstanceRecord['outbox'][number];

/** A timer scheduled by a step, to be published to the timers stream. */
export interface ScheduledTimer {
  timerId: string;
  token: number;
  dueAtMs: number;
}

/** A task started or cancelled by a step. */
export interface TaskChange {
  invokeId: string;
  token: number;
  src: string;
  input: unknown;
}

/** What a step's XState actions amount to, besides the snapshot. */
export class Plan {
  readonly timers: Record<string, TimerRecord>;
  readonly tasks: Record<string, TaskRecord>;
  readonly children: InstanceRecord['children'];
  readonly scheduledTimers: ScheduledTimer[] = [];
  readonly startedTasks: TaskChange[] = [];
  readonly cancelledTasks: TaskChange[] = [];
  readonly effects: Effect[] = [];

  private readonly input: unknown;
  /** Invoke ids under which a child workflow was started (record `invoked`). */
  private readonly invoked: string[];
  /** This instance, as its children know their parent (a stop names it: see `stopChild`). */
  private self: { workflow: string; id: string; born?: number | undefined } | undefined;

  /**
   * `inherited`: the instance's inherited secret paths (a new instance's come with its start).
   * `declared`: its workflow's secret paths as the engine seals them (every version it knows of,
   * and those the namespace publishes); the runner's own when not given.
   */
  constructor(
    record?: InstanceRecord,
    private readonly parent: InstanceRecord['parent'] = record?.parent,
    private readonly inherited: readonly string[] | undefined = record?.secrets,
    private readonly declared?: readonly string[],
  ) {
    this.timers = { ...record?.timers };
    this.tasks = { ...record?.tasks };
    this.children = { ...record?.children };
    this.input = record?.input;
    this.invoked = [...(record?.invoked ?? [])];
    if (record) this.self = { workflow: record.workflow, id: record.id, born: record.born };
  }

  /**
   * Why the actions of a transition cannot be made durable, before they are added: a spawned actor
   * that is neither an activity nor a child workflow (a spawn chosen at run time, which
   * `defineWorkflow` could not see), or an actor in the new snapshot that no action spawned (`spawn`
   * inside `assign`). Undefined when they can.
   */
  problemOf(actions: readonly Executable[], snapshot: AnyMachineSnapshot, runner: MachineRunner, previous?: AnyMachineSnapshot): string | undefined {
    const spawned = new Set<string>();
    for (const a of actions) {
      if (a.type !== 'xstate.spawnChild') continue;
      const p = (a.params ?? {}) as { src?: unknown; id?: unknown; actorRef?: { id?: unknown } };
      const spawnId = spawnIdOf(p);
      if (spawnId !== undefined) spawned.add(spawnId);
      if (typeof p.src === 'string' && (runner.activities.has(p.src) || runner.children.has(p.src))) continue;
      const what = typeof p.src === 'string' ? `'${p.src}'` : 'an inline actor implementation';
      return `spawnChild of ${what} (id '${String(p.id)}'), which cannot be made durable: only actors registered with activity() or childWorkflow() in setup({ actors }) can be spawned`;
    }
    const before = (previous?.children ?? {}) as Record<string, unknown>;
    for (const [id, ref] of Object.entries((snapshot.children ?? {}) as Record<string, unknown>)) {
      // XState keeps a finished spawned actor in the snapshot: one that was there before is no news.
      if (spawned.has(id) || before[id] === ref) continue;
      return (
        `an actor '${id}' was spawned inside assign (spawn), which cannot be made durable: the engine does not see it to run it; ` +
        `use the spawnChild('<actor>', { id: '${id}' }) action with an actor registered with activity() or childWorkflow()`
      );
    }
    return undefined;
  }

  /** Schedules a durable timer under XState's send id. */
  private schedule(timerId: string, timer: TimerRecord): void {
    const existing = this.timers[timerId];
    if (existing) {
      // XState keeps the older one running too (a cancel reaches only the newest): it moves to a
      // derived key. Its fire message names the send id and its token, which find it there (see
      // findTimer); one scheduled in this very step has no message yet and gets the key as its name.
      const sameStep = existing.token === timer.token;
      const key = sameStep ? `${timerId}@${existing.token}.${existing.seq ?? 0}` : `${timerId}@${existing.token}`;
      this.timers[key] = { ...existing, sendId: existing.sendId ?? timerId };
      if (sameStep) for (const t of this.scheduledTimers) if (t.timerId === timerId && t.token === existing.token) t.timerId = key;
    }
    this.timers[timerId] = timer;
    this.scheduledTimers.push({ timerId, token: timer.token, dueAtMs: timer.dueAtMs });
  }

  /**
   * Takes a firing timer out of the pending ones. XState forgets the send id when any timer under
   * it fires: an older one (kept under a derived key) firing leaves the newest running but out of
   * reach of a cancel. So does this: the newest moves to a derived key too.
   */
  takeTimer(key: string): TimerRecord {
    const timer = this.timers[key]!;
    delete this.timers[key];
    const newest = timer.sendId !== undefined ? this.timers[timer.sendId] : undefined;
    if (newest && timer.sendId !== undefined) {
      delete this.timers[timer.sendId];
      this.timers[`${timer.sendId}@${newest.token}`] = { ...newest, sendId: timer.sendId };
    }
    return timer;
  }

  /** The key of the pending timer a fire message names (its id and token), if it is still pending. */
  findTimer(timerId: string, token: number): string | undefined {
    if (this.timers[timerId]?.token === token) return timerId;
    const derived = `${timerId}@${token}`;
    return this.timers[derived]?.token === token ? derived : undefined;
  }

  /** The timer id a timer's fire message names (see `schedule`). */
  fireName(key: string): string {
    const t = this.timers[key];
    return t?.sendId !== undefined && key === `${t.sendId}@${t.token}` ? t.sendId : key;
  }

  /**
   * The pending timer that XState fires before the one under `key`: due earlier, or as early and
   * scheduled first; the earliest such.
   */
  timerBefore(key: string): string | undefined {
    const timer = this.timers[key];
    if (!timer) return undefined;
    let best: string | undefined;
    for (const [k, t] of Object.entries(this.timers)) {
      if (k !== key && firesBefore(t, timer) && (best === undefined || firesBefore(t, this.timers[best]!))) best = k;
    }
    return best;
  }

  /**
   * A timer of a delayed `sendTo` a child workflow or `sendParent` fired: the event goes to that
   * instance's inbox, through the outbox.
   */
  deliver(timer: TimerRecord, key: string, event: unknown): void {
    this.effects.push({ kind: 'send', type: SEND_ACTION, params: { ...timer.to, event: timer.event }, key, event });
  }

  /**
   * Sorts XState's actions: delayed raises become durable timers (due at the event's time plus
   * the delay, so a recomputation gives the same due time), invoked activities become tasks,
   * cancels and stops remove them, and everything else is an effect for the executor.
   */
  add(actions: Executable[], runner: MachineRunner, workflow: string, id: string, revision: number, atMs: number, event: unknown, born?: number): void {
    this.self ??= { workflow, id, born };
    actions.forEach((a, i) => {
      const params = (a.params ?? {}) as {
        delay?: unknown;
        event?: { type: string };
        id?: unknown;
        sendId?: unknown;
        src?: unknown;
        input?: unknown;
        actorRef?: { id?: unknown };
        to?: unknown;
      };
      const key = effectKey(workflow, { id, born }, revision, i);
      const spawnId = a.type === 'xstate.spawnChild' ? spawnIdOf(params) : undefined;
      if (a.type === 'xstate.raise') {
        // Without a delay, XState raised it within the step already.
        if (typeof params.delay === 'number' && params.event) this.delayed(params, params.event, revision, i, atMs);
      } else if (a.type === 'xstate.cancel' && typeof params.sendId === 'string') {
        delete this.timers[params.sendId];
      } else if (a.type === 'xstate.spawnChild' && typeof params.src === 'string' && spawnId !== undefined && runner.activities.has(params.src)) {
        const task: TaskRecord = { src: params.src, token: revision, input: params.input ?? null, startedAtMs: atMs };
        this.tasks[spawnId] = task;
        this.startedTasks.push({ invokeId: spawnId, token: revision, src: task.src, input: task.input });
      } else if (a.type === 'xstate.spawnChild' && typeof params.src === 'string' && spawnId !== undefined && runner.children.has(params.src)) {
        const childDef = runner.children.get(params.src)!;
        // The first child under an invoke id keeps the plain id; a later one cannot take it (the first's record keeps it).
        const again = this.invoked.includes(spawnId);
        if (!again) this.invoked.push(spawnId);
        const child: InstanceRecord['children'][string] = {
          workflow: childDef.name,
          id: childIdOf(id, spawnId, again ? revision : undefined),
          token: revision,
        };
        // Values of this instance's secret paths stay secret in the child (and in this record's copy of its start).
        const secrets = this.childSecrets(runner, a, event, params.input, params.actorRef);
        if (secrets.length > 0) child.secrets = secrets;
        this.children[spawnId] = child;
        const start = {
          ...child,
          version: childDef.version,
          input: params.input ?? {},
          parent: { workflow, id, invokeId: spawnId, token: revision, ...bornOf({ born }) },
        };
        this.effects.push({ kind: 'child', type: OutboxKind.StartChild, params: start, key, event });
      } else if (a.type === 'xstate.stopChild' && typeof (params.actorRef ?? params).id === 'string' && this.tasks[(params.actorRef ?? params).id as string]) {
        this.cancel((params.actorRef ?? params).id as string);
      } else if (
        a.type === 'xstate.stopChild' &&
        typeof (params.actorRef ?? params).id === 'string' &&
        this.children[(params.actorRef ?? params).id as string]
      ) {
        this.stopChild((params.actorRef ?? params).id as string, key, event);
      } else if (a.type === 'xstate.stopChild') {
        // A task or child that already finished: nothing runs in memory to stop.
      } else if (a.type === 'xstate.sendTo') {
        this.sendTo(params, runner, workflow, id, revision, i, atMs, key, event);
      } else if (a.type === SEND_ACTION && sendResolverOf(a.exec)) {
        // Resolved now, in the pure step, so a re-run after a crash sends the same event.
        const send = sendResolverOf(a.exec)!(a.info);
        this.effects.push({ kind: 'send', type: SEND_ACTION, params: send, key, event });
      } else if (a.type === 'xstate.log') {
        this.effects.push({ kind: 'log', type: a.type, params: a.params, key, event });
      } else if (a.type === 'xstate.emit') {
        this.effects.push({ kind: 'emit', type: a.type, params: a.params, key, event });
      } else {
        // XState gives a named action without params `undefined`; so does the engine.
        const kind = runner.actions.has(a.type) ? 'action' : a.type.startsWith('xstate.') ? 'unsupported' : 'inline';
        this.effects.push({ kind, type: a.type, params: a.params, key, event, exec: a });
      }
    });
  }

  /**
   * A delayed raise (every `after` delay is one), or a delayed `sendTo` self, which XState schedules
   * alike: a durable timer due at the event's time plus the delay, so a recomputation gives the same
   * due time. `to`: where the event goes instead (a delayed `sendTo` a child workflow or the parent).
   */
  private delayed(
    params: { delay?: unknown; id?: unknown },
    event: { type: string },
    revision: number,
    i: number,
    atMs: number,
    to?: { workflow: string; id: string; toChild?: string },
  ): void {
    const timerId = typeof params.id === 'string' ? params.id : `jetstate.delayed.${revision}.${i}`;
    // A delay that is not a finite number of at least 0 (NaN from a missing context field) fires at
    // once, as XState's setTimeout does.
    const delay = params.delay as number;
    const dueAtMs = atMs + (Number.isFinite(delay) && delay > 0 ? delay : 0);
    // The event as the stored timer gives it back (a Date as its ISO string): the same whether the
    // record that fires it was cached or read again, and as `verify` replays it.
    const stored = JSON.parse(JSON.stringify(event)) as { type: string };
    this.schedule(timerId, { dueAtMs, token: revision, seq: i, event: stored, ...(to ? { to } : {}) });
  }

  /**
   * XState's `sendTo` (and `sendParent`, `forwardTo`): to the instance itself, through its own
   * inbox (or, delayed, as a timer); to the parent or a child workflow, through that instance's
   * inbox (delayed: a timer that sends when it fires). Any other target is an actor that no longer
   * runs (a finished child or task), which XState drops the event for.
   */
  private sendTo(
    params: { delay?: unknown; id?: unknown; to?: unknown; event?: { type: string } },
    runner: MachineRunner,
    workflow: string,
    id: string,
    revision: number,
    i: number,
    atMs: number,
    key: string,
    event: unknown,
  ): void {
    const ev = params.event;
    if (!ev) return;
    const delayed = typeof params.delay === 'number';
    if (runner.isSelf(params.to)) {
      if (delayed) this.delayed(params, ev, revision, i, atMs);
      else {
        const self = { type: EngineEvent.Self, event: ev, ...bornOf(this.self ?? {}) };
        this.effects.push({ kind: 'send', type: SEND_ACTION, params: { workflow, id, event: self }, key, event });
      }
      return;
    }
    const target = this.sendTarget(params.to);
    if (!target) return;
    // A delayed one is sent when its timer fires, still marked for the child (`toChild`).
    if (delayed) this.delayed(params, ev, revision, i, atMs, target);
    else this.effects.push({ kind: 'send', type: SEND_ACTION, params: { ...target, event: ev }, key, event });
  }

  /**
   * The paths of a child's input and first snapshot that hold a value of one of this instance's
   * secret paths (declared and inherited), found in its input, its context when the child is
   * started, or the event being applied (see security/inherited-secrets.ts).
   */
  private childSecrets(runner: MachineRunner, a: Executable, event: unknown, input: unknown, actorRef: unknown): string[] {
    const paths = mergeSecretPaths(this.declared ?? runner.secrets, this.inherited);
    if (paths.length === 0) return [];
    const e = (typeof event === 'object' && event !== null ? event : {}) as { input?: unknown; output?: unknown };
    return childSecretPaths(paths, [a.info?.context, this.input, event, e.input, e.output], [input, ...snapshotRoots(actorRef)]);
  }

  /** Where a send goes: the parent, or a child (`toChild`: its invoke id, so only that child takes it). */
  private sendTarget(to: unknown): { workflow: string; id: string; toChild?: string } | undefined {
    if (to === undefined || to === null) return undefined;
    if ((to as { id?: unknown }).id === 'jetstate.parent') return this.parent ? { workflow: this.parent.workflow, id: this.parent.id } : undefined;
    const childId = typeof to === 'string' ? to : (to as { id?: unknown }).id;
    const child = typeof childId === 'string' ? this.children[childId] : undefined;
    return child ? { workflow: child.workflow, id: child.id, toChild: childId as string } : undefined;
  }

  cancel(invokeId: string): void {
    const task = this.tasks[invokeId]!;
    delete this.tasks[invokeId];
    this.cancelledTasks.push({ invokeId, token: task.token, src: task.src, input: task.input });
  }

  stopChild(invokeId: string, key: string, event: unknown): void {
    const child = this.children[invokeId]!;
    delete this.children[invokeId];
    // Names the parent the child must have: the id may be held by another parent's child (this
    // one's start refused, and not heard of yet), which a stop matched by token alone would stop.
    const parent = this.self && { workflow: this.self.workflow, id: this.self.id, invokeId, token: child.token, ...bornOf(this.self) };
    this.effects.push({
      kind: 'child',
      type: OutboxKind.StopChild,
      params: { workflow: child.workflow, id: child.id, token: child.token, ...(parent ? { parent } : {}) },
      key,
      event,
    });
  }

  /** A finished instance has no pending timers, tasks or children. */
  finish(key: string): void {
    for (const k of Object.keys(this.timers)) delete this.timers[k];
    for (const k of Object.keys(this.tasks)) this.cancel(k);
    Object.keys(this.children).forEach((k, i) => this.stopChild(k, `${key}.stop.${i}`, null));
  }

  /**
   * The record fields this plan decides. `context`: the context the step ends with; an action that
   * saw another one at its place keeps it in its outbox entry, for a re-run.
   */
  fields(context: unknown): Pick<InstanceRecord, 'timers' | 'tasks' | 'children' | 'outbox'> & { invoked?: string[] } {
    const out: Pick<InstanceRecord, 'timers' | 'tasks' | 'children' | 'outbox'> & { invoked?: string[] } = {
      timers: this.timers,
      tasks: this.tasks,
      children: this.children,
      outbox: this.outbox(context),
    };
    if (this.invoked.length > 0) out.invoked = this.invoked;
    return out;
  }

  /** Custom actions, sends and child starts and stops to keep in the record until they have run. */
  outbox(context: unknown): OutboxEntry[] {
    const out: OutboxEntry[] = [];
    for (const e of this.effects) {
      if (e.kind !== 'action' && e.kind !== 'send' && e.kind !== 'child') continue;
      const entry: OutboxEntry = { key: e.key, type: e.type, params: e.params, event: e.event };
      const seen = e.kind === 'action' ? e.exec?.info?.context : undefined;
      if (seen !== undefined && seen !== context) entry.context = seen;
      out.push(entry);
    }
    return out;
  }

  /** Only what is still pending at the end of the step is started. */
  pendingTimers(): ScheduledTimer[] {
    return this.scheduledTimers.filter((t) => this.findTimer(t.timerId, t.token) !== undefined);
  }

  pendingTasks(): TaskChange[] {
    return this.startedTasks.filter((t) => this.tasks[t.invokeId]?.token === t.token);
  }
}

/** XState's order: the earlier due time first; at the same time, the one scheduled first. */
function firesBefore(a: TimerRecord, b: TimerRecord): boolean {
  if (a.dueAtMs !== b.dueAtMs) return a.dueAtMs < b.dueAtMs;
  if (a.token !== b.token) return a.token < b.token;
  return (a.seq ?? 0) < (b.seq ?? 0);
}

/**
 * The data in an invoked actor's live snapshot: its context, and the input, context and output of
 * what it invoked in turn (a child workflow's first snapshot holds its own invoked actors).
 */
function snapshotRoots(actorRef: unknown, depth = 0): unknown[] {
  if (depth > 8 || typeof actorRef !== 'object' || actorRef === null) return [];
  let snapshot: { context?: unknown; input?: unknown; output?: unknown; children?: Record<string, unknown> } | undefined;
  try {
    snapshot = (actorRef as { getSnapshot?: () => typeof snapshot }).getSnapshot?.();
  } catch {
    return [];
  }
  if (!snapshot) return [];
  const out: unknown[] = [snapshot.context, snapshot.input, snapshot.output];
  for (const ref of Object.values(snapshot.children ?? {})) out.push(...snapshotRoots(ref, depth + 1));
  return out;
}

/**
 * The id a `spawnChild` gives its actor: the one given, or the one its id function computed
 * (XState resolves it into the action's `actorRef`). Undefined without an id: XState would use a
 * session id, which a step computed again would not give again (defineWorkflow refuses it).
 */
function spawnIdOf(p: { id?: unknown; actorRef?: { id?: unknown } | undefined }): string | undefined {
  if (typeof p.id === 'string') return p.id;
  if (typeof p.id === 'function' && typeof p.actorRef?.id === 'string') return p.actorRef.id;
  return undefined;
}
