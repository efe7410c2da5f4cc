/**
 * The mark `childWorkflow()` leaves on a workflow's machine: the definition it belongs to. Apart
 * from child.ts so that what reads it (actor-kinds.ts, for `defineWorkflow`) needs no import of the
 * definition module's dependants.
 */
export const CHILD = Symbol.for('jetstate.child');

/** The workflow definition a machine registered with `childWorkflow()` belongs to, if it is one. */
export function childMarkOf<T>(logic: unknown): T | undefined {
  return typeof logic === 'object' && logic !== null ? (logic as { [CHILD]?: T })[CHILD] : undefined;
}
