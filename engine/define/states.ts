/**
 * The states of a machine, read from its state nodes: which state values exist (so a test of a
 * state the machine does not have is an error, not a `false` forever) and which tags a state
 * value carries (tags are not stored in the record: they come from the machine).
 */
import type { AnyStateMachine, AnyStateNode, StateValue } from 'xstate';
import { ErrorCode, fail } from '../errors.js';

/** XState's path delimiter in string state values (`'shipping.packed'`). */
const DELIMITER = '.';

type Node = Pick<AnyStateNode, 'states' | 'tags'>;

const childrenOf = (node: Node): Record<string, Node> => (node.states ?? {}) as Record<string, Node>;

/**
 * Every state of the machine as a dotted path, parents before their children, e.g.
 * `['awaitingPayment', 'shipping', 'shipping.packed']`.
 */
export function statePathsOf(machine: AnyStateMachine): string[] {
  const out: string[] = [];
  const visit = (node: Node, prefix: string): void => {
    for (const [key, child] of Object.entries(childrenOf(node))) {
      const path = prefix ? `${prefix}${DELIMITER}${key}` : key;
      out.push(path);
      visit(child, path);
    }
  };
  visit(machine.root, '');
  return out;
}

/**
 * The first part of a `matches()` argument that names no state of the machine, as a dotted path
 * (`'resovled'`, `'shipping.pakced'`), or undefined when every part of it exists. Accepts what
 * XState's `matches` accepts: a state name, a dotted path, or an object that descends into states.
 */
export function unknownStateOf(machine: AnyStateMachine, test: unknown): string | undefined {
  const walk = (node: Node, value: unknown, prefix: string): string | undefined => {
    if (typeof value === 'string') {
      let current = node;
      let path = prefix;
      for (const key of value.split(DELIMITER)) {
        path = path ? `${path}${DELIMITER}${key}` : key;
        const next = childrenOf(current)[key];
        if (!next || !Object.hasOwn(childrenOf(current), key)) return path;
        current = next;
      }
      return undefined;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      return prefix ? `${prefix} (${JSON.stringify(value)})` : (JSON.stringify(value) ?? String(value));
    for (const [key, inner] of Object.entries(value)) {
      const path = prefix ? `${prefix}${DELIMITER}${key}` : key;
      const child = Object.hasOwn(childrenOf(node), key) ? childrenOf(node)[key] : undefined;
      if (!child) return path;
      if (inner === undefined) continue;
      const missing = walk(child, inner, path);
      if (missing !== undefined) return missing;
    }
    return undefined;
  };
  return walk(machine.root, test, '');
}

/** The tags of the states a state value is in (the root's included), as XState's `hasTag` sees them. */
export function tagsOf(machine: AnyStateMachine, value: StateValue): Set<string> {
  const tags = new Set<string>(machine.root.tags);
  const walk = (node: Node, v: unknown): void => {
    if (typeof v === 'string') {
      const child = childrenOf(node)[v];
      if (child) for (const t of child.tags) tags.add(t);
      return;
    }
    if (typeof v !== 'object' || v === null) return;
    for (const [key, inner] of Object.entries(v)) {
      const child = childrenOf(node)[key];
      if (!child) continue;
      for (const t of child.tags) tags.add(t);
      walk(child, inner);
    }
  };
  walk(machine.root, value);
  return tags;
}

/**
 * Throws `INVALID_OPTIONS` when a `matches()` argument names a state that none of the given
 * machines (the registered versions of a workflow) has: such a test is false forever, so a
 * `waitFor` on it would only time out.
 */
export function checkStateTest(workflow: string, machines: readonly AnyStateMachine[], test: unknown): void {
  if (machines.length === 0) return;
  let missing: string | undefined;
  for (const machine of machines) {
    missing = unknownStateOf(machine, test);
    if (missing === undefined) return;
  }
  const states = [...new Set(machines.flatMap(statePathsOf))];
  const shown = states.length > 60 ? `${states.slice(0, 60).join(', ')}, ... (${states.length} in all)` : states.join(', ');
  fail(ErrorCode.InvalidOptions, `state '${missing}' does not exist in workflow '${workflow}'; its states are: ${shown || '(none)'}`);
}
