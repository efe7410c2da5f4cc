/**
 * A JSON value as a collapsible tree (details/summary: keyboard and screen readers work). Values
 * the server redacted (`[encrypted:<kid>]`, `[redacted]`) are marked as secrets.
 */
import { h, type Child } from './dom.js';

const SECRET = /^\[(encrypted:[^\]]*|redacted)\]$/;

function leaf(v: unknown): HTMLElement {
  if (typeof v === 'string') {
    if (SECRET.test(v)) return h('span', { class: 'secret', title: 'secret field: shown only to a server started with the key ring and --reveal' }, v);
    return h('span', { class: 'str' }, JSON.stringify(v));
  }
  if (typeof v === 'number') return h('span', { class: 'num' }, String(v));
  if (typeof v === 'boolean') return h('span', { class: 'bool' }, String(v));
  return h('span', { class: 'null' }, v === undefined ? 'undefined' : 'null');
}

function node(label: Child, v: unknown, depth: number, path: string): HTMLElement {
  if (v === null || typeof v !== 'object') return h('div', { class: 'jt-row', 'data-path': path }, label, leaf(v));
  const entries = Array.isArray(v) ? v.map((x, i) => [String(i), x] as const) : Object.entries(v as Record<string, unknown>);
  const brackets = Array.isArray(v) ? ['[', ']'] : ['{', '}'];
  if (entries.length === 0) return h('div', { class: 'jt-row', 'data-path': path }, label, h('span', { class: 'null' }, brackets.join('')));
  const details = h(
    'details',
    { class: 'jt', 'data-path': path },
    h('summary', null, label, h('span', { class: 'jt-count' }, `${brackets[0]} ${entries.length} ${Array.isArray(v) ? 'items' : 'keys'} ${brackets[1]}`)),
    h('div', { class: 'jt-children' }, ...entries.map(([k, c]) => node(h('span', { class: 'key' }, `${k}: `), c, depth + 1, path ? `${path}.${k}` : k))),
  );
  details.open = depth < 2;
  return details;
}

/** The tree of `value`; `open` keeps the branches a previous render had open. */
export function jsonTree(value: unknown, open?: Set<string>): HTMLElement {
  const tree = h('div', { class: 'json-tree' }, node(h('span', { class: 'key' }, ''), value, 0, ''));
  if (open) for (const d of tree.querySelectorAll<HTMLDetailsElement>('details[data-path]')) d.open = open.has(d.dataset['path'] ?? '');
  return tree;
}

/** Which branches are open now, so a live refresh keeps them. */
export function openPaths(tree: Element | null): Set<string> | undefined {
  if (!tree) return undefined;
  const out = new Set<string>();
  for (const d of tree.querySelectorAll<HTMLDetailsElement>('details[data-path]')) if (d.open) out.add(d.dataset['path'] ?? '');
  return out;
}
