/**
 * Where secrets are sealed and opened. A workflow's `secrets` paths apply to every payload root of
 * an instance: its input, context and output, event payloads, task inputs, and the same fields
 * inside the record's pending timers, outbox and last history. Everything leaves the process
 * sealed (KV writes, history, task messages, events a client sends) and is opened on the way in,
 * so the machine and activities see plain values and NATS never holds them in the clear. Each
 * root has its own AAD prefix (`<workflow>/<id>/<root>`), so an envelope cannot be moved to
 * another instance, root or field.
 *
 * An instance may also have inherited paths (inherited-secrets.ts): the paths of a child's data
 * that hold values its parent declared secret. They apply to that instance's roots like declared
 * ones, and every sealed thing that used them carries them: the child's start event and record
 * (`secrets`), the parent's child entry and child-start outbox entry (`secrets`), and history
 * messages (`secrets`), so each can be opened (and re-encrypted) on its own.
 */
import { KeyRingMissingError } from '../errors.js';
import type { HistoryEntry, InstanceRecord } from '../protocol/record.js';
import { EngineEvent, OutboxKind } from '../protocol/events.js';
import { holdsSealed, isSealed, KeyRing, mapSecretPaths, openPaths, resealPaths, sealPaths, secretAad, type SealedValue } from './secrets.js';
import { childSecretPaths, isInheritedPaths, mergeSecretPaths } from './inherited-secrets.js';

type Root = 'input' | 'context' | 'output' | 'event' | 'task';
/** Paths an instance inherited (see inherited-secrets.ts), beside its workflow's declared ones. */
type Inherited = readonly string[] | undefined;
/** Maps one root; `extra`: paths the event that holds it names for it (see eventSecrets). */
type Fn = (value: unknown, root: Root, extra?: Inherited) => unknown;
/** What a record is mapped for. */
type Mode = 'seal' | 'open' | 'reseal';
/** Seal, open or reseal one root of one instance (a record also holds its child workflows' snapshots). */
type Op = (workflow: string, id: string, root: Root, value: unknown, inherited: Inherited) => unknown;

/** Most merged path lists kept; one is shared by every instance with the same declared and inherited paths. */
const MERGED_CACHE_MAX = 4_096;

export class SecretCodec {
  private readonly paths = new Map<string, readonly string[]>();
  private readonly merged = new Map<string, readonly string[]>();
  /** Paths of workflows this process does not register, as the namespace publishes them (see {@link learn}). */
  private readonly learned = new Map<string, ReadonlySet<string>>();

  /** `secretPaths` gives the secret paths of a workflow (those of all its known versions). */
  constructor(
    private readonly secretPaths: (workflow: string) => readonly string[],
    readonly ring: KeyRing | undefined,
  ) {}

  /** The secret paths of a workflow (none is cached too: {@link refresh} when a version is registered). */
  pathsOf(workflow: string): readonly string[] {
    let p = this.paths.get(workflow);
    if (!p) {
      const learned = this.learned.get(workflow);
      p = Object.freeze([...mergeSecretPaths(this.secretPaths(workflow), learned && [...learned])]);
      this.paths.set(workflow, p);
    }
    return p;
  }

  /**
   * Adds the secret paths the namespace publishes for a workflow (its engines' declarations) to
   * what this process seals for it: a send to a workflow served by another service. Paths are
   * only ever added, so a value once sealed here stays sealed.
   */
  learn(workflow: string, published: readonly string[]): void {
    const known = this.learned.get(workflow);
    if (published.every((p) => known?.has(p))) return;
    this.learned.set(workflow, new Set([...(known ?? []), ...published]));
    this.paths.delete(workflow);
    this.merged.clear();
  }

  /** Forgets cached paths (a workflow version was registered). */
  refresh(): void {
    this.paths.clear();
    this.merged.clear();
  }

  /**
   * The paths sealed in an instance's roots: its workflow's declared paths, merged with those it
   * inherited (none for most instances: then the declared list itself).
   */
  pathsFor(workflow: string, inherited?: Inherited): readonly string[] {
    const declared = this.pathsOf(workflow);
    if (!inherited || inherited.length === 0) return declared;
    // Keyed by both lists: a version registered later (more declared paths) makes another key.
    const key = `${declared.join('\n')}\u0000${inherited.join('\n')}`;
    let p = this.merged.get(key);
    if (!p) {
      p = Object.freeze([...mergeSecretPaths(declared, inherited)]);
      if (this.merged.size >= MERGED_CACHE_MAX) this.merged.clear();
      this.merged.set(key, p);
    }
    return p;
  }

