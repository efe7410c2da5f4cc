/**
 * What jetstate persists: the instance record in KV and the history entries in the history
 * stream. Both are validated with zod whenever they are read back, so a damaged or foreign
 * record is reported instead of trusted.
 */
import { createHash } from 'node:crypto';
import { matchesState, type StateValue } from 'xstate';
import { z } from 'zod';

export const InstanceStatus = { Running: 'running', Done: 'done', Failed: 'failed', Stopped: 'stopped' } as const;
export type InstanceStatus = (typeof InstanceStatus)[keyof typeof InstanceStatus];

export const HistoryKind = { Start: 'start', Event: 'event', Rejected: 'rejected' } as const;
export type HistoryKind = (typeof HistoryKind)[keyof typeof HistoryKind];

export const HistoryEntrySchema = z.object({
  kind: z.enum(['start', 'event', 'rejected']),
  /** Instance revision after this entry (unchanged for a rejection). */
  revision: z.number().int().nonnegative(),
  /** Events-stream sequence of the event; 0 for the start. */
  seq: z.number().int().nonnegative(),
  event: z.unknown(),
  from: z.unknown().nullable(),
  to: z.unknown(),
  status: z.enum(['running', 'done', 'failed', 'stopped']),
  timeMs: z.number(),
  reason: z.string().optional(),
  /** Who sent the event (or started the instance), when a token was verified; an engine for its own events. */
  identity: z.object({ method: z.string(), subject: z.string(), issuer: z.string(), roles: z.array(z.string()) }).optional(),
});
export type HistoryEntry = z.infer<typeof HistoryEntrySchema>;

export const HistoryMessageSchema = z.object({ entries: z.array(HistoryEntrySchema) });

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
  /** The event to raise when it fires. */
  event: z.object({ type: z.string() }).loose(),
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
  /** Events-stream sequence of the last applied event (0: none yet). */
  lastSeq: z.number().int().nonnegative(),
  createdAtMs: z.number(),
  updatedAtMs: z.number(),
  /** History entries of the last write, published again if a crash cut that publish short. */
  lastHistory: z.array(HistoryEntrySchema),
  /** Pending durable timers by XState send id. */
  timers: z.record(z.string(), TimerRecordSchema).default({}),
  /** Pending tasks by invoke id. */
  tasks: z.record(z.string(), TaskRecordSchema).default({}),
  /** Child workflow instances by invoke id. */
  children: z.record(z.string(), z.object({ workflow: z.string(), id: z.string(), token: z.number().int() })).default({}),
  /** Set on a child workflow instance: where its outcome goes. */
  parent: z.object({ workflow: z.string(), id: z.string(), invokeId: z.string(), token: z.number().int() }).optional(),
  /** W3C trace context of the last transition, which the next one links to. */
  trace: z.object({ traceparent: z.string(), tracestate: z.string().optional() }).optional(),
  /** Custom actions of the last write, run after it (again, if a crash cut their run short). */
  outbox: z.array(z.object({ key: z.string(), type: z.string(), params: z.unknown(), event: z.unknown() })).default([]),
});
export type InstanceRecord = z.infer<typeof InstanceRecordSchema>;

/** A workflow instance as `get()`, `list()` and `waitFor()` show it. */
export interface Instance<TContext = unknown> {
  workflow: string;
  id: string;
  version: number;
  status: InstanceStatus;
  /** XState state value, e.g. `'pending'` or `{ shipping: 'packed' }`. */
  value: StateValue;
  context: TContext;
  output?: unknown;
  error?: string;
  revision: number;
  createdAtMs: number;
  updatedAtMs: number;
  /** Pending durable timers, soonest first. */
  timers: Array<{ id: string; dueAtMs: number }>;
  /** Running tasks (invoked activities); `attempt` and `lastError` once an attempt failed. */
  tasks: Array<{ id: string; src: string; startedAtMs: number; attempt?: number; lastError?: string }>;
  /** True when the instance is in the given state (XState's `matches`). */
  matches(state: StateValue): boolean;
}

export function toInstance<TContext = unknown>(record: InstanceRecord): Instance<TContext> {
  const value = record.snapshot['value'] as StateValue;
  const view: Instance<TContext> = {
    workflow: record.workflow,
    id: record.id,
    version: record.version,
    status: record.status,
    value,
    context: record.snapshot['context'] as TContext,
    revision: record.revision,
    createdAtMs: record.createdAtMs,
    updatedAtMs: record.updatedAtMs,
    timers: Object.entries(record.timers)
      .map(([id, t]) => ({ id, dueAtMs: t.dueAtMs }))
      .sort((a, b) => a.dueAtMs - b.dueAtMs),
    tasks: Object.entries(record.tasks).map(([id, t]) => ({ id, src: t.src, startedAtMs: t.startedAtMs })),
    matches: (state) => matchesState(state, value),
  };
  if (record.output !== undefined) view.output = record.output;
  if (record.error !== undefined) view.error = record.error;
  return view;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** Strict UTF-8 and JSON; throws on either. */
export function decodeJson(bytes: Uint8Array): unknown {
  return JSON.parse(decoder.decode(bytes));
}

/** JSON with object keys sorted, so equal values give equal strings. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) out[k] = (v as Record<string, unknown>)[k];
      return out;
    }
    return v;
  });
}

export function digest(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value) ?? 'undefined').digest('base64url');
}

/** A short, subject- and header-safe digest, for message ids built from free-form names. */
export function shortHash(value: string): string {
  return createHash('sha256').update(value).digest('base64url').slice(0, 16);
}
