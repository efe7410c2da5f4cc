/**
 * A sorted array of strings with cheap bulk changes: additions and removals wait in two sets and
 * are merged in one pass (O(n + k log k)) the next time someone reads, instead of an O(n) splice
 * per change. With 100,000 keys and a thousand new instances a second, that is one merge per page
 * view instead of a thousand array moves.
 */
export class SortedKeys<T> {
  private keys: string[] = [];
  private values: T[] = [];
  private readonly adding = new Map<string, T>();
  private readonly removing = new Set<string>();

  /** Records that `key` exists with `value` (it must not be in the set already). */
  add(key: string, value: T): void {
    if (this.removing.delete(key)) {
      // Removed and added back before a merge: it is still in place; only its value may differ.
      const at = lowerBound(this.keys, key);
      this.values[at] = value;
      return;
    }
    this.adding.set(key, value);
  }

  /** Records that `key` is gone (it must be in the set). */
  remove(key: string): void {
    if (this.adding.delete(key)) return;
    this.removing.add(key);
  }

  /**
   * The sorted keys and, at the same positions, their values, after merging what changed since
   * the last read. Values sit beside the keys so a walk reads an array, not a map. Do not mutate.
   */
  view(): { keys: readonly string[]; values: readonly T[] } {
    if (this.adding.size > 0 || this.removing.size > 0) this.merge();
    return { keys: this.keys, values: this.values };
  }

  private merge(): void {
    let keys = this.keys;
    let values = this.values;
    if (this.removing.size > 0) {
      const k2: string[] = [];
      const v2: T[] = [];
      for (let i = 0; i < keys.length; i++) {
        if (this.removing.has(keys[i]!)) continue;
        k2.push(keys[i]!);
        v2.push(values[i]!);
      }
      keys = k2;
      values = v2;
    }
    const added = [...this.adding.keys()].sort(compare);
    const outK = new Array<string>(keys.length + added.length);
    const outV = new Array<T>(keys.length + added.length);
    let i = 0;
    let j = 0;
    let o = 0;
    while (i < keys.length || j < added.length) {
      if (j >= added.length || (i < keys.length && compare(keys[i]!, added[j]!) <= 0)) {
        outK[o] = keys[i]!;
        outV[o++] = values[i++]!;
      } else {
        const k = added[j++]!;
        outK[o] = k;
        outV[o++] = this.adding.get(k)!;
      }
    }
    this.keys = outK;
    this.values = outV;
    this.adding.clear();
    this.removing.clear();
  }
}

/** Plain code-unit order: keys are ASCII (workflow names and ids are `[A-Za-z0-9_-]`). */
export const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** The first position in `keys` whose key is not below `key`. */
export function lowerBound(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The first position in `keys` whose key is above `key`. */
export function upperBound(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid]! <= key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