  /**
   * The paths of `output`, about to leave an instance (a task's outcome, or the instance's own
   * output for its parent), that hold a value of one of the instance's secret paths in its input,
   * context or `roots`: the outcome event names them (`secrets`) so they stay sealed on the way.
   */
  outputSecrets(record: InstanceRecord, roots: readonly unknown[], output: unknown): string[] {
    const paths = this.pathsFor(record.workflow, record.secrets);
    if (paths.length === 0 || output === undefined) return [];
    return childSecretPaths(paths, [record.input, record.snapshot['context'], ...roots], [output]);
  }

  has(workflow: string, inherited?: Inherited): boolean {
    return this.pathsOf(workflow).length > 0 || (inherited !== undefined && inherited.length > 0);
  }

  private ringFor(workflow: string): KeyRing {
    return this.ring ?? this.needRing(workflow);
  }

  private needRing(workflow: string): never {
    throw new KeyRingMissingError(
      `workflow '${workflow}' declares secrets (or holds secrets its parent passed it), so its values are encrypted; give this client or engine the key ring: secrets: { keyRing: process.env.JETSTATE_KEYS }`,
    );
  }

  seal(workflow: string, id: string, root: Root, value: unknown, inherited?: Inherited): unknown {
    const paths = this.pathsFor(workflow, inherited);
    // Without a ring, only a value found at a path needs one: an event with nothing there goes as it is.
    return paths.length === 0 ? value : sealPaths(value, paths, this.ring ?? this.noRing(workflow), `${workflow}/${id}/${root}`);
  }

  /** Stands for the ring this process was not given: using it throws {@link KeyRingMissingError}. */
  private noRing(workflow: string): KeyRing {
    const missing = (): never => this.needRing(workflow);
    return { seal: missing, open: missing } as unknown as KeyRing;
  }

  open(workflow: string, id: string, root: Root, value: unknown, inherited?: Inherited): unknown {
    const paths = this.pathsFor(workflow, inherited);
    // Without a ring, only an envelope found needs one: a value nobody sealed opens as it is.
    return paths.length === 0 ? value : openPaths(value, paths, this.ring ?? this.noRing(workflow), `${workflow}/${id}/${root}`);
  }

  /** Moves envelopes of older keys to the primary one; counts them in `count`. */
  private reseal(workflow: string, id: string, root: Root, value: unknown, inherited: Inherited, count: { n: number }): unknown {
    const paths = this.pathsFor(workflow, inherited);
    if (paths.length === 0) return value;
    const r = resealPaths(value, paths, this.ringFor(workflow), `${workflow}/${id}/${root}`);
    count.n += r.resealed;
    return r.value;
  }

  /**
   * An event on its way into an instance's inbox: its secrets sealed where its kind keeps them (see
   * mapEvent). An engine's start or outcome may name more paths of its payload (`secrets`, see
   * eventSecrets).
   */
  sealEvent(workflow: string, id: string, event: unknown): unknown {
    return this.has(workflow, eventSecrets(event)) ? mapEvent(event, (v, root, extra) => this.seal(workflow, id, root, v, extra)) : event;
  }

  openEvent(workflow: string, id: string, event: unknown): unknown {
    return this.has(workflow, eventSecrets(event)) ? mapEvent(event, (v, root, extra) => this.open(workflow, id, root, v, extra)) : event;
  }

  sealRecord(record: InstanceRecord): InstanceRecord {
    return this.mapRecord(record, (wf, id, root, v, inh) => this.seal(wf, id, root, v, inh), 'seal');
  }

  openRecord(record: InstanceRecord): InstanceRecord {
    return this.mapRecord(record, (wf, id, root, v, inh) => this.open(wf, id, root, v, inh), 'open');
  }

  /** Envelopes moved to the newest key; `resealed` 0 when nothing moved (the re-encrypt command). */
  resealRecord(record: InstanceRecord): { record: InstanceRecord; resealed: number } {
    const count = { n: 0 };
    const next = this.mapRecord(record, (wf, id, root, v, inh) => this.reseal(wf, id, root, v, inh, count), 'reseal', count);
    return { record: count.n === 0 ? record : next, resealed: count.n };
  }

