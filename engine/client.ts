/**
 * The client: starts instances, sends events, reads state and history. It runs no workers; an
 * engine (which is a client too) applies the events.
 */
import { randomUUID } from 'node:crypto';
import { context } from '@opentelemetry/api';
import { DeliverPolicy } from '@nats-io/jetstream';
import { z } from 'zod';
import type { WorkflowDefinition, WorkflowEvent, WorkflowInput } from './define/definition.js';
import { ErrorCode, JetstateError, fail } from './errors.js';
import { checkName, partitionOf } from './protocol/names.js';
import { ClientOptionsSchema, parseOptions, type ClientOptions } from './options.js';
import { InstanceRecordSchema, decodeJson, encodeJson, toInstance, type HistoryEntry, type Instance, type InstanceRecord, type InstanceStatus } from './protocol/record.js';
import { openRuntime, type Runtime } from './store/runtime.js';
import { readHistory } from './store/history.js';
import { createInstance } from './effects/start.js';
import { readTaskProgress } from './effects/tasks.js';
import { verifyInstance, type VerifyReport } from './step/verify.js';
import { SpanKind, carrierOf, carrierOfActive, failSpan, traceHeaders } from './telemetry/telemetry.js';
import { redactEnvelopes } from './security/redact.js';
import { admit, check, limitsOf, summarize } from './gate/admission.js';
import { headers as natsHeaders } from '@nats-io/nats-core';

/** The NATS header that carries a sender's token to the engine. */
export const TOKEN_HEADER = 'Jetstate-Token';

export interface StartOptions<W extends WorkflowDefinition> {
  /** Instance id; the same id with the same input returns the existing instance. Random if absent. */
  id?: string;
  input: WorkflowInput<W>;
  /** The starter's token (an OIDC JWT or an AWS IAM token), verified and checked against `permissions.start`. */
  token?: string;
}

export interface SendOptions {
  /** Deduplicates retries of the same send within the stream's 2-minute window. */
  idempotencyKey?: string;
  /** The sender's token (an OIDC JWT, or an AWS IAM token from `createAwsIamToken`); the engine verifies it and records who sent the event. */
  token?: string;
}

/** A rejected event kept in the dead-letter stream. */
export interface DeadLetter {
  workflow: string;
  id: string;
  /** Its sequence in the events stream. */
  seq: number;
  subject: string;
  reason: string;
  timeMs: number;
  /** Payload size in bytes (the payload itself is not returned). */
  size: number;
}

export interface SendResult {
  /** Sequence of the event in the events stream. */
  seq: number;
  /** True when the stream already had an event with this idempotency key. */
  duplicate: boolean;
}

export interface ListFilter {
  status?: InstanceStatus;
  /** Only instances in this state (XState `matches`). */
  state?: string | Record<string, unknown>;
}

export interface WaitForOptions {
  timeoutMs: number;
}

const KNOWN_CAP = 100_000;

/**
 * A connection to a jetstate namespace without workers.
 *
 * @example
 * ```ts
 * const client = await createClient({ servers: 'nats://127.0.0.1:4222' });
 * await client.start(order, { id: 'o-1', input: { orderId: 'o-1', amount: 10 } });
 * await client.send(order, 'o-1', { type: 'PAY', amount: 10 });
 * await client.close();
 * ```
 */
export class Client implements AsyncDisposable {
  protected readonly rt: Runtime;
  private readonly known = new Set<string>();
  private closing: Promise<void> | undefined;
  private resolveClosed!: () => void;
  private readonly closedPromise = new Promise<void>((r) => (this.resolveClosed = r));

  protected constructor(rt: Runtime) {
    this.rt = rt;
  }

  static async connect(options: ClientOptions): Promise<Client> {
    const resolved = parseOptions(ClientOptionsSchema, 'createClient', options);
    // A client reads the signing key only when a start must sign (see EngineSigner.ready).
    return new Client(await openRuntime(resolved, { signingKey: 'when-needed' }));
  }

  /** The namespace's partition count (fixed when it was first created). */
  get partitions(): number {
    return this.rt.partitions;
  }

