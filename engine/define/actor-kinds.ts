/**
 * What kind of XState actor logic a machine invokes or spawns, and whether the engine can make it
 * durable. Only two kinds are: `activity()` (a task on a durable queue) and `childWorkflow()` (a
 * child instance with its own record). Every other kind runs in memory, holds state the engine
 * cannot persist, and would be lost on a restart, so `defineWorkflow` refuses it with the fix.
 */
import { fromCallback, fromEventObservable, fromObservable, fromPromise, fromTransition, type AnyStateMachine } from 'xstate';
import { activitiesOf } from './activity.js';
import { childMarkOf } from './child-mark.js';

export type ActorKind = 'activity' | 'childWorkflow' | 'promise' | 'callback' | 'observable' | 'eventObservable' | 'transition' | 'machine' | 'unknown';

/**
 * XState's actor logic creators leave no mark on what they return; their `transition` functions
 * are the same code for every logic one creator makes, so their source tells them apart.
 */
const signatures: Array<[ActorKind, string]> = [
  ['promise', fromPromise(async () => undefined).transition.toString()],
  ['callback', fromCallback(() => {}).transition.toString()],
  ['observable', fromObservable(() => ({ subscribe: () => ({ unsubscribe() {} }) }) as never).transition.toString()],
  ['eventObservable', fromEventObservable(() => ({ subscribe: () => ({ unsubscribe() {} }) }) as never).transition.toString()],
  ['transition', fromTransition((s: number) => s, 0).transition.toString()],
];

/** The kind of the actor logic registered as `src` in the machine's `setup({ actors })`. */
export function actorKind(machine: AnyStateMachine, src: string): ActorKind {
  if (activitiesOf(machine).has(src)) return 'activity';
  const logic = ((machine.implementations?.actors ?? {}) as Record<string, unknown>)[src];
  if (childMarkOf(logic) !== undefined) return 'childWorkflow';
  return kindOfLogic(logic);
}

export function kindOfLogic(logic: unknown): ActorKind {
  if (typeof logic !== 'object' || logic === null) return 'unknown';
  if ('root' in logic && 'implementations' in logic) return 'machine';
  const transition = (logic as { transition?: unknown }).transition;
  if (typeof transition !== 'function') return 'unknown';
  const source = transition.toString();
  return signatures.find(([, s]) => s === source)?.[0] ?? 'unknown';
}

/** Why an actor of this kind cannot be made durable, and what to use instead. */
export function whyNotDurable(kind: ActorKind): string {
  switch (kind) {
    case 'promise':
      return 'a fromPromise actor runs in memory only (lost on a restart, never retried); wrap its function in activity(fn) to run it as a durable task';
    case 'callback':
      return 'a fromCallback actor runs in memory and keeps its state there (lost on a restart); do its work in an activity() (a durable task) or a childWorkflow()';
    case 'observable':
      return 'a fromObservable actor runs in memory and keeps its subscription there (lost on a restart); do its work in an activity() or a childWorkflow()';
    case 'eventObservable':
      return 'a fromEventObservable actor runs in memory and keeps its subscription there (lost on a restart); do its work in an activity() or a childWorkflow()';
    case 'transition':
      return 'a fromTransition actor keeps its state in memory (lost on a restart); make it a workflow of its own and register it with childWorkflow()';
    case 'machine':
      return 'a plain machine as an actor runs in memory (lost on a restart); define it as a workflow with defineWorkflow() and register it with childWorkflow(thatWorkflow)';
    default:
      return 'this actor logic runs in memory (lost on a restart); use activity() for a durable task or childWorkflow() for a durable child instance';
  }
}