  sealHistory(workflow: string, id: string, entries: HistoryEntry[], inherited?: Inherited): HistoryEntry[] {
    if (!this.has(workflow, inherited) && !entries.some((e) => eventSecrets(e.event))) return entries;
    return entries.map((e) => this.mapEntry(e, (v, root, extra) => this.seal(workflow, id, root, v, union(inherited, extra))));
  }

  openHistory(workflow: string, id: string, entries: HistoryEntry[], inherited?: Inherited): HistoryEntry[] {
    if (!this.has(workflow, inherited) && !entries.some((e) => eventSecrets(e.event))) return entries;
    return entries.map((e) => this.mapEntry(e, (v, root, extra) => this.open(workflow, id, root, v, union(inherited, extra))));
  }

  /** History entries with envelopes of older keys moved to the primary one (the re-encrypt command). */
  resealHistory(workflow: string, id: string, entries: HistoryEntry[], inherited?: Inherited): { entries: HistoryEntry[]; resealed: number } {
    if (!this.has(workflow, inherited) && !entries.some((e) => eventSecrets(e.event))) return { entries, resealed: 0 };
    const count = { n: 0 };
    const next = entries.map((e) => this.mapEntry(e, (v, root, extra) => this.reseal(workflow, id, root, v, union(inherited, extra), count)));
    return { entries: count.n === 0 ? entries : next, resealed: count.n };
  }

  private mapEntry(e: HistoryEntry, fn: Fn): HistoryEntry {
    const mapped = mapEvent(e.event, fn, e.kind === 'start');
    return mapped === e.event ? e : { ...e, event: mapped };
  }

  private mapRecord(record: InstanceRecord, op: Op, mode: Mode, count = { n: 0 }): InstanceRecord {
    // A record also holds what it passes to its child workflows: their secrets count too.
    const children = [
      ...Object.values(record.children),
      ...record.outbox.filter((o) => o.type === OutboxKind.StartChild).map((o) => o.params as { workflow?: unknown; secrets?: unknown }),
    ];
    const childHas = (c: { workflow?: unknown; secrets?: unknown } | null | undefined): boolean =>
      typeof c?.workflow === 'string' && this.has(c.workflow, isInheritedPaths(c.secrets) ? c.secrets : undefined);
    const eventsName = record.lastHistory.some((e) => eventSecrets(e.event)) || record.outbox.some((o) => eventSecrets(o.event));
    const sendOf = (o: InstanceRecord['outbox'][number]): Target | undefined => (o.type === OutboxKind.Send ? targetOf(record, o.params) : undefined);
    // Sends waiting to go to another workflow with secret paths: sealed for it too (see sealFor).
    const waitingSends = [
      ...record.outbox.map((o) => ({ to: sendOf(o), event: (o.params as { event?: unknown } | null)?.event })),
      ...Object.values(record.timers).map((t) => ({ to: targetOf(record, t.to), event: t.event })),
    ];
    const forOthers =
      this.ring !== undefined && waitingSends.some((w) => w.to && (mode === 'seal' ? this.pathsOf(w.to.workflow).length > 0 : holdsSealed(w.event)));
    if (!this.has(record.workflow, record.secrets) && !children.some(childHas) && !eventsName && !forOthers) return record;
    const inherited = record.secrets;
    const fn: Fn = (v, root, extra) => op(record.workflow, record.id, root, v, union(inherited, extra));
    const waiting = (to: Target | undefined): Fn => {
      if (!to) return fn;
      if (mode === 'seal') return (v, root, extra) => this.sealFor(to, root, extra, fn(v, root, extra), v);
      if (mode === 'open') return (v, root, extra) => this.openFor(to, root, extra, this.openWaiting(record, root, v, union(inherited, extra), to));
      return (v, root, extra) => this.resealFor(to, root, extra, fn(v, root, extra), count);
    };
    const out: InstanceRecord = {
      ...record,
      input: fn(record.input, 'input'),
      snapshot: mapSnapshot(record.snapshot, fn, record.children, op),
      lastHistory: record.lastHistory.map((e) => this.mapEntry(e, fn)),
      tasks: Object.fromEntries(Object.entries(record.tasks).map(([k, t]) => [k, { ...t, input: fn(t.input, 'task') }])),
      timers: Object.fromEntries(
        Object.entries(record.timers).map(([k, t]) => [k, { ...t, event: waiting(targetOf(record, t.to))(t.event, 'event') as typeof t.event }]),
      ),
      // An action's own context (outbox `context`, when it differs from the record's) is a context too.
      outbox: record.outbox.map((o) => ({
        ...o,
        event: mapEvent(o.event, fn),
        params: mapParams(o.type, o.params, waiting(sendOf(o)), op),
        ...(o.context !== undefined ? { context: fn(o.context, 'context') } : {}),
      })),
    };
    if (record.output !== undefined) out.output = fn(record.output, 'output');
    return out;
  }

