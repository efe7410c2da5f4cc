/** Options objects checked key by key: a misspelt option is refused with the one it most likely meant. */
import { ErrorCode, fail } from '../errors.js';

/** Refuses keys an options object does not have, naming the nearest known one. */
export function checkKeys(label: string, prefix: string, value: object, known: readonly string[], code: ErrorCode = ErrorCode.InvalidDefinition): void {
  for (const key of Object.keys(value)) {
    if (known.includes(key)) continue;
    const near = nearest(key, known);
    fail(
      code,
      `${label}: unknown option '${prefix}${key}'${near ? `; did you mean '${prefix}${near}'?` : ''} (known: ${known.map((k) => prefix + k).join(', ')})`,
    );
  }
}

/** The known name a misspelt one most likely meant: same letters in another case, or at most two edits away. */
export function nearest(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  let best: { name: string; d: number } | undefined;
  for (const name of known) {
    const d = name.toLowerCase() === lower ? 0 : editDistance(lower, name.toLowerCase());
    if (d <= Math.min(2, Math.floor(name.length / 3)) && (!best || d < best.d)) best = { name, d };
  }
  return best?.name;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}