  /**
   * Starts an instance, idempotent by id. Validates the input against the workflow's schema;
   * the same id with a different input is an `INSTANCE_CONFLICT` error.
   */
  async start<W extends WorkflowDefinition>(workflow: W, options: StartOptions<W>): Promise<Instance> {
    this.checkOpen();
    const runner = this.rt.registry.runnerFor(workflow);
    const id = options.id === undefined ? randomUUID() : checkName(`workflow '${workflow.name}': instance id`, options.id);
    const identity = // A start is judged here only (the record is written by this client): strictly.
    check(await admit(this.rt, workflow, { kind: 'start' }, options.token), 'nothing was started');
    const record = await createInstance(this.rt, workflow, runner, id, options.input, undefined, context.active(), identity && summarize(identity));
    this.remember(this.rt.names.instanceKey(workflow.name, id));
    return toInstance(record);
  }

  /**
   * Sends an event; returns once the events stream has durably accepted it. The type must be one
   * the workflow declares and the payload must match its schema, else an `INVALID_EVENT` error
   * and nothing is written. Sending to a missing instance is an `INSTANCE_NOT_FOUND` error.
   */
  async send<W extends WorkflowDefinition>(workflow: W, id: string, event: WorkflowEvent<W>, options: SendOptions = {}): Promise<SendResult> {
    this.checkOpen();
    const tel = this.rt.telemetry;
    const parent = context.active();
    const type = typeof (event as { type?: unknown } | null)?.type === 'string' ? (event as { type: string }).type : 'unknown';
    const span = tel.startSpan(`jetstate.send ${workflow.name}`, SpanKind.PRODUCER, { 'jetstate.workflow': workflow.name, 'jetstate.instance.id': id, 'jetstate.event.type': type }, parent);
    try {
      checkName(`workflow '${workflow.name}': instance id`, id);
      const data = validateEvent(workflow, id, event);
      this.rt.registry.add(workflow);
      check(await admit(this.rt, workflow, { kind: 'event', type: data.type }, options.token, 'client'), 'nothing was sent');
      const body = encodeJson(this.rt.security.codec.seal(workflow.name, id, 'event', data));
      const { maxEventBytes } = limitsOf(this.rt, workflow);
      if (body.length > maxEventBytes) {
        fail(ErrorCode.LimitExceeded, `[limit.event_size] workflow '${workflow.name}' instance '${id}': event '${data.type}' is ${body.length} bytes, over the limit of ${maxEventBytes}; send a reference (an object-store key) instead of the data; nothing was sent`);
      }
      const key = this.rt.names.instanceKey(workflow.name, id);
      if (!this.known.has(key)) {
        const entry = await this.rt.instances.get(key);
        if (!entry || entry.operation !== 'PUT') {
          fail(ErrorCode.InstanceNotFound, `workflow '${workflow.name}' instance '${id}' does not exist; start it first; the event was not sent`);
        }
        this.remember(key);
      }
      const subject = this.rt.names.eventSubject(partitionOf(workflow.name, id, this.rt.partitions), workflow.name, id);
      let headers = traceHeaders(carrierOf(span) ?? carrierOfActive(parent));
      if (options.token) (headers ??= natsHeaders()).set(TOKEN_HEADER, options.token);
      const ack = await this.rt.js.publish(subject, body, { msgID: options.idempotencyKey ?? randomUUID(), ...(headers ? { headers } : {}) });
      span.setAttribute('jetstate.event.seq', ack.seq);
      return { seq: ack.seq, duplicate: ack.duplicate };
    } catch (e) {
      failSpan(span, e);
      throw e;
    } finally {
      span.end();
    }
  }