  /**
   * A send waiting in a record for another instance (an outbox send, a delayed send's timer),
   * `sealed` with the sender's paths already (`plain` before): the receiving workflow's paths
   * sealed too, as the receiver's inbox has them (bound to the receiver: `<workflow>/<id>/<root>`).
   * A value the sender's layer sealed whole is left so; one it sealed parts of is sealed whole
   * from its plain form. This engine opens both layers when it loads the record and seals the
   * event for the receiver again when it delivers it; an engine that does not know this layer (an
   * older one, in a rolling upgrade) opens the sender's, whose paths never reach inside this one,
   * and passes its envelopes on as they are: the receiver opens them.
   */
  private sealFor(to: Target, root: Root, extra: Inherited, sealed: unknown, plain: unknown): unknown {
    return this.mapReceiverLayer(to, root, extra, sealed, (v, aad, ring, path) => {
      if (v === undefined || isSealed(v)) return v;
      if (!holdsSealed(v)) return ring.seal(v, aad);
      // Its plain form, found by the same path (a key with a dot in it could mislead the walk: then left as it is).
      const whole = valueAt(plain, path);
      return whole === undefined || holdsSealed(whole) ? v : ring.seal(whole, aad);
    });
  }

  /**
   * The sender's layer of a waiting send opened. An envelope at one of the sender's paths that the
   * receiver's layer sealed (a path the sender declared only since) is opened as the receiver's.
   */
  private openWaiting(record: InstanceRecord, root: Root, value: unknown, inherited: Inherited, to: Target): unknown {
    const paths = this.pathsFor(record.workflow, inherited);
    if (paths.length === 0) return value;
    const ring = this.ring ?? this.noRing(record.workflow);
    const prefix = `${record.workflow}/${record.id}/${root}`;
    return mapSecretPaths(value, paths, (v, path) => {
      if (!isSealed(v)) return v;
      try {
        return ring.open(v, secretAad(prefix, path));
      } catch (e) {
        const theirs = openedOr(ring, v, secretAad(receiverPrefix(to, root), path));
        if (theirs !== NOT_OPENED) return theirs;
        throw e;
      }
    });
  }

  /** The receiver's layer of a waiting send opened (an envelope that does not open as the receiver's is passed on as it is). */
  private openFor(to: Target, root: Root, extra: Inherited, value: unknown): unknown {
    return this.mapReceiverLayer(to, root, extra, value, (v, aad, ring) => {
      if (!isSealed(v)) return v;
      const opened = openedOr(ring, v, aad);
      return opened === NOT_OPENED ? v : opened;
    });
  }

  /** The receiver's layer of a waiting send moved to the primary key (the sender's is moved by `reseal`). */
  private resealFor(to: Target, root: Root, extra: Inherited, event: unknown, count: { n: number }): unknown {
    return this.mapReceiverLayer(to, root, extra, event, (v, aad, ring) => {
      if (!isSealed(v) || v.k === ring.primaryId) return v;
      const opened = openedOr(ring, v, aad);
      if (opened === NOT_OPENED) return v;
      count.n++;
      return ring.seal(opened, aad);
    });
  }

  /** Maps the values at the receiving workflow's paths of a waiting send, each with its receiver-bound AAD (nothing without a ring or paths). */
  private mapReceiverLayer(
    to: Target,
    root: Root,
    extra: Inherited,
    value: unknown,
    fn: (v: unknown, aad: string, ring: KeyRing, path: string) => unknown,
  ): unknown {
    const ring = this.ring;
    const paths = this.pathsFor(to.workflow, extra);
    if (!ring || paths.length === 0) return value;
    const prefix = receiverPrefix(to, root);
    return mapSecretPaths(value, paths, (v, path) => fn(v, secretAad(prefix, path), ring, path));
  }
}

/** The instance a waiting send goes to. */
type Target = { workflow: string; id: string };

