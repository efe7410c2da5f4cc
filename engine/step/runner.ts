/**
 * Runs one machine's XState transitions with a single reusable, inert actor scope. XState's
 * exported `transition()` builds a throw-away actor per call, which is most of its cost. Nothing
 * here does I/O: XState's actions are collected, not executed (see plan.ts).
 */
import { createActor, type AnyActorScope, type AnyMachineSnapshot, type AnyStateMachine } from 'xstate';
import { InstanceStatus } from '../protocol/record.js';
import { activitiesOf, type ActivityDefinition } from '../define/activity.js';
import { childWorkflowsOf } from '../define/child.js';
import type { WorkflowDefinition } from '../define/definition.js';
import { usesSystemId } from '../define/machine-walk.js';

/** An action XState asked to execute, as collected from the actor scope. */
export interface Executable {
  type: string;
  params?: unknown;
  info?: { context: unknown; event: unknown; self?: unknown; system?: unknown };
  exec?: ((info: unknown, params: unknown) => void) | undefined;
  /**
   * What `self.getSnapshot()` shows the action when it runs after the write (see outbox.ts): as in
   * XState, the instance's snapshot before the event (at the start, its initial snapshot). The
   * scope's `self` is shared by the machine's instances, so by then it may show another one.
   */
  snapshot?: AnyMachineSnapshot;
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
  readonly children: Map<string, WorkflowDefinition>;
  /** Custom actions registered in `setup({ actions })`, by name. */
  readonly actions: Map<string, (args: unknown, params: unknown) => unknown>;
  /** The scope of the current computation: the shared one, or a fresh one (see `fresh`). */
  private scope: AnyActorScope;
  /**
   * XState registers an actor's `systemId` in its actor system when the actor is created, and
   * the inert scope never stops actors, so with one shared system the second instance (or the
   * second entry of the state) would clash ("Actor with system ID ... already exists"). A machine
   * that uses `systemId` gets a fresh system per computation: a throw-away actor each time, which
   * the shared scope exists to avoid on the hot path of every other machine.
   */
  private fresh: boolean;
  private collected: Executable[] = [];

  /**
   * `secrets`: the workflow's declared secret paths; a child workflow it starts inherits the paths
   * of the child's data that hold their values (see plan.ts).
   */
  constructor(
    machine: AnyStateMachine,
    readonly secrets: readonly string[] = [],
  ) {
    this.machine = machine;
    this.activities = activitiesOf(machine);
    this.children = childWorkflowsOf(machine);
    this.actions = new Map(
      Object.entries((machine.implementations?.actions ?? {}) as Record<string, unknown>).filter(
        (e): e is [string, (args: unknown, params: unknown) => unknown] =>
          typeof e[1] === 'function' && !String((e[1] as { type?: unknown }).type ?? '').startsWith('xstate.'),
      ),
    );
    this.fresh = usesSystemId(machine);
    this.scope = this.makeScope();
  }

