/**
 * What jetstate persists: the instance record in KV and the history entries in the history
 * stream. Both are validated with zod whenever they are read back, so a damaged or foreign
 * record is reported instead of trusted.
 */
import { matchesState, type AnyMachineSnapshot, type StateValue } from 'xstate';
import { z } from 'zod';
import { decodeJson } from './json.js';

export const InstanceStatus = { Running: 'running', Done: 'done', Failed: 'failed', Stopped: 'stopped' } as const;
export type InstanceStatus = (typeof InstanceStatus)[keyof typeof InstanceStatus];

export const HistoryKind = { Start: 'start', Event: 'event', Rejected: 'rejected' } as const;
export type HistoryKind = (typeof HistoryKind)[keyof typeof HistoryKind];

export const HistoryEntrySchema = z.object({
  kind: z.enum(['start', 'event', 'rejected']),
  /** Instance revision after this entry (unchanged for a rejection). */
  revision: z.number().int().nonnegative(),
  /** Sequence of the event in its partition's events stream (0 for a start written by jetstate 0.1). */
  seq: z.number().int().nonnegative(),
  event: z.unknown(),
  from: z.unknown().nullable(),
  to: z.unknown(),
  status: z.enum(['running', 'done', 'failed', 'stopped']),
  timeMs: z.number(),
  reason: z.string().optional(),
  /** True when no transition took the event: it was applied (recorded, counted) but changed nothing. */
  unchanged: z.boolean().optional(),
  /**
   * For a task or child outcome (`event` is the internal `jetstate.task` / `jetstate.child`, which
   * replay needs): the event the machine saw, `xstate.done.actor.<id>` or `xstate.error.actor.<id>`.
   */
  actorEvent: z.string().optional(),
  /** Who sent the event (or started the instance), when a token was verified; an engine for its own events. */
  identity: z.object({ method: z.string(), subject: z.string(), issuer: z.string(), roles: z.array(z.string()) }).optional(),
});
/** A history entry as stored; `TypedHistoryEntry` (and `WorkflowHistoryEntry<W>`) is the typed view of it. */
export type HistoryEntry = z.infer<typeof HistoryEntrySchema>;

/** The fields every history entry has besides `kind`, `event`, `from` and `to`. */
type HistoryEntryFields = Omit<HistoryEntry, 'kind' | 'event' | 'from' | 'to'>;

/**
 * A history entry with its event and states typed, discriminated by `kind`: a `'start'` holds the
 * start event `TStart`, an `'event'` an event `TEvent` (applied, or recorded but not applied when
 * it has a `reason`), a `'rejected'` whatever arrived, as far as it could be read (`unknown`: it
 * failed the checks). `from` and `to` are state values (`null` before the instance existed). It
 * is a `HistoryEntry`, with more said about it; `client.history(workflow, id)` returns these
 * for the workflow (`WorkflowHistoryEntry<W>`).
 *
 * Secret fields read by a client without the key ring hold `'[encrypted:<key id>]'` instead of
 * their value; a machine that threw on start leaves `to` as `{}`.
 *
 * @example
 * ```ts
 * for (const e of await client.history(order, 'o-1')) {
 *   if (e.kind === 'event' && e.event.type === 'PAY') console.log(e.event.amount); // a number
 * }
 * ```
 */
export type TypedHistoryEntry<TEvent, TStart, TValue> =
  | (HistoryEntryFields & { kind: typeof HistoryKind.Start; event: TStart; from: null; to: TValue | null })
  | (HistoryEntryFields & { kind: typeof HistoryKind.Event; event: TEvent; from: TValue | null; to: TValue | null })
  | (HistoryEntryFields & { kind: typeof HistoryKind.Rejected; event: unknown; from: TValue | null; to: TValue | null });

/**
 * One history message: the entries of one state write. `secrets`: the instance's inherited secret
 * paths, with which its entries are sealed besides the workflow's declared ones.
 */
