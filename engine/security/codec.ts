/**
 * Where secrets are sealed and opened. A workflow's `secrets` paths apply to every payload root of
 * an instance: its input, context and output, event payloads, task inputs, and the same fields
 * inside the record's pending timers, outbox and last history. Everything leaves the process
 * sealed (KV writes, history, task messages, events a client sends) and is opened on the way in,
 * so the machine and activities see plain values and NATS never holds them in the clear. Each
 * root has its own AAD prefix (`<workflow>/<id>/<root>`), so an envelope cannot be moved to
 * another instance, root or field.
 */
import { ErrorCode, JetstateError } from '../errors.js';
import type { HistoryEntry, InstanceRecord } from '../protocol/record.js';
import { EngineEvent, OutboxKind } from '../protocol/events.js';
import { KeyRing, openPaths, resealPaths, sealPaths } from './secrets.js';

type Root = 'input' | 'context' | 'output' | 'event' | 'task';
type Fn = (value: unknown, root: Root) => unknown;
/** Seal, open or reseal one root of one instance (a record also holds its child workflows' snapshots). */
type Op = (workflow: string, id: string, root: Root, value: unknown) => unknown;

export class SecretCodec {
  private readonly paths = new Map<string, readonly string[]>();

  /** `secretPaths` gives the secret paths of a workflow (those of all its known versions). */
  constructor(
    private readonly secretPaths: (workflow: string) => readonly string[],
    readonly ring: KeyRing | undefined,
  ) {}

  /** The secret paths of a workflow; cached once the workflow declares some. */
  pathsOf(workflow: string): readonly string[] {
    let p = this.paths.get(workflow);
    if (!p) {
      p = Object.freeze([...this.secretPaths(workflow)]);
      // A workflow not registered yet has none; it may be registered later.
      if (p.length > 0) this.paths.set(workflow, p);
    }
    return p;
  }

  /** Forgets cached paths (a workflow version was registered). */
  refresh(): void {
    this.paths.clear();
  }

  has(workflow: string): boolean {
    return this.pathsOf(workflow).length > 0;
  }

  private ringFor(workflow: string): KeyRing {
    if (!this.ring) {
      throw new JetstateError(
        ErrorCode.InvalidOptions,
        `workflow '${workflow}' declares secrets, so its values are encrypted; give this client or engine the key ring: secrets: { keyRing: process.env.JETSTATE_KEYS }`,
      );
    }
    return this.ring;
  }

  seal(workflow: string, id: string, root: Root, value: unknown): unknown {
    const paths = this.pathsOf(workflow);
    return paths.length === 0 ? value : sealPaths(value, paths, this.ringFor(workflow), `${workflow}/${id}/${root}`);
  }

  open(workflow: string, id: string, root: Root, value: unknown): unknown {
    const paths = this.pathsOf(workflow);
    return paths.length === 0 ? value : openPaths(value, paths, this.ringFor(workflow), `${workflow}/${id}/${root}`);
  }

  /** An event on its way into an instance's inbox: its secrets sealed where its kind keeps them (see mapEvent). */
  sealEvent(workflow: string, id: string, event: unknown): unknown {
    return this.has(workflow) ? mapEvent(event, (v, root) => this.seal(workflow, id, root, v)) : event;
  }

  openEvent(workflow: string, id: string, event: unknown): unknown {
    return this.has(workflow) ? mapEvent(event, (v, root) => this.open(workflow, id, root, v)) : event;
  }

  sealRecord(record: InstanceRecord): InstanceRecord {
    return this.mapRecord(record, (wf, id, root, v) => this.seal(wf, id, root, v));
  }

  openRecord(record: InstanceRecord): InstanceRecord {
    return this.mapRecord(record, (wf, id, root, v) => this.open(wf, id, root, v));
  }

  /** Envelopes moved to the newest key; `resealed` 0 when nothing moved (the re-encrypt command). */
  resealRecord(record: InstanceRecord): { record: InstanceRecord; resealed: number } {
    let resealed = 0;
    const next = this.mapRecord(record, (wf, id, root, v) => {
      const paths = this.pathsOf(wf);
      if (paths.length === 0) return v;
      const r = resealPaths(v, paths, this.ringFor(wf), `${wf}/${id}/${root}`);
      resealed += r.resealed;
      return r.value;
    });
    return { record: resealed === 0 ? record : next, resealed };
  }

  sealHistory(workflow: string, id: string, entries: HistoryEntry[]): HistoryEntry[] {
    if (!this.has(workflow)) return entries;
    return entries.map((e) => this.mapEntry(e, (v, root) => this.seal(workflow, id, root, v)));
  }

  openHistory(workflow: string, id: string, entries: HistoryEntry[]): HistoryEntry[] {
    if (!this.has(workflow)) return entries;
    return entries.map((e) => this.mapEntry(e, (v, root) => this.open(workflow, id, root, v)));
  }

