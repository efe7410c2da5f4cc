/** How times, states and values read on the page. */

export function time(ms: number): string {
  if (!ms) return '-';
  const d = new Date(ms);
  return d
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
}

/** `in 23h 59m`, `3 s ago`. */
export function relative(ms: number, now = Date.now()): string {
  const diff = ms - now;
  const abs = Math.abs(diff);
  const parts: string[] = [];
  const units: Array<[number, string]> = [
    [86_400_000, 'd'],
    [3_600_000, 'h'],
    [60_000, 'm'],
    [1_000, 's'],
  ];
  let rest = abs;
  for (const [size, unit] of units) {
    if (rest >= size && parts.length < 2) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  const text = parts.join(' ') || `${abs}ms`;
  return diff >= 0 ? `in ${text}` : `${text} ago`;
}

/** A state value in words: `paid`, `shipping.packed`. */
export function stateText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value === null || value === undefined) return '-';
  const leaves: string[] = [];
  const walk = (v: unknown, prefix: string): void => {
    if (typeof v === 'string') leaves.push(prefix ? `${prefix}.${v}` : v);
    else if (v && typeof v === 'object') for (const [k, c] of Object.entries(v)) walk(c, prefix ? `${prefix}.${k}` : k);
  };
  walk(value, '');
  return leaves.join(', ');
}

export const rate = (n: number): string => (n === 0 ? '0' : n < 10 ? n.toFixed(1) : String(Math.round(n)));