export const HistoryMessageSchema = z.object({ entries: z.array(HistoryEntrySchema), secrets: z.array(z.string()).optional() });

export const RECORD_SCHEMA_VERSION = 1;

/**
 * A pending durable timer (an `after` delay or a delayed `raise`): it fires only while it is
 * still here with the same token, so a timer whose state was exited, or re-entered since, changes
 * nothing.
 */
export const TimerRecordSchema = z.object({
  dueAtMs: z.number(),
  /** Revision at which it was scheduled; the fire message must carry the same. */
  token: z.number().int(),
  /** The event to raise when it fires (or, with `to`, to send). */
  event: z.object({ type: z.string() }).loose(),
  /**
   * Scheduling order among the timers its revision scheduled (XState fires timers due at the same
   * moment in the order they were scheduled: by `token`, then `seq`). Absent in records written
   * before it existed (read as 0).
   */
  seq: z.number().int().nonnegative().optional(),
  /**
   * XState's id of a timer kept under another key: a delayed raise scheduled again with the same id
   * keeps the older one (XState does; a cancel reaches only the newest) under a derived key.
   */
  sendId: z.string().optional(),
  /**
   * A delayed `sendTo` a child workflow or `sendParent`: the instance the event goes to when it
   * fires; to a child, `toChild` (its invoke id), so that only this instance's child takes it.
   */
  to: z.object({ workflow: z.string(), id: z.string(), toChild: z.string().optional() }).optional(),
});
export type TimerRecord = z.infer<typeof TimerRecordSchema>;

/** A pending task: an invoked activity. Its result applies only while it is here with this token. */
export const TaskRecordSchema = z.object({
  src: z.string(),
  token: z.number().int(),
  input: z.unknown(),
  startedAtMs: z.number(),
});
export type TaskRecord = z.infer<typeof TaskRecordSchema>;

/**
 * What the delete marker the engine writes for a record carries: where the delete was in the
 * instance's partition stream (its sequence, and when the stream took it). An event at or before
 * it belonged to the deleted instance, or came before it: read again by an owner whose checkpoint
 * lies behind the delete, it is not applied (a start would create the instance again).
 */
export const DeleteNoteSchema = z.object({ deletedSeq: z.number().int().positive(), deletedAtMs: z.number() });
export type DeleteNote = z.infer<typeof DeleteNoteSchema>;