  /**
   * Re-encrypts the secrets of every instance of a workflow under the newest key of the ring, so
   * older keys can leave it. Records are rewritten with compare-and-set (a concurrent write wins and
   * the record is read again). History messages keep the key they were written with.
   */
  async reencrypt<W extends WorkflowDefinition>(workflow: W): Promise<{ records: number; resealed: number }> {
    this.checkOpen();
    this.rt.registry.add(workflow);
    const { codec } = this.rt.security;
    if (!codec.ring) fail(ErrorCode.InvalidOptions, `reencrypt needs the key ring with the new key: secrets: { keyRing } (or JETSTATE_KEYS for the CLI)`);
    let records = 0;
    let resealed = 0;
    for await (const key of await this.rt.instances.keys(`${workflow.name}.>`)) {
      for (let attempt = 0; attempt < 20; attempt++) {
        const entry = await this.rt.instances.get(key);
        if (!entry || entry.operation !== 'PUT') break;
        const parsed = InstanceRecordSchema.safeParse(decodeJson(entry.value));
        if (!parsed.success) {
          this.rt.logger.warn(`reencrypt: record '${key}' is unreadable; left untouched`);
          break;
        }
        const r = codec.resealRecord(parsed.data);
        if (r.resealed === 0) break;
        try {
          await this.rt.instances.update(key, encodeJson(r.record), entry.revision);
          records++;
          resealed += r.resealed;
          break;
        } catch (e) {
          if (!/wrong last sequence/i.test((e as Error).message)) throw e;
        }
      }
    }
    return { records, resealed };
  }

  /**
   * The newest rejected events of the namespace (the dead-letter stream), newest last, with the
   * reason each was refused. Payloads are left out: they may be hostile or hold secrets.
   */
  async deadLetters(options: { limit?: number } = {}): Promise<DeadLetter[]> {
    this.checkOpen();
    const limit = Math.max(1, Math.min(10_000, options.limit ?? 100));
    const info = await this.rt.jsm.streams.info(this.rt.names.deadLetterStream);
    if (info.state.messages === 0) return [];
    const from = Math.max(info.state.first_seq, info.state.last_seq - limit + 1);
    const consumer = await this.rt.js.consumers.get(this.rt.names.deadLetterStream, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from });
    const out: DeadLetter[] = [];
    try {
      while (out.length < limit) {
        const batch = await consumer.fetch({ max_messages: Math.min(512, limit - out.length), expires: 1_000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          const [, , workflow = '?', id = '?'] = m.subject.split('.');
          out.push({
            workflow,
            id,
            seq: Number(m.headers?.get('Jetstate-Seq') ?? 0),
            subject: m.headers?.get('Jetstate-Subject') ?? '',
            reason: m.headers?.get('Jetstate-Reason') ?? '',
            timeMs: Number(m.timestampNanos / 1_000_000n),
            size: m.data.length,
          });
          if (m.seq >= info.state.last_seq) return out;
        }
        if (got === 0) break;
      }
      return out;
    } finally {
      await consumer.delete().catch(() => {});
    }
  }

  /** The instance, or null when it does not exist. */
  async get<W extends WorkflowDefinition>(workflow: W, id: string): Promise<Instance | null> {
    this.checkOpen();
    // Known here, its secret paths are opened (or redacted) in what is read.
    this.rt.registry.add(workflow);
    const record = await this.readRecord(workflow.name, checkName('instance id', id));
    if (!record) return null;
    const instance = toInstance(record);
    // Running tasks that failed an attempt show how far they got.
    await Promise.all(
      instance.tasks.map(async (t) => {
        const progress = await readTaskProgress(this.rt, record.workflow, record.id, t.id, record.tasks[t.id]!.token);
        if (progress) Object.assign(t, progress);
      }),
    );
    return instance;
  }

  /** Every instance of a workflow, optionally filtered by status or state. */
  async *list<W extends WorkflowDefinition>(workflow: W, filter: ListFilter = {}): AsyncIterable<Instance> {
    this.checkOpen();
    this.rt.registry.add(workflow);
    const keys: string[] = [];
    for await (const k of await this.rt.instances.keys(`${workflow.name}.>`)) keys.push(k);
    keys.sort();
    for (let i = 0; i < keys.length; i += 64) {
      const records = await Promise.all(keys.slice(i, i + 64).map((k) => this.readRecord(workflow.name, k.slice(workflow.name.length + 1))));
      for (const r of records) {
        if (!r) continue;
        const inst = toInstance(r);
        if (filter.status && inst.status !== filter.status) continue;
        if (filter.state !== undefined && !inst.matches(filter.state as never)) continue;
        yield inst;
      }
    }
  }

