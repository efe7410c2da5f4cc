/**
 * What a step's XState actions amount to: delayed raises become durable timers, invoked
 * activities become tasks, invoked child workflows become child starts, cancels and stops remove
 * them, and everything else is an effect that runs after the write (the outbox).
 */
import type { InstanceRecord, TaskRecord, TimerRecord } from '../protocol/record.js';
import { OutboxKind } from '../protocol/events.js';
import { SEND_ACTION, sendResolverOf } from '../define/messages.js';
import { childIdOf } from '../define/child.js';
import type { Executable, MachineRunner } from './runner.js';
import { childSecretPaths, mergeSecretPaths } from '../security/inherited-secrets.js';

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

  /** `inherited`: the instance's inherited secret paths (a new instance's come with its start). */
  constructor(
    record?: InstanceRecord,
    private readonly parent: InstanceRecord['parent'] = record?.parent,
    private readonly inherited: readonly string[] | undefined = record?.secrets,
  ) {
    this.timers = { ...record?.timers };
    this.tasks = { ...record?.tasks };
    this.children = { ...record?.children };
    this.input = record?.input;
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
        const childDef = runner.children.get(params.src)!;
        const child: InstanceRecord['children'][string] = { workflow: childDef.name, id: childIdOf(id, params.id), token: revision };
        // Values of this instance's secret paths stay secret in the child (and in this record's copy of its start).
        const secrets = this.childSecrets(runner, a, event, params.input, params.actorRef);
        if (secrets.length > 0) child.secrets = secrets;
        this.children[params.id] = child;
        const start = { ...child, version: childDef.version, input: params.input ?? {}, parent: { workflow, id, invokeId: params.id, token: revision } };
        this.effects.push({ kind: 'child', type: OutboxKind.StartChild, params: start, key: `${workflow}.${id}.${revision}.${i}`, event });
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

  /**
   * The paths of a child's input and first snapshot that hold a value of one of this instance's
   * secret paths (declared and inherited), found in its input, its context when the child is
   * started, or the event being applied (see security/inherited-secrets.ts).
   */
  private childSecrets(runner: MachineRunner, a: Executable, event: unknown, input: unknown, actorRef: unknown): string[] {
    const paths = mergeSecretPaths(runner.secrets, this.inherited);
    if (paths.length === 0) return [];
    const e = (typeof event === 'object' && event !== null ? event : {}) as { input?: unknown; output?: unknown };
    return childSecretPaths(paths, [a.info?.context, this.input, event, e.input, e.output], [input, ...snapshotRoots(actorRef)]);
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
    this.effects.push({ kind: 'child', type: OutboxKind.StopChild, params: { workflow: child.workflow, id: child.id, token: child.token }, key, event });
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
