/**
 * Whether a context (or an output) survives the JSON round trip every record takes. A record is
 * JSON in KV: a `Date` comes back as a string, a `Map` as `{}`, `NaN` as `null`, a class instance
 * without its prototype. The machine in memory keeps the value, so after the next load (a restart,
 * another engine, a cache miss) guards and actions would see something else, and `verify` would
 * replay something else. The step fails the instance instead, naming the path and the fix.
 *
 * The walk is cheap on the hot path: it stops at the first problem and descends only into values
 * that changed since the previous context (XState's `assign` keeps the references it does not
 * touch, and the previous context was checked, or was read from JSON).
 */

/** Deeper than this is reported (a cycle would never end). */
const MAX_DEPTH = 64;

/**
 * The first value under `value` that JSON would not give back as it is, as a sentence naming its
 * path (`context.due is a Date, ...`) and the fix; undefined when it all survives. `previous`:
 * the value it replaces, already known to survive (subtrees identical to it are skipped).
 */
export function jsonProblem(value: unknown, root: string, previous?: unknown): string | undefined {
  return walk(value, previous, root, 0, false);
}

function walk(value: unknown, previous: unknown, path: string, depth: number, inArray: boolean): string | undefined {
  // Unchanged since the previous context, which survives: skip it (a primitive is checked, it is cheap).
  if (value === previous && typeof value === 'object' && value !== null) return undefined;
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return undefined;
    case 'number':
      return Number.isFinite(value) ? undefined : `${path} is ${value}, which a record stores as null; store null, or the number as a string`;
    case 'undefined':
      // A missing key reads as undefined again; in an array it comes back as null.
      return inArray ? `${path} is undefined, which a record stores as null in an array; use null` : undefined;
    case 'bigint':
      return `${path} is a bigint, which a record cannot keep; store it as a string`;
    case 'function':
      return `${path} is a function, which a record cannot keep; keep data in the context, and code in the machine's actions`;
    case 'symbol':
      return `${path} is a symbol, which a record cannot keep; store a string`;
  }
  if (value === null) return undefined;
  if (depth >= MAX_DEPTH) return `${path} is nested more than ${MAX_DEPTH} levels deep (or refers to itself), which a record cannot keep; store flatter data`;
  if (Array.isArray(value)) {
    const prev = Array.isArray(previous) ? previous : undefined;
    for (let i = 0; i < value.length; i++) {
      const problem = walk(value[i], prev?.[i], `${path}[${i}]`, depth + 1, true);
      if (problem) return problem;
    }
    return undefined;
  }
  const object = value as object;
  const proto = Object.getPrototypeOf(object) as object | null;
  if (proto !== Object.prototype && proto !== null) return `${path} is ${describe(object)}, which a record cannot keep; ${fixFor(object)}`;
  const prev = typeof previous === 'object' && previous !== null && !Array.isArray(previous) ? (previous as Record<string, unknown>) : undefined;
  for (const key in object) {
    if (!Object.hasOwn(object, key)) continue;
    const v = (object as Record<string, unknown>)[key];
    const problem = walk(v, prev?.[key], `${path}.${key}`, depth + 1, false);
    if (problem) return problem;
  }
  return undefined;
}

function describe(value: object): string {
  if (value instanceof Date) return 'a Date';
  if (value instanceof Map) return 'a Map';
  if (value instanceof Set) return 'a Set';
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
  const name = (value.constructor as { name?: unknown } | undefined)?.name;
  return typeof name === 'string' && name !== '' ? `an instance of ${name}` : 'an object with a prototype';
}

function fixFor(value: object): string {
  if (value instanceof Date) return 'store an ISO string or epoch ms';
  if (value instanceof Map) return 'store a plain object, or an array of [key, value] pairs';
  if (value instanceof Set) return 'store an array';
  if (ArrayBuffer.isView(value)) return 'store an array of numbers, or a base64 string';
  return 'store plain data (objects, arrays, strings, numbers, booleans, null)';
}