  /**
   * Resolves with the instance once `predicate` holds, watching its KV key (no polling). Rejects
   * with `TIMEOUT` after `timeoutMs`, or at once when the instance finished without matching.
   */
  async waitFor<W extends WorkflowDefinition>(workflow: W, id: string, predicate: (instance: Instance) => boolean, options: WaitForOptions): Promise<Instance> {
    this.checkOpen();
    this.rt.registry.add(workflow);
    const key = this.rt.names.instanceKey(workflow.name, checkName('instance id', id));
    const deadline = Date.now() + options.timeoutMs;
    let last: Instance | undefined;
    let lastError: Error | undefined;
    // A watch that fails or ends early (NATS restarting, a leader election) is opened again until the deadline.
    while (Date.now() < deadline) {
      let watcher: Awaited<ReturnType<typeof this.rt.instances.watch>>;
      try {
        watcher = await this.rt.instances.watch({ key });
      } catch (e) {
        lastError = e as Error;
        await new Promise((r) => setTimeout(r, Math.max(0, Math.min(250, deadline - Date.now()))));
        continue;
      }
      const timer = setTimeout(() => watcher.stop(), Math.max(0, deadline - Date.now()));
      try {
        for await (const e of watcher) {
          if (e.operation !== 'PUT') continue;
          const record = this.parseRecord(workflow.name, id, e.value);
          last = toInstance(record);
          if (predicate(last)) return last;
          if (last.status !== 'running') {
            fail(ErrorCode.Timeout, `workflow '${workflow.name}' instance '${id}' is ${last.status} in state ${JSON.stringify(last.value)} and will not reach the awaited state`);
          }
        }
      } catch (e) {
        if (e instanceof JetstateError) throw e;
        lastError = e as Error;
      } finally {
        clearTimeout(timer);
        watcher.stop();
      }
    }
    if (!last && lastError) {
      throw new JetstateError(ErrorCode.Timeout, `workflow '${workflow.name}' instance '${id}': could not watch it within ${options.timeoutMs} ms: ${lastError.message}`, { cause: lastError });
    }
    fail(
      ErrorCode.Timeout,
      last
        ? `workflow '${workflow.name}' instance '${id}' did not reach the awaited state within ${options.timeoutMs} ms; it is in ${JSON.stringify(last.value)} at revision ${last.revision}`
        : `workflow '${workflow.name}' instance '${id}' did not appear within ${options.timeoutMs} ms; start it first`,
    );
  }

  /** The applied transitions and rejections of an instance, in order, from the history stream. */
  async history<W extends WorkflowDefinition>(workflow: W, id: string): Promise<HistoryEntry[]> {
    this.checkOpen();
    this.rt.registry.add(workflow);
    checkName('instance id', id);
    return this.historyThrough(workflow.name, id, (await this.readRecord(workflow.name, id))?.revision ?? 0);
  }

  /**
   * History is published right after the state write: wait briefly for the tail of a write that
   * `get()` or `waitFor()` already showed.
   */
  private async historyThrough(workflow: string, id: string, revision: number): Promise<HistoryEntry[]> {
    const { codec } = this.rt.security;
    for (let attempt = 0; ; attempt++) {
      const stored = await readHistory(this.rt, workflow, id);
      const entries = codec.ring ? codec.openHistory(workflow, id, stored) : (redactEnvelopes(stored) as HistoryEntry[]);
      const top = entries.reduce((m, e) => Math.max(m, e.revision), 0);
      if (top >= revision || attempt >= 20) return entries;
      await new Promise((r) => setTimeout(r, 25 * (attempt + 1)));
    }
  }

