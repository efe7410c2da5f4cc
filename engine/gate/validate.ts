/**
 * Schema checks of what senders send: an event against the workflow's declared events, a start
 * input against its input schema. Used by the client (to refuse at once) and by the event gate
 * (the authority). The verified identity is the engine's to set: a `$identity` in a payload is
 * removed.
 */
import { z } from 'zod';
import type { WorkflowDefinition } from '../define/definition.js';
import { IDENTITY_FIELD } from '../protocol/identity.js';

export type Checked<T> = { ok: true; value: T } | { ok: false; reason: string };
/** A checked value (what the engine will apply) and what to publish for it (`wire`). */
export type ToSend<T> = { ok: true; value: T; wire: T } | { ok: false; reason: string };

/** Checks an event against the workflow's declared events; the value is the event to apply. */
export function checkEvent(workflow: WorkflowDefinition, id: string, event: unknown): Checked<{ type: string } & Record<string, unknown>> {
  const where = `workflow '${workflow.name}' instance '${id}'`;
  if (typeof event !== 'object' || event === null || Array.isArray(event)) {
    return { ok: false, reason: `${where}: an event must be an object like { type: 'PAY', ... }` };
  }
  const { type, [IDENTITY_FIELD]: _identity, ...payload } = event as Record<string, unknown>;
  if (typeof type !== 'string') return { ok: false, reason: `${where}: the event has no string 'type'` };
  const schema = workflow.events[type];
  if (!schema || !Object.hasOwn(workflow.events, type)) {
    return { ok: false, reason: `${where}: event type '${type}' is not declared; declared types: ${Object.keys(workflow.events).join(', ') || '(none)'}` };
  }
  const parsed = schema.safeParse(payload);
  if (!parsed.success) return { ok: false, reason: `${where}: payload of '${type}' is not valid:\n${z.prettifyError(parsed.error)}` };
  const value: { type: string } & Record<string, unknown> = { ...(parsed.data as Record<string, unknown>), type };
  // A loose schema (z.looseObject, z.record) may let a `$identity` through its parse: drop it again.
  delete value[IDENTITY_FIELD];
  return { ok: true, value };
}

/** Checks a start input against the workflow's input schema; the value is the parsed input. */
export function checkInput(workflow: WorkflowDefinition, id: string, input: unknown): Checked<unknown> {
  const parsed = workflow.input.safeParse(input);
  if (!parsed.success) return { ok: false, reason: `workflow '${workflow.name}' instance '${id}': input is not valid:\n${z.prettifyError(parsed.error)}` };
  return { ok: true, value: parsed.data };
}

/**
 * What a sender publishes for an event its schema accepted. The engine's gate parses what arrives,
 * from JSON, again: the parsed event when that gives it back (no transform, or one that parses its
 * own output to itself: `z.coerce`, `.default()`, `.trim()`), else the event as given (a transform
 * such as `z.string().transform(Number)` would refuse its own output, and a scaling one would apply
 * twice). Neither (a value JSON cannot carry, a `Date` for `z.date()`): refused, naming the fix.
 */
export function checkEventToSend(workflow: WorkflowDefinition, id: string, event: unknown): ToSend<{ type: string } & Record<string, unknown>> {
  const checked = checkEvent(workflow, id, event);
  if (!checked.ok) return checked;
  if (!mayChangeOnTheWay(workflow.events[checked.value.type]!)) return { ok: true, value: checked.value, wire: checked.value };
  const { [IDENTITY_FIELD]: _identity, ...given } = event as Record<string, unknown>;
  const wire = asTheEngineParses(checked.value, given, (v) => checkEvent(workflow, id, v));
  if (wire === undefined) return { ok: false, reason: notJson(`workflow '${workflow.name}' instance '${id}': event '${checked.value.type}'`) };
  return { ok: true, value: checked.value, wire: wire.value as { type: string } & Record<string, unknown> };
}

/** `checkEventToSend` for a start input. */
export function checkInputToSend(workflow: WorkflowDefinition, id: string, input: unknown): ToSend<unknown> {
  const checked = checkInput(workflow, id, input);
  if (!checked.ok) return checked;
  if (!mayChangeOnTheWay(workflow.input)) return { ok: true, value: checked.value, wire: checked.value };
  const wire = asTheEngineParses(checked.value, input, (v) => checkInput(workflow, id, v));
  if (wire === undefined) return { ok: false, reason: notJson(`workflow '${workflow.name}' instance '${id}': the input`) };
  return { ok: true, value: checked.value, wire: wire.value };
}

/** What `mayChangeOnTheWay` found for a schema (a schema being walked counts as changing: a recursive one is checked by value). */
const changes = new WeakMap<z.ZodType, boolean>();

