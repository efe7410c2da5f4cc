/**
 * What is compared, in one shape for both sides: state value, context, status, output, pending
 * timers (ids in firing order), running child workflows, and what the snapshot helpers answer
 * (`hasTag`, `getMeta`, `can`). jetstate's side comes from its stored records, the reference's
 * from XState's snapshot.
 */
import type { AnyMachineSnapshot, AnyStateMachine } from 'xstate';
import { canonicalJson } from '../../engine/protocol/json.js';
import type { InstanceRecord } from '../../engine/protocol/record.js';
import type { EffectCall } from './effects.js';
import type { ModelRun, ModelTimer } from './model.js';
import type { Divergence, SentEvent } from './types.js';

export type Status = 'active' | 'done' | 'error' | 'stopped';

export interface ChildObservation {
  value: unknown;
  context: unknown;
  status: Status;
}

export interface Observation {
  value: unknown;
  context: unknown;
  status: Status;
  output: unknown;
  /** Pending timers of the instance, as normalized ids, soonest first. */
  timers: string[];
  children: Record<string, ChildObservation>;
  /** Tags, meta and `can(event)` for the alphabet's events. */
  derived: { tags: string[]; meta: unknown; can: Record<string, boolean> };
}

const json = (v: unknown): unknown => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));

/**
 * A timer id as both sides name it: `after` delays and explicit ids as they are; a delayed raise
 * without an id gets a random id in XState and a positional one in jetstate, so both become
 * `~<event type>`.
 */
export function timerName(id: string, event: string): string {
  if (id.startsWith('jetstate.delayed.')) return `~${event}`;
  if (/^[0-9a-z]{8,}$/.test(id)) return `~${event}`;
  return id;
}

const statusOfRecord = (s: InstanceRecord['status']): Status => (s === 'running' ? 'active' : s === 'failed' ? 'error' : s);

function derivedOf(snapshot: AnyMachineSnapshot, alphabet: readonly SentEvent[]): Observation['derived'] {
  const can: Record<string, boolean> = {};
  for (const e of alphabet) {
    const k = canonicalJson(e);
    try {
      can[k] = snapshot.can(e as never);
    } catch (err) {
      can[k] = false;
    }
  }
  let meta: unknown;
  try {
    meta = json(snapshot.getMeta());
  } catch {
    meta = 'getMeta threw';
  }
  return { tags: [...(snapshot.tags ?? [])].sort(), meta, can };
}

/** The reference's observation. */
export function observeModel(model: ModelRun, childIds: readonly string[], alphabet: readonly SentEvent[]): Observation {
  const s = model.snapshot();
  const children: Record<string, ChildObservation> = {};
  for (const id of childIds) {
    const c = model.child(id);
    if (c && c.status === 'active') children[id] = { value: json(c.value), context: json(c.context), status: c.status };
  }
  return {
    value: json(s.value),
    context: json(s.context),
    status: s.status as Status,
    output: json(s.output),
    timers: model.clock
      .pending()
      .filter((t: ModelTimer) => t.source === '')
      .map((t) => timerName(t.id, t.event)),
    children,
    derived: derivedOf(s, alphabet),
  };
}

/** jetstate's observation, from its records (the instance and its running children). */
export function observeRecord(
  machine: AnyStateMachine,
  record: InstanceRecord,
  kids: Record<string, InstanceRecord | null>,
  alphabet: readonly SentEvent[],
): Observation {
  const value = record.snapshot['value'];
  const context = record.snapshot['context'];
  const children: Record<string, ChildObservation> = {};
  for (const [id, kid] of Object.entries(kids)) {
    if (kid && kid.status === 'running') children[id] = { value: kid.snapshot['value'], context: kid.snapshot['context'], status: 'active' };
  }
  let derived: Observation['derived'];
  try {
    derived = derivedOf(machine.resolveState({ value: value as never, context: context as never }) as AnyMachineSnapshot, alphabet);
  } catch (e) {
    derived = { tags: [], meta: `resolveState threw: ${(e as Error).message}`, can: {} };
  }
  // In firing order: due time, then scheduling order (revision, then place in the step); a timer
  // kept under a derived key (a delayed raise scheduled again with its id) by its XState id.
  const timers = Object.entries(record.timers)
    .sort(([, a], [, b]) => a.dueAtMs - b.dueAtMs || a.token - b.token || (a.seq ?? 0) - (b.seq ?? 0))
    .map(([id, t]) => timerName(t.sendId ?? id, t.event.type));
  return { value, context, status: statusOfRecord(record.status), output: record.output, timers, children, derived };
}

