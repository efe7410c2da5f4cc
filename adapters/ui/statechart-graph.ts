/**
 * The statechart of a workflow version as plain JSON for the page: its state nodes (nested and
 * parallel), and its transitions with event names, `after` delays, `always` and the done/error
 * transitions of invokes. Read from XState's own state node tree (`machine.root`), so it is the
 * machine the engine runs, not a second description that could drift.
 */
import type { AnyStateNode } from 'xstate';
import type { WorkflowDefinition } from '../../engine/index.js';
import type { Chart, ChartEdge, ChartNode } from './protocol.js';

interface TransitionLike {
  target?: ReadonlyArray<{ id: string }> | undefined;
  guard?: unknown;
  actions?: readonly unknown[];
  eventType: string;
  delay?: string | number;
}

/** A string, `{ type }`, or a function: XState's built-in action creators are functions with a `type` ('xstate.raise'). */
const nameOf = (x: unknown): string | null => {
  if (typeof x === 'string') return x;
  const type = (x as { type?: unknown } | null)?.type;
  if (typeof type === 'string') return type;
  if (typeof x === 'function') return x.name || null;
  return null;
};

/** Named actions only: XState's built-ins (assign, raise ...) would drown the picture. */
const actionNames = (actions: readonly unknown[] | undefined): string[] =>
  (actions ?? []).flatMap((a) => {
    const n = nameOf(a);
    return n && !n.startsWith('xstate.') ? [n] : [];
  });

const guardName = (g: unknown): string | null => {
  if (g === undefined || g === null) return null;
  return nameOf(g) ?? 'guard';
};

/** `86400000` → `24h`; named delays stay as named. */
export function describeDelay(delay: string | number | undefined): string {
  if (typeof delay !== 'number') return String(delay ?? '?');
  const units: Array<[number, string]> = [
    [86_400_000, 'd'],
    [3_600_000, 'h'],
    [60_000, 'min'],
    [1_000, 's'],
  ];
  for (const [ms, unit] of units) if (delay >= ms && delay % ms === 0) return `${delay / ms}${unit}`;
  return `${delay}ms`;
}

/**
 * The chart of one workflow version.
 *
 * @example
 * ```ts
 * const chart = statechartOf(order); // { root: { id: 'order', children: [...] }, edges: [{ label: 'PAY', ... }] }
 * ```
 */
export function statechartOf(workflow: WorkflowDefinition): Chart {
  const edges: ChartEdge[] = [];
  const visit = (node: AnyStateNode): ChartNode => {
    const own = edgesOf(node);
    for (const e of own) edges.push({ ...e, id: `e${edges.length}` });
    const initial = node.type === 'compound' ? ((node.initial as { target?: ReadonlyArray<{ id: string }> } | undefined)?.target?.[0]?.id ?? null) : null;
    return {
      id: node.id,
      key: node.key,
      path: [...node.path],
      type: node.type as ChartNode['type'],
      initial,
      invokes: node.invoke.map((i) => ({ id: String(i.id), src: typeof i.src === 'string' ? i.src : 'inline' })),
      entry: actionNames(node.entry),
      exit: actionNames(node.exit),
      children: Object.values(node.states ?? {}).map((c) => visit(c as AnyStateNode)),
    };
  };
  const root = visit(workflow.machine.root as AnyStateNode);
  return { workflow: workflow.name, version: workflow.version, root, edges };
}

function edgesOf(node: AnyStateNode): Array<Omit<ChartEdge, 'id'>> {
  const out: Array<Omit<ChartEdge, 'id'>> = [];
  const add = (t: TransitionLike, kind: ChartEdge['kind'], label: string): void => {
    const targets = t.target && t.target.length > 0 ? t.target.map((x) => x.id) : [null];
    const guard = guardName(t.guard);
    for (const target of targets) out.push({ source: node.id, target, label, kind, eventType: t.eventType, guard, actions: actionNames(t.actions) });
  };
  for (const [eventType, transitions] of node.transitions as Map<string, TransitionLike[]>) {
    // Delayed transitions come from `after` below, with their delay.
    if (eventType.startsWith('xstate.after.')) continue;
    const done = /^xstate\.done\.actor\.(.+)$/.exec(eventType);
    const error = /^xstate\.error\.actor\.(.+)$/.exec(eventType);
    const kind = done ? 'done' : error ? 'error' : 'event';
    const label = done ? `done: ${done[1]}` : error ? `error: ${error[1]}` : eventType;
    for (const t of transitions) add(t, kind, label);
  }
  for (const t of node.after as unknown as TransitionLike[]) add(t, 'after', `after ${describeDelay(t.delay)}`);
  for (const t of (node.always ?? []) as unknown as TransitionLike[]) add(t, 'always', 'always');
  return out;
}
