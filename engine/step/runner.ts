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

/** An action XState asked to execute, as collected from the actor scope. */
export interface Executable {
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
  readonly children: Map<string, WorkflowDefinition>;
  /** Custom actions registered in `setup({ actions })`, by name. */
  readonly actions: Map<string, (args: unknown, params: unknown) => unknown>;
  private readonly scope: AnyActorScope;
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
      persisted['historyValue'] = Object.fromEntries(Object.entries(history).map(([k, states]) => [k, Array.isArray(states) ? [...states].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)) : states]));
    }
    return persisted;
  }
}

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

