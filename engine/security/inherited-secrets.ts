/**
 * Secrets follow the data. A workflow that declares `secrets: ['card.number']` and passes the card
 * to a child workflow that declares nothing must not see the card stored in the clear by the
 * child, nor in its own record's copy of what it passed. So a value found at one of an instance's
 * secret paths stays secret wherever that instance passes it: the parent computes which paths of
 * the child's input (and of the child's first snapshot) hold such a value, and those paths are
 * sealed for the child as if it had declared them ("inherited" paths).
 *
 * Matching is by value: strings (except the empty one) and numbers found under a secret path
 * mark every leaf of the child's data that holds the same value. That can seal more than needed
 * (an unrelated field that happens to hold the same number); it never seals less for values the
 * child receives as they are. A value the child derives (a slice, a hash) is not matched.
 */
import { isSealed, mapSecretPaths } from './secrets.js';

/** A leaf value that can be matched. */
export type SecretValue = string | number;

/** The most inherited paths kept for one instance: bounds what a start event and a record carry. */
export const MAX_INHERITED_PATHS = 256;

/**
 * Adds to `into` every string and number found at `paths` in `roots`, including every leaf
 * inside a matched object or array (a path may name a whole object as secret).
 *
 * @example
 * ```ts
 * secretValuesAt([{ card: { number: '4111', holder: 'Ada' } }], ['card.number']); // Set { '4111' }
 * ```
 */
export function secretValuesAt(roots: readonly unknown[], paths: readonly string[], into: Set<SecretValue> = new Set()): Set<SecretValue> {
  if (paths.length === 0) return into;
  for (const root of roots) {
    if (typeof root !== 'object' || root === null) continue;
    mapSecretPaths(root, paths, (v) => {
      collectLeaves(v, into);
      return v;
    });
  }
  return into;
}

function collectLeaves(value: unknown, into: Set<SecretValue>): void {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') {
      if (v !== '') into.add(v);
    } else if (typeof v === 'number') {
      if (Number.isFinite(v)) into.add(v);
    } else if (typeof v === 'object' && v !== null && !isSealed(v)) {
      for (const x of Array.isArray(v) ? v : Object.values(v)) stack.push(x);
    }
  }
}

/**
 * The dotted paths of `value` whose leaves hold one of `values`, in walk order, each once. A key
 * that cannot be written in a path (one holding a `.`, the empty key, or `*`) becomes `*`, which
 * matches any key at that level: more is sealed, never less.
 *
 * @example
 * ```ts
 * pathsHolding({ pay: { pan: '4111' }, n: 2 }, new Set(['4111'])); // ['pay.pan']
 * ```
 */
export function pathsHolding(value: unknown, values: ReadonlySet<SecretValue>, into: Set<string> = new Set(), indexAsWildcard = false): Set<string> {
  if (values.size === 0) return into;
  const stack: Array<[unknown, string]> = [[value, '']];
  while (stack.length > 0) {
    const [v, path] = stack.pop()!;
    if (typeof v === 'string' || typeof v === 'number') {
      if (path !== '' && values.has(v)) into.add(path);
    } else if (typeof v === 'object' && v !== null && !isSealed(v)) {
      const entries: Array<[string, unknown]> = Array.isArray(v) ? v.map((x, i) => [indexAsWildcard ? '*' : String(i), x]) : Object.entries(v);
      // Pushed in reverse so that paths come out in document order.
      for (let i = entries.length - 1; i >= 0; i--) {
        const [k, x] = entries[i]!;
        const seg = k === '' || k === '*' || k.includes('.') ? '*' : k;
        stack.push([x, path === '' ? seg : `${path}.${seg}`]);
      }
    }
  }
  return into;
}

/**
 * `declared` and `inherited` as one list in which no path lies inside another (what the codec's
 * path compiler requires): of two nested paths the outer one is kept, since it seals the inner
 * one's value too. The result depends only on the two sets, so an instance always gets the same
 * list. Returns `declared` itself when `inherited` adds nothing.
 *
 * @example
 * ```ts
 * mergeSecretPaths(['card'], ['card.number', 'pan']); // ['card', 'pan']
 * ```
 */
export function mergeSecretPaths(declared: readonly string[], inherited: readonly string[] | undefined): readonly string[] {
  if (!inherited || inherited.length === 0) return declared;
  const all = [...new Set([...declared, ...inherited])].map((p) => ({ p, s: p.split('.') }));
  // Outer (shorter) paths first, then by text, so the result does not depend on the input order.
  all.sort((a, b) => a.s.length - b.s.length || (a.p < b.p ? -1 : a.p > b.p ? 1 : 0));
  const kept: Array<{ p: string; s: string[] }> = [];
  for (const c of all) {
    const inside = kept.some((k) => k.s.length < c.s.length && k.s.every((seg, i) => seg === '*' || c.s[i] === '*' || seg === c.s[i]));
    if (!inside) kept.push(c);
  }
  return kept.length === declared.length && kept.every((k) => declared.includes(k.p)) ? declared : kept.map((k) => k.p);
}

/**
 * The inherited paths a child instance gets: the paths of its input, of its first snapshot's
 * context and of the snapshots of what that snapshot invoked, that hold a value found at
 * `parentPaths` in `parentRoots` (the parent's input, context and the event being applied).
 * Empty when the parent has no secret paths or passes none of their values.
 */
export function childSecretPaths(parentPaths: readonly string[], parentRoots: readonly unknown[], childRoots: readonly unknown[]): string[] {
  if (parentPaths.length === 0) return [];
  const values = secretValuesAt(parentRoots, parentPaths);
  if (values.size === 0) return [];
  const out = new Set<string>();
  for (const root of childRoots) pathsHolding(root, values, out);
  if (out.size <= MAX_INHERITED_PATHS) return [...out];
  // Too many to carry (a long array of cards): coarser paths that seal at least as much. Array
  // elements by '*', then whole top-level fields, then every top-level field.
  const coarse = new Set<string>();
  for (const root of childRoots) pathsHolding(root, values, coarse, true);
  if (coarse.size <= MAX_INHERITED_PATHS) return [...coarse];
  const top = new Set([...coarse].map((p) => p.split('.')[0]!));
  return top.size <= MAX_INHERITED_PATHS && !top.has('*') ? [...top] : ['*'];
}

/** True for a list of inherited paths as a start event or a record carries it. */
export function isInheritedPaths(value: unknown): value is string[] {
  return (
    Array.isArray(value) &&
    value.length <= MAX_INHERITED_PATHS &&
    value.every((p) => typeof p === 'string' && p.length > 0 && p.length <= 1_024 && p.split('.').every((s) => s !== ''))
  );
}