/**
 * Whether a value this schema parsed may parse to something else from JSON: a transform or a pipe
 * (`.transform()`, `z.preprocess()`), an overwrite (`.trim()`) or a custom check (`.refine()`, which
 * may change the value it is given), a type JSON cannot carry (`z.date()`,
 * a map, a bigint), or one not known here. Such a schema's values are checked one by one
 * (`asTheEngineParses`, about 8 µs for a small event); the others, most, go as parsed at no cost.
 */
function mayChangeOnTheWay(schema: z.ZodType): boolean {
  const known = changes.get(schema);
  if (known !== undefined) return known;
  changes.set(schema, true);
  const found = walk(schema);
  changes.set(schema, found);
  return found;
}

function walk(schema: z.ZodType): boolean {
  const def = (schema as unknown as { _zod?: { def?: Record<string, unknown> } })._zod?.def;
  if (!def) return true;
  const checks = (def['checks'] ?? []) as Array<{ _zod?: { def?: { check?: string } } }>;
  // An overwrite (`.trim()`) rewrites the value; a custom check (`.check()`, `.superRefine()`) may.
  if (checks.some((c) => c._zod?.def?.check === 'overwrite' || c._zod?.def?.check === 'custom')) return true;
  const any = (xs: unknown): boolean => (xs as z.ZodType[]).some(mayChangeOnTheWay);
  const one = (x: unknown): boolean => x !== undefined && mayChangeOnTheWay(x as z.ZodType);
  switch (def['type']) {
    case 'string':
    case 'number':
    case 'boolean':
    case 'null':
    case 'literal':
    case 'enum':
    case 'any':
    case 'unknown':
    case 'template_literal':
      return false;
    case 'object':
      return any(Object.values(def['shape'] as object)) || one(def['catchall']);
    case 'array':
      return one(def['element']);
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
    case 'nonoptional':
    case 'catch':
      return one(def['innerType']);
    case 'union':
      return any(def['options']);
    case 'intersection':
      return one(def['left']) || one(def['right']);
    case 'record':
      return one(def['keyType']) || one(def['valueType']);
    case 'tuple':
      return any(def['items']) || one(def['rest']);
    default:
      return true;
  }
}

/**
 * What to publish for a value of a schema that may change it (see `mayChangeOnTheWay`), judged by
 * parsing each candidate as the engine will, after a JSON round trip:
 * - the parsed value, when it parses to itself (`z.coerce`, `.default()`, `.trim()`);
 * - else the value as given, pruned to the fields the parsed one has (what the schema strips stays
 *   out of the stream, and secret paths name the same fields), when it parses to the parsed value
 *   (`z.string().transform(Number)`: its own output would be refused, a scaling one applied twice);
 * - else the parsed value when the engine parses it at all (a transform that adds a random id or a
 *   time gives another value each time: the engine's is the one applied, as before);
 * - else nothing: the engine would refuse both (a `Date` for `z.date()`).
 * Both parses follow the schema's key order, so equal values give equal JSON.
 */
function asTheEngineParses<T>(parsed: T, given: unknown, check: (v: unknown) => Checked<T>): { value: unknown } | undefined {
  let want: string | undefined;
  try {
    want = JSON.stringify(parsed);
  } catch {
    return undefined;
  }
  const atTheEngine = (text: string | undefined): Checked<T> | undefined => {
    try {
      return check(text === undefined ? undefined : JSON.parse(text));
    } catch {
      return undefined;
    }
  };
  const asParsed = atTheEngine(want);
  if (asParsed?.ok && JSON.stringify(asParsed.value) === want) return { value: parsed };
  const pruned = prunedTo(given, parsed);
  let prunedJson: string | undefined;
  try {
    prunedJson = JSON.stringify(pruned);
  } catch {
    prunedJson = undefined;
  }
  const asGiven = prunedJson === undefined ? undefined : atTheEngine(prunedJson);
  if (asGiven?.ok && JSON.stringify(asGiven.value) === want) return { value: pruned };
  if (asParsed?.ok) return { value: parsed };
  return undefined;
}

/** `given` with only the object fields `parsed` has at the same place (arrays element by element). */
function prunedTo(given: unknown, parsed: unknown): unknown {
  if (Array.isArray(given)) return Array.isArray(parsed) && parsed.length === given.length ? given.map((g, i) => prunedTo(g, parsed[i])) : given;
  if (!isPlainObject(given) || !isPlainObject(parsed)) return given;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(given)) if (Object.hasOwn(parsed, k)) out[k] = prunedTo(given[k], parsed[k]);
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

function notJson(what: string): string {
  return (
    `${what} cannot be sent: the engine parses what arrives, from JSON, with the same schema, and neither the schema's output nor the value given parses there to the same value. ` +
    `Either it holds a value JSON cannot carry (a Date for z.date(), a Map, a BigInt: declare it as JSON carries it, for instance z.coerce.date() or z.iso.datetime() for a time), ` +
    `or a transform renames or moves fields (its output does not parse as its input: keep the schema's field names, and rename in the machine)`
  );
}
