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
import type { HistoryEntry, InstanceRecord } from '../record.js';
import type { Registry } from '../runtime.js';
import { CHILD_EVENT } from '../child.js';
import { TASK_EVENT } from '../step.js';
import { redactEnvelopes } from './redact.js';
import { KeyRing, openPaths, resealPaths, sealPaths } from './secrets.js';

type Root = 'input' | 'context' | 'output' | 'event' | 'task';
type Fn = (value: unknown, root: Root) => unknown;

export class SecretCodec {
  private readonly paths = new Map<string, readonly string[]>();

  constructor(
    private readonly registry: Registry,
    readonly ring: KeyRing | undefined,
  ) {}

  /** The secret paths of a workflow: those of all its registered versions. */
  pathsOf(workflow: string): readonly string[] {
    let p = this.paths.get(workflow);
    if (!p) {
      const all = new Set<string>();
      for (const { def } of this.registry.versions(workflow)) for (const s of def.security.secrets) all.add(s);
      p = Object.freeze([...all]);
      // Only cache once the workflow is known: a later registration may add paths.
      if (this.registry.versions(workflow).length > 0) this.paths.set(workflow, p);
    }
    return p;
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

  sealRecord(record: InstanceRecord): InstanceRecord {
    return this.mapRecord(record, (v, root) => this.seal(record.workflow, record.id, root, v));
  }

  openRecord(record: InstanceRecord): InstanceRecord {
    return this.mapRecord(record, (v, root) => this.open(record.workflow, record.id, root, v));
  }

  /** Envelopes moved to the newest key; `resealed` 0 when nothing moved (the re-encrypt command). */
  resealRecord(record: InstanceRecord): { record: InstanceRecord; resealed: number } {
    let resealed = 0;
    const paths = this.pathsOf(record.workflow);
    if (paths.length === 0) return { record, resealed };
    const ring = this.ringFor(record.workflow);
    const next = this.mapRecord(record, (v, root) => {
      const r = resealPaths(v, paths, ring, `${record.workflow}/${record.id}/${root}`);
      resealed += r.resealed;
      return r.value;
    });
    return { record: next, resealed };
  }

  sealHistory(workflow: string, id: string, entries: HistoryEntry[]): HistoryEntry[] {
    if (!this.has(workflow)) return entries;
    return entries.map((e) => this.mapEntry(e, (v, root) => this.seal(workflow, id, root, v)));
  }

  openHistory(workflow: string, id: string, entries: HistoryEntry[]): HistoryEntry[] {
    if (!this.has(workflow)) return entries;
    return entries.map((e) => this.mapEntry(e, (v, root) => this.open(workflow, id, root, v)));
  }

  /** For display without the key: every envelope shown as `[encrypted:<key id>]`. */
  static redact<T>(value: T): T {
    return redactEnvelopes(value) as T;
  }

  private mapEntry(e: HistoryEntry, fn: Fn): HistoryEntry {
    const event = e.event as { type?: unknown; input?: unknown; output?: unknown } | null;
    let mapped: unknown;
    if (e.kind === 'start' && event && typeof event === 'object') {
      // The start's entry carries the input.
      mapped = { ...event, input: fn(event.input, 'input') };
    } else if (event && typeof event === 'object' && (event.type === TASK_EVENT || event.type === CHILD_EVENT)) {
      // A task's or child's outcome carries its secrets in `output`, as the outcome message did.
      mapped = 'output' in event ? { ...event, output: fn(event.output, 'output') } : event;
    } else {
      mapped = fn(e.event, 'event');
    }
    return mapped === e.event ? e : { ...e, event: mapped };
  }

  private mapRecord(record: InstanceRecord, fn: Fn): InstanceRecord {
    if (!this.has(record.workflow)) return record;
    const snapshot = record.snapshot['context'] === undefined ? record.snapshot : { ...record.snapshot, context: fn(record.snapshot['context'], 'context') };
    const out: InstanceRecord = {
      ...record,
      input: fn(record.input, 'input'),
      snapshot,
      lastHistory: record.lastHistory.map((e) => this.mapEntry(e, fn)),
      tasks: Object.fromEntries(Object.entries(record.tasks).map(([k, t]) => [k, { ...t, input: fn(t.input, 'task') }])),
      timers: Object.fromEntries(Object.entries(record.timers).map(([k, t]) => [k, { ...t, event: fn(t.event, 'event') as typeof t.event }])),
      outbox: record.outbox.map((o) => ({ ...o, event: fn(o.event, 'event'), params: mapParams(o.params, fn) })),
    };
    if (record.output !== undefined) out.output = fn(record.output, 'output');
    return out;
  }
}

/** A send's resolved event sits in its params: `{ workflow, id, event }`. */
function mapParams(params: unknown, fn: Fn): unknown {
  const p = params as { event?: unknown } | null;
  return p && typeof p === 'object' && 'event' in p ? { ...p, event: fn(p.event, 'event') } : params;
}