/** Where a send waiting in `record` goes (an outbox send's params, a timer's `to`); undefined for one to the instance itself. */
function targetOf(record: InstanceRecord, target: unknown): Target | undefined {
  const t = target as { workflow?: unknown; id?: unknown } | null | undefined;
  if (!t || typeof t.workflow !== 'string' || typeof t.id !== 'string') return undefined;
  if (t.workflow === record.workflow && t.id === record.id) return undefined;
  return { workflow: t.workflow, id: t.id };
}

/** What an event's envelopes at `root` are bound to in the receiver's inbox (see `sealEvent`). */
const receiverPrefix = (to: Target, root: Root): string => `${to.workflow}/${to.id}/${root}`;

/** The value at a dotted path (as `mapSecretPaths` names them: keys and array indexes). */
function valueAt(value: unknown, path: string): unknown {
  let v = value;
  for (const seg of path.split('.')) v = typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[seg] : undefined;
  return v;
}

const NOT_OPENED = Symbol('not opened');

/** The envelope's value if it opens under `aad` with this ring, else {@link NOT_OPENED}. */
function openedOr(ring: KeyRing, envelope: SealedValue, aad: string): unknown {
  try {
    return ring.open(envelope, aad);
  } catch {
    return NOT_OPENED;
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
  const extra = eventSecrets(event);
  if (isStart || type === 'xstate.init' || type === EngineEvent.Start) return 'input' in e ? { ...e, input: fn(e.input, 'input', extra) } : event;
  if (type === EngineEvent.Task || type === EngineEvent.Child || type.startsWith('xstate.done.actor.'))
    return 'output' in e ? { ...e, output: fn(e.output, 'output', extra) } : event;
  // An event the instance sent itself (sendTo self) is wrapped: its payload is the inner event's.
  if (type === EngineEvent.Self) return 'event' in e ? { ...e, event: fn((e as { event?: unknown }).event, 'event') } : event;
  return fn(event, 'event');
}

/**
 * The paths an engine's event names for its payload (`secrets`): a child's start for its input
 * (the paths it inherits), a task's or child's outcome (and the `xstate.done.actor.*` event made
 * from it) for its output (the paths holding values of the instance's secret paths). The gate
 * takes such an event only with an engine's signature.
 */
export function eventSecrets(event: unknown): Inherited {
  const e = event as { type?: unknown; secrets?: unknown } | null;
  if (typeof e !== 'object' || e === null || !isInheritedPaths(e.secrets)) return undefined;
  const t = e.type;
  return t === EngineEvent.Start || t === EngineEvent.Task || t === EngineEvent.Child || (typeof t === 'string' && t.startsWith('xstate.done.actor.'))
    ? e.secrets
    : undefined;
}

/** Two path lists as one (the codec merges the result with the declared paths). */
function union(a: Inherited, b: Inherited): Inherited {
  if (!b || b.length === 0) return a;
  if (!a || a.length === 0) return b;
  return [...new Set([...a, ...b])];
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
        mapped = mapSnapshot(inner as Record<string, unknown>, (v, root) => op(child.workflow, child.id, root, v, child.secrets), {}, op);
      } else {
        // An activity's input and output; the context of a machine it invoked counts as its own.
        mapped = mapSnapshot(inner as Record<string, unknown>, fn, {}, op);
        if (mapped['input'] !== undefined) mapped['input'] = fn(mapped['input'], 'task');
      }
      return [invokeId, { ...(ref as object), snapshot: mapped }];
    }),
  );
  return out;
}

/**
 * A send's resolved event sits in its params: `{ workflow, id, event }` (a send to the instance
 * itself wraps its event: `{ type: 'jetstate.self', event }`). A child start's params
 * hold the child's input: `{ workflow, id, input, ... }`, mapped as the child's own input is.
 */
function mapParams(type: string, params: unknown, fn: Fn, op: Op): unknown {
  const p = params as { event?: unknown; workflow?: unknown; id?: unknown; input?: unknown; secrets?: unknown } | null;
  if (!p || typeof p !== 'object') return params;
  if (type === OutboxKind.StartChild && typeof p.workflow === 'string' && typeof p.id === 'string' && 'input' in p) {
    return { ...p, input: op(p.workflow, p.id, 'input', p.input, isInheritedPaths(p.secrets) ? p.secrets : undefined) };
  }
  return 'event' in p ? { ...p, event: mapEvent(p.event, fn) } : params;
}