  /** Replays an instance's history from its start and reports whether it reproduces the stored snapshot. */
  async verify<W extends WorkflowDefinition>(workflow: W, id: string): Promise<VerifyReport> {
    this.checkOpen();
    this.rt.registry.add(workflow);
    const record = await this.readRecord(workflow.name, checkName('instance id', id));
    if (!record) fail(ErrorCode.InstanceNotFound, `workflow '${workflow.name}' instance '${id}' does not exist`);
    const found = this.rt.registry.find(record.workflow, record.version);
    if (!found) {
      fail(ErrorCode.WorkflowNotRegistered, `workflow '${workflow.name}' instance '${id}': stored version ${record.version} is not registered; pass it in 'workflows'`);
    }
    return verifyInstance(found.def, found.runner, record, await this.historyThrough(workflow.name, id, record.revision));
  }

  /** Closes the connection if jetstate opened it. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown().finally(() => this.resolveClosed());
    return this.closing;
  }

  /** Resolves when the client has closed; never rejects. */
  closed(): Promise<void> {
    return this.closedPromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  protected async shutdown(): Promise<void> {
    if (this.rt.ownsConnection) await this.rt.nc.drain().catch(() => {});
  }

  protected checkOpen(): void {
    if (this.closing) fail(ErrorCode.Closed, 'this jetstate client is closed; create a new one');
  }

  protected async readRecord(workflow: string, id: string): Promise<InstanceRecord | null> {
    const entry = await this.rt.instances.get(this.rt.names.instanceKey(workflow, id));
    if (!entry || entry.operation !== 'PUT') return null;
    return this.parseRecord(workflow, id, entry.value);
  }

  protected parseRecord(workflow: string, id: string, bytes: Uint8Array): InstanceRecord {
    let raw: unknown;
    try {
      raw = decodeJson(bytes);
    } catch (e) {
      throw new JetstateError(ErrorCode.RecordUnreadable, `workflow '${workflow}' instance '${id}': stored record is not JSON; it was left untouched`, { cause: e });
    }
    const parsed = InstanceRecordSchema.safeParse(raw);
    if (!parsed.success) {
      fail(ErrorCode.RecordUnreadable, `workflow '${workflow}' instance '${id}': stored record does not match the record schema; it was left untouched:\n${z.prettifyError(parsed.error)}`);
    }
    return this.reveal(parsed.data);
  }

  /** Secrets opened with the key ring; without it, shown as `[encrypted:<key id>]`. */
  private reveal(record: InstanceRecord): InstanceRecord {
    const { codec } = this.rt.security;
    return codec.ring ? codec.openRecord(record) : (redactEnvelopes(record) as InstanceRecord);
  }

  private remember(key: string): void {
    if (this.known.size >= KNOWN_CAP) this.known.clear();
    this.known.add(key);
  }
}

/** Checks an event against the workflow's declared events; returns the event to publish. */
export function validateEvent(workflow: WorkflowDefinition, id: string, event: unknown): { type: string } & Record<string, unknown> {
  const where = `workflow '${workflow.name}' instance '${id}'`;
  if (typeof event !== 'object' || event === null || Array.isArray(event)) {
    fail(ErrorCode.InvalidEvent, `${where}: an event must be an object like { type: 'PAY', ... }; nothing was sent`);
  }
  const { type, ...payload } = event as Record<string, unknown>;
  if (typeof type !== 'string') fail(ErrorCode.InvalidEvent, `${where}: the event has no string 'type'; nothing was sent`);
  const schema = workflow.events[type];
  if (!schema || !Object.hasOwn(workflow.events, type)) {
    fail(ErrorCode.InvalidEvent, `${where}: event type '${type}' is not declared; declared types: ${Object.keys(workflow.events).join(', ') || '(none)'}; nothing was sent`);
  }
  const parsed = schema.safeParse(payload);
  if (!parsed.success) {
    fail(ErrorCode.InvalidEvent, `${where}: payload of '${type}' is not valid; nothing was sent:\n${z.prettifyError(parsed.error)}`);
  }
  return { ...(parsed.data as Record<string, unknown>), type };
}


/**
 * Connects a client.
 *
 * @example
 * ```ts
 * await using client = await createClient({ servers: process.env.NATS_URL });
 * ```
 */
export function createClient(options: ClientOptions): Promise<Client> {
  return Client.connect(options);
}
