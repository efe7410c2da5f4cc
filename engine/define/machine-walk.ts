/**
 * What a machine's configuration shows without running it: its state nodes, the actors they
 * invoke, and every action written in them (entry, exit, transitions, `after`, `always`, invoke
 * outcomes), with named actions resolved to their implementations in `setup({ actions })`.
 * Actions chosen at run time (`enqueueActions`, an action function that returns others) are not
 * visible here; the step checks what they do when they run.
 */
import type { AnyStateMachine, AnyStateNode } from 'xstate';

/** An action found in the configuration: where, and the action (a builtin, a function, a name resolved). */
export interface FoundAction {
  /** e.g. `state 'order.paying' on 'PAY'`. */
  where: string;
  action: unknown;
}

/** An invoke found in the configuration. */
export interface FoundInvoke {
  node: AnyStateNode;
  src: unknown;
  id: unknown;
  systemId: unknown;
}

/** Every state node of a machine, the root first. */
export function stateNodesOf(machine: AnyStateMachine): AnyStateNode[] {
  const out: AnyStateNode[] = [];
  const visit = (node: AnyStateNode): void => {
    out.push(node);
    for (const child of Object.values(node.states ?? {})) visit(child as AnyStateNode);
  };
  visit(machine.root);
  return out;
}

/** Every invoke of every state node. */
export function invokesOf(machine: AnyStateMachine): FoundInvoke[] {
  return stateNodesOf(machine).flatMap((node) =>
    (node.invoke ?? []).map((inv: { src?: unknown; id?: unknown; systemId?: unknown }) => ({ node, src: inv.src, id: inv.id, systemId: inv.systemId })),
  );
}

/**
 * Every action the configuration names, named ones resolved to their implementation (a named action
 * without one is left as it is: XState reports it when it runs).
 */
export function actionsOf(machine: AnyStateMachine): FoundAction[] {
  const named = (machine.implementations?.actions ?? {}) as Record<string, unknown>;
  const out: FoundAction[] = [];
  const add = (where: string, list: unknown): void => {
    for (const a of [list].flat(Infinity)) {
      if (a === undefined || a === null) continue;
      const name =
        typeof a === 'string' ? a : typeof a === 'object' && typeof (a as { type?: unknown }).type === 'string' ? (a as { type: string }).type : undefined;
      const impl = name !== undefined && Object.hasOwn(named, name) ? named[name] : undefined;
      out.push({ where, action: impl ?? a });
    }
  };
  for (const node of stateNodesOf(machine)) {
    const at = `state '${node.id}'`;
    add(`${at} entry`, node.entry);
    add(`${at} exit`, node.exit);
    for (const [event, transitions] of node.transitions ?? new Map<string, unknown[]>()) {
      for (const t of transitions as Array<{ actions?: unknown }>) add(`${at} on '${event}'`, t.actions);
    }
    for (const t of (node.always ?? []) as Array<{ actions?: unknown }>) add(`${at} always`, t.actions);
  }
  return out;
}

/** The type of a builtin action (`xstate.spawnChild`, ...), if it is one. */
export function builtinType(action: unknown): string | undefined {
  const type = (action as { type?: unknown } | null)?.type;
  return typeof action === 'function' && typeof type === 'string' && type.startsWith('xstate.') ? type : undefined;
}

/** True when the machine gives any actor a `systemId` (in an invoke or a `spawnChild` it shows). */
export function usesSystemId(machine: AnyStateMachine): boolean {
  if (invokesOf(machine).some((i) => i.systemId !== undefined)) return true;
  return actionsOf(machine).some((a) => builtinType(a.action) === 'xstate.spawnChild' && (a.action as { systemId?: unknown }).systemId !== undefined);
}
