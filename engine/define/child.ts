/**
 * Child workflows: invoking a workflow's machine, registered with `childWorkflow()`, starts a
 * child instance with its own record and history; its outcome returns to the parent as
 * `xstate.done.actor.<id>` / `xstate.error.actor.<id>`; exiting the invoking state stops it.
 */
import type { AnyStateMachine } from 'xstate';
import { isWorkflowDefinition, type WorkflowDefinition } from './definition.js';
import { NAME_PATTERN } from '../protocol/names.js';
import { shortHash } from '../protocol/json.js';
import { CHILD, childMarkOf } from './child-mark.js';
import { ErrorCode, JetstateError } from '../errors.js';

/**
 * Registers a workflow as an actor that `invoke` can start as a durable child instance.
 *
 * @example
 * ```ts
 * setup({ actors: { payment: childWorkflow(payment) } }).createMachine({
 *   states: { paying: { invoke: { id: 'pay', src: 'payment', input: ({ context }) => ({ amount: context.amount }), onDone: 'paid' } } },
 * });
 * ```
 */
export function childWorkflow<TMachine extends AnyStateMachine>(workflow: WorkflowDefinition<TMachine>): TMachine {
  if (!isWorkflowDefinition(workflow))
    throw new JetstateError(
      ErrorCode.InvalidDefinition,
      'childWorkflow(workflow): workflow must be a definition made with defineWorkflow(...), not a machine or a name; define the child workflow first',
    );
  const machine = workflow.machine;
  if (!(CHILD in machine)) Object.defineProperty(machine, CHILD, { value: workflow });
  return machine;
}

export function childWorkflowsOf(machine: AnyStateMachine): Map<string, WorkflowDefinition> {
  const out = new Map<string, WorkflowDefinition>();
  for (const [name, logic] of Object.entries((machine.implementations?.actors ?? {}) as Record<string, unknown>)) {
    const def = childMarkOf<WorkflowDefinition>(logic);
    if (def) out.set(name, def);
  }
  return out;
}

/**
 * The child's instance id, derived from the parent's id and the invoke id so a re-run of the
 * parent's outbox finds it: `<parent id>_<invoke id>` for the first child started under that
 * invoke id, `<parent id>_<invoke id>-<token>` (the parent's revision that started it) for every
 * later one, since the first one's record (finished or not) keeps its id. An id that would not be
 * a valid name (over 128 characters, or characters NATS subjects cannot take) becomes
 * `<first 100 of the parent id>_<hash>`.
 */
export function childIdOf(parentId: string, invokeId: string, token?: number): string {
  const plain = token === undefined ? `${parentId}_${invokeId}` : `${parentId}_${invokeId}-${token}`;
  if (NAME_PATTERN.test(plain)) return plain;
  return `${parentId.slice(0, 100)}_${shortHash(plain)}`;
}

/** Sent to a child when its parent's invoking state was exited. */
export const STOP_EVENT = 'jetstate.stop';
/** Sent to a parent when its child finished. */
export const CHILD_EVENT = 'jetstate.child';

export interface ChildResultEvent {
  type: typeof CHILD_EVENT;
  invokeId: string;
  token: number;
  ok: boolean;
  output?: unknown;
  error?: { name: string; message: string };
}

export function isStop(event: unknown): boolean {
  return typeof event === 'object' && event !== null && (event as { type?: unknown }).type === STOP_EVENT;
}

export function isChildResult(event: unknown): event is ChildResultEvent {
  const e = event as Partial<ChildResultEvent> | null;
  return (
    typeof e === 'object' && e !== null && e.type === CHILD_EVENT && typeof e.invokeId === 'string' && typeof e.token === 'number' && typeof e.ok === 'boolean'
  );
}