/** The note of a delete marker, or undefined for one without (written by nats.js, or an earlier version). */
export function deleteNoteOf(value: Uint8Array): DeleteNote | undefined {
  if (value.length === 0) return undefined;
  try {
    const parsed = DeleteNoteSchema.safeParse(decodeJson(value));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** True when `e` was in the partition stream at or before the delete that `note` records. */
export function isBeforeDelete(note: DeleteNote | undefined, e: { seq: number; timeMs: number }): boolean {
  // The time too: a partition stream made again numbers its events from 1 again.
  return note !== undefined && e.seq <= note.deletedSeq && e.timeMs <= note.deletedAtMs;
}

/** An instance's `born` wherever it travels (see InstanceRecord): absent for instances created before it existed. */
export const BornSchema = z.number().int().nonnegative().optional();

export const InstanceRecordSchema = z.object({
  schemaVersion: z.literal(RECORD_SCHEMA_VERSION),
  workflow: z.string(),
  version: z.number().int().positive(),
  id: z.string(),
  status: z.enum(['running', 'done', 'failed', 'stopped']),
  /** XState persisted snapshot (`machine.getPersistedSnapshot`). */
  snapshot: z.record(z.string(), z.unknown()),
  input: z.unknown(),
  inputDigest: z.string(),
  output: z.unknown().optional(),
  error: z.string().optional(),
  /** Logical revision: 1 after start, +1 per applied event. */
  revision: z.number().int().positive(),
  /** Sequence, in the instance's partition stream, of the last applied event (its start's, at first). */
  lastSeq: z.number().int().nonnegative(),
  /**
   * The sequence of the start that created this instance, in its partition stream. It tells this
   * instance apart from an earlier one with the same id (deleted, then started again) in every
   * key and message id made for it (see {@link instanceTag}). Absent in records written before it
   * existed, whose keys stay as they were.
   */
  born: BornSchema,
  createdAtMs: z.number(),
  updatedAtMs: z.number(),
  /** History entries of the last write, published again if a crash cut that publish short. */
  lastHistory: z.array(HistoryEntrySchema),
  /** Pending durable timers by XState send id. */
  timers: z.record(z.string(), TimerRecordSchema).default({}),
  /** Pending tasks by invoke id. */
  tasks: z.record(z.string(), TaskRecordSchema).default({}),
  /**
   * Child workflow instances by invoke id. `secrets`: the child's inherited secret paths (values
   * this instance passed it from its own secret paths), which also seal the child's snapshot
   * inside this record's XState snapshot.
   */
  children: z
    .record(z.string(), z.object({ workflow: z.string(), id: z.string(), token: z.number().int(), secrets: z.array(z.string()).optional() }))
    .default({}),
  /** Set on a child workflow instance: where its outcome goes. */
  parent: z.object({ workflow: z.string(), id: z.string(), invokeId: z.string(), token: z.number().int(), born: BornSchema }).optional(),
  /**
   * Inherited secret paths: paths of this instance's input, context and output that hold values
   * its parent declared secret. Sealed like the workflow's own `secrets`; absent for most instances
   * (and in records written before it existed).
   */
  secrets: z.array(z.string()).optional(),
  /** W3C trace context of the last transition, which the next one links to. */
  trace: z.object({ traceparent: z.string(), tracestate: z.string().optional() }).optional(),
  /** The per-instance rate limit's token bucket (over the stream's acceptance times). */
  rate: z.object({ tokens: z.number(), atMs: z.number() }).optional(),
  /**
   * Custom actions of the last write, run after it (again, if a crash cut their run short).
   * `params` is absent for an action given without params (XState gives it `undefined`).
   * `context`: the context an action saw at its place in the step, kept when it differs from the
   * record's (a re-run gets what the first run got).
   */
  outbox: z
    .array(z.object({ key: z.string(), type: z.string(), params: z.unknown().optional(), event: z.unknown(), context: z.unknown().optional() }))
    .default([]),
  /**
   * Per sender instance (`<workflow>.<id>`), the newest of its sends this instance applied, as
   * `[born, revision, index]`: a send run again later than the duplicate window is not applied
   * twice (gate/received.ts). At most 256 senders, those heard from last.
   */
  received: z.record(z.string(), z.tuple([z.number(), z.number(), z.number()])).optional(),
  /**
   * Invoke ids under which a child workflow was started: a later child under the same invoke id
   * gets `<parent id>_<invoke id>-<token>` (see define/child.ts). Absent until the first child.
   */
  invoked: z.array(z.string()).optional(),
});
export type InstanceRecord = z.infer<typeof InstanceRecordSchema>;

/**
 * Parses a stored record, keeping the fields this version does not know at every level of it
 * (the schema alone would drop them): a record written by a newer engine and then by this one,
 * during a rolling upgrade, keeps the newer engine's fields (an instance's `born` was one).
 */
export function parseStoredRecord(raw: unknown): { success: true; data: InstanceRecord } | { success: false; error: z.ZodError } {
  const parsed = InstanceRecordSchema.safeParse(raw);
  return parsed.success ? { success: true, data: withUnknownFields(parsed.data, raw) as InstanceRecord } : parsed;
}

/** `parsed` with the keys only `raw` has added back, in objects and same-length arrays alike. */
function withUnknownFields(parsed: unknown, raw: unknown): unknown {
  if (parsed === raw || typeof parsed !== 'object' || typeof raw !== 'object' || parsed === null || raw === null) return parsed;
  if (Array.isArray(parsed) || Array.isArray(raw)) {
    if (!Array.isArray(parsed) || !Array.isArray(raw) || parsed.length !== raw.length) return parsed;
    let out: unknown[] | undefined;
    parsed.forEach((p, i) => {
      const v = withUnknownFields(p, raw[i]);
      if (v !== p) (out ??= [...parsed])[i] = v;
    });
    return out ?? parsed;
  }
  const p = parsed as Record<string, unknown>;
  let out: Record<string, unknown> | undefined;
  for (const [k, r] of Object.entries(raw)) {
    // JSON.parse makes `__proto__` an own key; setting it would swap the prototype of the record.
    if (k === '__proto__') continue;
    const known = Object.hasOwn(p, k);
    const v = known ? withUnknownFields(p[k], r) : r;
    if (!known || v !== p[k]) (out ??= { ...p })[k] = v;
  }
  return out ?? parsed;
}

/**
 * What `matches()` accepts for a state value type: a top-level state name, or an object that
 * descends into some of the states (the same rule as XState's typed `snapshot.matches`).
 */
export type StateMatch<TValue> = TValue extends string
  ? TValue
  : [keyof TValue] extends [never]
    ? never
    : keyof TValue | { [K in keyof TValue]?: StateMatch<NonNullable<TValue[K]>> };

/**
 * A workflow instance as `get()`, `list()` and `waitFor()` show it. The client types it from the
 * workflow (`WorkflowInstance<W>`): `context`, `value` and `output` as the machine declares them,
 * `matches()` only for states the machine has, `hasTag()` only for its tags.
 *
 * Secret fields read by a client without the key ring hold `'[encrypted:<key id>]'` instead of
 * their value.
 */
export interface Instance<
  TContext = unknown,
  TValue extends StateValue = StateValue,
  TOutput = unknown,
  TTag extends string = string,
  TMatch = StateMatch<TValue>,
  TEvent extends { type: string } = { type: string; [key: string]: unknown },
> {
  workflow: string;
  id: string;
  version: number;
  /** `'pending'`: a start accepted but not applied yet (no engine got to it). */
  status: InstanceStatus | 'pending';
  /** XState state value, e.g. `'pending'` or `{ shipping: 'packed' }` (`{}` when the machine threw on start). */
  value: TValue;
  context: TContext;
  /** The machine's output, once the instance is done. */
  output?: TOutput;
  error?: string;
  revision: number;
  createdAtMs: number;
  updatedAtMs: number;
  /** Pending durable timers, soonest first. */
  timers: Array<{ id: string; dueAtMs: number }>;
  /**
   * Why no engine applies this instance's events now (its version is not registered in the engine
   * that owns it, its record cannot be read, or no live engine serves its workflow); they wait.
   */
  parked?: string;
  /** Running tasks (invoked activities); `attempt` and `lastError` once an attempt failed. */
  tasks: Array<{ id: string; src: string; startedAtMs: number; attempt?: number; lastError?: string }>;
  /**
   * Running child workflow instances, by invoke id: `instanceId` is the child's id
   * (`<parent id>_<invoke id>`, or `<parent id>_<invoke id>-<token>` for one invoked again).
   */
  children: Array<{ id: string; workflow: string; instanceId: string }>;
  /**
   * True when the instance is in the given state (XState's `matches`): `'paid'`, or
   * `{ shipping: 'packed' }` for a nested one.
   */
  matches(state: TMatch): boolean;
  /** True when a state the instance is in carries this tag (`tags` in the machine's states). */
  hasTag(tag: TTag): boolean;
  /**
   * XState's `snapshot.can(event)`: true when the state the instance is in has a transition that
   * takes `event` (one with a target or actions whose guard passes). Guards are evaluated with
   * the stored context, here, in the reader (they must be pure); false once the instance is
   * finished (done, failed or stopped): it takes no more events.
   */
  can(event: TEvent): boolean;
  /**
   * XState's `snapshot.getMeta()`: the `meta` of the states the instance is in, by state id (from
   * the machine of the version that wrote the record).
   */
  getMeta(): Record<string, unknown>;
}

/**
 * The view of a record. `tagsOf` gives the tags of a state value (they are not stored: they come
 * from the machine's state nodes); without it `hasTag()` is false for every tag. `resolve` gives
 * XState's snapshot of a stored value and context (`machine.resolveState`), for `can()` and
 * `getMeta()`; without it `can()` is false and `getMeta()` empty.
 */
export function toInstance(
  record: InstanceRecord,
  tagsOf?: (value: StateValue) => Iterable<string>,
  resolve?: (value: StateValue, context: unknown) => AnyMachineSnapshot,
): Instance {
  const value = record.snapshot['value'] as StateValue;
  let tags: Set<string> | undefined;
  let resolved: AnyMachineSnapshot | null | undefined;
  // Computed on first use: most readers never ask. A value the machine cannot resolve (a machine
  // that threw on start stores `{}`) answers false and {}.
  const snapshot = (): AnyMachineSnapshot | null => {
    if (resolved === undefined) {
      try {
        resolved = resolve ? resolve(value, record.snapshot['context']) : null;
      } catch {
        resolved = null;
      }
    }
    return resolved;
  };
  const view: Instance = {
    workflow: record.workflow,
    id: record.id,
    version: record.version,
    status: record.status,
    value,
    context: record.snapshot['context'],
    revision: record.revision,
    createdAtMs: record.createdAtMs,
    updatedAtMs: record.updatedAtMs,
    // Soonest first, as XState fires them (ties in scheduling order); a timer kept under a derived key shows its XState id.
    timers: Object.entries(record.timers)
      .sort(([, a], [, b]) => a.dueAtMs - b.dueAtMs || a.token - b.token || (a.seq ?? 0) - (b.seq ?? 0))
      .map(([id, t]) => ({ id: t.sendId ?? id, dueAtMs: t.dueAtMs })),
    tasks: Object.entries(record.tasks).map(([id, t]) => ({ id, src: t.src, startedAtMs: t.startedAtMs })),
    children: Object.entries(record.children).map(([id, c]) => ({ id, workflow: c.workflow, instanceId: c.id })),
    matches: (state) => matchesState(state as StateValue, value),
    hasTag: (tag) => (tags ??= new Set(tagsOf ? tagsOf(value) : [])).has(tag),
    can: (event) => {
      if (record.status !== 'running') return false;
      try {
        return snapshot()?.can(event as never) ?? false;
      } catch {
        return false;
      }
    },
    getMeta: () => {
      try {
        return (snapshot()?.getMeta() ?? {}) as Record<string, unknown>;
      } catch {
        return {};
      }
    },
  };
  if (record.output !== undefined) view.output = record.output;
  if (record.error !== undefined) view.error = record.error;
  return view;
}

/** What names an instance in the keys and messages made for it. */
export interface InstanceRef {
  workflow: string;
  id: string;
  born?: number | undefined;
}

/**
 * The instance's id in its keys and message ids (effects' idempotency keys, tasks, timers,
 * outcomes, history): `<id>@<born>`, or the plain id for a record without `born`. An instance
 * deleted and started again under its id gets other keys, so that the streams' deduplication,
 * Step Functions' execution names and the receivers of idempotency keys do not take its work for
 * the earlier one's.
 */
export function instanceTag(instance: { id: string; born?: number | undefined }): string {
  return instance.born === undefined ? instance.id : `${instance.id}@${instance.born}`;
}

/** `{ born }` to spread into a message or event, or nothing when there is none. */
export function bornOf(instance: { born?: number | undefined }): { born?: number } {
  return instance.born === undefined ? {} : { born: instance.born };
}

/** An effect's stable idempotency key: `<workflow>.<id>@<born>.<revision>`, and `.<index>` when given. */
export function effectKey(workflow: string, instance: { id: string; born?: number | undefined }, revision: number, index?: number): string {
  const key = `${workflow}.${instanceTag(instance)}.${revision}`;
  return index === undefined ? key : `${key}.${index}`;
}