  private mapEntry(e: HistoryEntry, fn: Fn): HistoryEntry {
    const mapped = mapEvent(e.event, fn, e.kind === 'start');
    return mapped === e.event ? e : { ...e, event: mapped };
  }

  private mapRecord(record: InstanceRecord, op: Op): InstanceRecord {
    // A record also holds what it passes to its child workflows: their secrets count too.
    const children = [...Object.values(record.children), ...record.outbox.filter((o) => o.type === OutboxKind.StartChild).map((o) => o.params as { workflow?: unknown })];
    if (!this.has(record.workflow) && !children.some((c) => typeof c?.workflow === 'string' && this.has(c.workflow))) return record;
    const fn: Fn = (v, root) => op(record.workflow, record.id, root, v);
    const out: InstanceRecord = {
      ...record,
      input: fn(record.input, 'input'),
      snapshot: mapSnapshot(record.snapshot, fn, record.children, op),
      lastHistory: record.lastHistory.map((e) => this.mapEntry(e, fn)),
      tasks: Object.fromEntries(Object.entries(record.tasks).map(([k, t]) => [k, { ...t, input: fn(t.input, 'task') }])),
      timers: Object.fromEntries(Object.entries(record.timers).map(([k, t]) => [k, { ...t, event: fn(t.event, 'event') as typeof t.event }])),
      outbox: record.outbox.map((o) => ({ ...o, event: mapEvent(o.event, fn), params: mapParams(o.type, o.params, fn, op) })),
    };
    if (record.output !== undefined) out.output = fn(record.output, 'output');
    return out;
  }
}

/**
 * Where an event keeps its secrets: a start (`jetstate.start` in history, `xstate.init` as the
 * cause of the first effects) in its input; a task's or child's outcome (`jetstate.task`,
 * `jetstate.child`, and the `xstate.done.actor.*` made from them) in its output, as the outcome
 * message did; any other event in its payload.
 */
function mapEvent(event: unknown, fn: Fn, isStart = false): unknown {
  if (typeof event !== 'object' || event === null || Array.isArray(event)) return fn(event, 'event');
  const e = event as { type?: unknown; input?: unknown; output?: unknown };
  const type = typeof e.type === 'string' ? e.type : '';
  if (isStart || type === 'xstate.init' || type === EngineEvent.Start) return 'input' in e ? { ...e, input: fn(e.input, 'input') } : event;
  if (type === EngineEvent.Task || type === EngineEvent.Child || type.startsWith('xstate.done.actor.')) return 'output' in e ? { ...e, output: fn(e.output, 'output') } : event;
  return fn(event, 'event');
}

/**
 * XState's persisted snapshot holds more than the context: a finished machine's output, and the
 * snapshot of each invoked actor: an activity's input (its task input), a child workflow's first
 * snapshot (its context). A child workflow's is mapped with the child's paths and id, as the
 * child's own record is.
 */
function mapSnapshot(snapshot: Record<string, unknown>, fn: Fn, children: InstanceRecord['children'], op: Op): Record<string, unknown> {
  const out: Record<string, unknown> = { ...snapshot };
  if (snapshot['context'] !== undefined) out['context'] = fn(snapshot['context'], 'context');
  if (snapshot['output'] !== undefined) out['output'] = fn(snapshot['output'], 'output');
  const actors = snapshot['children'];
  if (typeof actors !== 'object' || actors === null || Array.isArray(actors)) return out;
  out['children'] = Object.fromEntries(
    Object.entries(actors as Record<string, unknown>).map(([invokeId, ref]) => {
      const inner = (ref as { snapshot?: unknown } | null)?.snapshot;
      if (typeof inner !== 'object' || inner === null || Array.isArray(inner)) return [invokeId, ref];
      const child = Object.hasOwn(children, invokeId) ? children[invokeId] : undefined;
      let mapped: Record<string, unknown>;
      if (child) {
        mapped = mapSnapshot(inner as Record<string, unknown>, (v, root) => op(child.workflow, child.id, root, v), {}, op);
      } else {
        mapped = { ...(inner as Record<string, unknown>) };
        if (mapped['input'] !== undefined) mapped['input'] = fn(mapped['input'], 'task');
        if (mapped['output'] !== undefined) mapped['output'] = fn(mapped['output'], 'output');
      }
      return [invokeId, { ...(ref as object), snapshot: mapped }];
    }),
  );
  return out;
}

/**
 * A send's resolved event sits in its params: `{ workflow, id, event }`. A child start's params
 * hold the child's input: `{ workflow, id, input, ... }`, mapped as the child's own input is.
 */
function mapParams(type: string, params: unknown, fn: Fn, op: Op): unknown {
  const p = params as { event?: unknown; workflow?: unknown; id?: unknown; input?: unknown } | null;
  if (!p || typeof p !== 'object') return params;
  if (type === OutboxKind.StartChild && typeof p.workflow === 'string' && typeof p.id === 'string' && 'input' in p) return { ...p, input: op(p.workflow, p.id, 'input', p.input) };
  return 'event' in p ? { ...p, event: fn(p.event, 'event') } : params;
}