const same = (a: unknown, b: unknown): boolean => canonicalJson(a) === canonicalJson(b);
const show = (v: unknown): string => {
  const s = canonicalJson(v) ?? 'undefined';
  return s.length > 400 ? `${s.slice(0, 400)}…` : s;
};

/** Differences between the reference (`want`) and jetstate (`got`). */
export function compareObservations(want: Observation, got: Observation, at: string): Divergence[] {
  const out: Divergence[] = [];
  const check = (kind: Divergence['kind'], a: unknown, b: unknown, what: string = kind): void => {
    if (!same(a, b)) out.push({ kind, at, detail: `${what}: XState ${show(a)}, jetstate ${show(b)}` });
  };
  check('value', want.value, got.value);
  check('status', want.status, got.status);
  check('context', want.context, got.context);
  if (want.status === 'done' || got.status === 'done') check('output', want.output, got.output);
  check('timers', want.timers, got.timers, 'pending timers');
  check('children', want.children, got.children);
  check('derived', want.derived, got.derived, 'tags/meta/can');
  return out;
}

const callShape = (c: EffectCall): unknown => ({ kind: c.kind, name: c.name, params: c.params, context: c.context, event: c.event });

/**
 * Side effects: the reference's calls in order against jetstate's. jetstate runs an action at
 * least once: calls with the same idempotency key are one call, and each run of it must be given
 * what the first was. Emitted events are compared in their own order: they reach the harness over
 * NATS (core, best effort), so their order against the other calls, recorded in the engine, is
 * the harness's, not the engine's.
 */
export function compareEffects(want: EffectCall[], got: EffectCall[]): Divergence[] {
  const emits = (c: EffectCall): boolean => c.kind === 'emit';
  return [
    ...compareCalls(
      want.filter((c) => !emits(c)),
      got.filter((c) => !emits(c)),
    ),
    ...compareCalls(want.filter(emits), got.filter(emits)),
  ];
}

function compareCalls(want: EffectCall[], got: EffectCall[]): Divergence[] {
  const out: Divergence[] = [];
  const byKey = new Map<string, EffectCall>();
  const distinct: EffectCall[] = [];
  for (const c of got) {
    const first = c.key === undefined ? undefined : byKey.get(c.key);
    if (!first) {
      if (c.key !== undefined) byKey.set(c.key, c);
      distinct.push(c);
    } else if (!same(callShape(first), callShape(c))) {
      out.push({
        kind: 'effects',
        at: 'end',
        detail: `action '${c.name}' (${c.key}) ran again with other arguments: first ${show(callShape(first))}, again ${show(callShape(c))}`,
      });
    }
  }
  const a = want.map(callShape);
  const b = distinct.map(callShape);
  if (!same(a, b)) {
    // Name the first call that differs, then the counts.
    let i = 0;
    while (i < a.length && i < b.length && same(a[i], b[i])) i++;
    out.push({
      kind: 'effects',
      at: 'end',
      detail: `side effects differ from call ${i + 1}: XState ${show(a.slice(i, i + 3))} (${a.length} calls), jetstate ${show(b.slice(i, i + 3))} (${b.length} calls)`,
    });
  }
  return out;
}