  private makeScope(): AnyActorScope {
    const self = createActor(this.machine);
    // Creating it computed its initial snapshot, which registered the systemIds of the actors that
    // state invokes in its system: free them, the step's own actors take them.
    for (const child of Object.values((self.getSnapshot() as AnyMachineSnapshot).children ?? {})) {
      (self.system as unknown as { _unregister(ref: unknown): void })._unregister(child);
    }
    return {
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

  /**
   * Runs one computation in the scope it needs. A `systemId` the configuration does not show (a
   * spawn chosen at run time) clashes in the shared system: from then on this machine gets fresh
   * ones, and the computation runs again in one (it changed nothing: the step is pure).
   */
  private compute<T>(fn: () => T): T {
    if (this.fresh) this.scope = this.makeScope();
    let result: T;
    try {
      result = fn();
    } catch (e) {
      if (this.fresh || !isSystemIdClash(e)) throw e;
      this.fresh = true;
      this.scope = this.makeScope();
      return fn();
    }
    // XState reports an error of the initial step in the snapshot (status 'error') rather than by a throw.
    const snapshot = ((result as { snapshot?: unknown }).snapshot ?? result) as { status?: unknown; error?: unknown };
    if (!this.fresh && snapshot?.status === 'error' && isSystemIdClash(snapshot.error)) {
      this.fresh = true;
      this.scope = this.makeScope();
      return fn();
    }
    return result;
  }

  /**
   * The snapshot's actors under their `systemId` in the scope's system: a fresh scope's system
   * knows none of them, and `system.get(id)` would find nothing (XState then sends to self).
   * Only fresh scopes: the shared one is used by every instance of the machine.
   */
  private registerSystemIds(snapshot: AnyMachineSnapshot): void {
    const system = this.scope.system as unknown as { get(id: string): unknown; _set(id: string, ref: unknown): void };
    for (const child of Object.values(snapshot.children ?? {}) as Array<{ systemId?: unknown }>) {
      if (typeof child?.systemId === 'string' && system.get(child.systemId) === undefined) system._set(child.systemId, child);
    }
  }

  /** True when `ref` is the instance itself (XState's `sendTo(({ self }) => self, ...)`). */
  isSelf(ref: unknown): boolean {
    return ref === this.scope.self;
  }

  /** Stands for a child workflow's parent instance, so that XState resolves `sendParent`. */
  readonly parentRef = Object.freeze({ id: 'jetstate.parent', sessionId: 'jetstate.parent', send: () => {} });

  private setParent(hasParent: boolean): void {
    (this.scope.self as unknown as { _parent: unknown })._parent = hasParent ? this.parentRef : undefined;
  }

  initial(input: unknown, hasParent = false): { snapshot: AnyMachineSnapshot; actions: Executable[] } {
    return this.compute(() => {
      this.collected = [];
      this.setParent(hasParent);
      const snapshot = this.machine.getInitialSnapshot(this.scope, input) as AnyMachineSnapshot;
      for (const a of this.collected) a.snapshot = snapshot;
      return { snapshot, actions: this.collected };
    });
  }

  transition(snapshot: AnyMachineSnapshot, event: { type: string }, hasParent = false): { snapshot: AnyMachineSnapshot; actions: Executable[] } {
    return this.compute(() => {
      this.collected = [];
      this.setParent(hasParent);
      if (this.fresh) this.registerSystemIds(snapshot);
      (this.scope.self as unknown as { _snapshot: unknown })._snapshot = snapshot;
      const next = this.machine.transition(snapshot, event, this.scope) as AnyMachineSnapshot;
      for (const a of this.collected) a.snapshot = snapshot;
      return { snapshot: next, actions: this.collected };
    });
  }

  restore(persisted: Record<string, unknown>): AnyMachineSnapshot {
    // A machine that threw on start has no state (value {}): XState would restore it to its
    // initial state. It stays what the start made of it (see startInstance), so replay agrees.
    if (persisted['status'] === 'error' && isEmptyValue(persisted['value']))
      return { ...persisted, context: persisted['context'] } as unknown as AnyMachineSnapshot;
    return this.compute(() => this.machine.restoreSnapshot(persisted as never, this.scope) as AnyMachineSnapshot);
  }

  /**
   * The snapshot as stored. History states are kept sorted by state id: XState lists them in the
   * order they were entered in a live run, but in document order once restored, and the order
   * means nothing (the entry set is sorted again when they are restored), so a replay and the
   * stored record compare equal however the run went.
   */
  persist(snapshot: AnyMachineSnapshot): Record<string, unknown> {
    const persisted = this.machine.getPersistedSnapshot(snapshot) as Record<string, unknown>;
    const history = persisted['historyValue'] as Record<string, Array<{ id: string }>> | undefined;
    if (history && Object.values(history).some((states) => Array.isArray(states) && states.length > 1)) {
      persisted['historyValue'] = Object.fromEntries(
        Object.entries(history).map(([k, states]) => [
          k,
          Array.isArray(states) ? [...states].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)) : states,
        ]),
      );
    }
    return persisted;
  }
}

const isSystemIdClash = (e: unknown): boolean => e instanceof Error && /^Actor with system ID '.*' already exists/.test(e.message);

const isEmptyValue = (v: unknown): boolean => typeof v === 'object' && v !== null && Object.keys(v).length === 0;

export function statusOf(snapshot: AnyMachineSnapshot): InstanceStatus {
  if (snapshot.status === 'done') return InstanceStatus.Done;
  if (snapshot.status === 'error') return InstanceStatus.Failed;
  return InstanceStatus.Running;
}

export function errorText(error: unknown): string {
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
