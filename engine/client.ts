/**
 * The client: starts instances, sends events, reads state and history. It runs no workers; an
 * engine (which is a client too) applies the events.
 */
import { longTimeout, MAX_TIMER_MS, waitAtMost } from './clock.js';
import { randomUUID } from 'node:crypto';
import { context } from '@opentelemetry/api';
import { DeliverPolicy } from '@nats-io/jetstream';
import { createInbox } from '@nats-io/nats-core';
import { z } from 'zod';
import type { KV, KvEntry } from '@nats-io/kv';
import type { AnyMachineSnapshot, AnyStateMachine, StateValue } from 'xstate';
import { isWorkflowDefinition, type WorkflowDefinition, type WorkflowEvent, type WorkflowInput } from './define/definition.js';
import { checkKeys } from './define/keys.js';
import type { StateValueOf, WorkflowHistoryEntry, WorkflowInstance } from './define/instance-types.js';
import { checkStateTest, tagsOf } from './define/states.js';
import { ErrorCode, JetstateError, fail } from './errors.js';
import { checkName, partitionOf, shardOf } from './protocol/names.js';
import { EngineEvent } from './protocol/events.js';
import { ClientOptionsSchema, parseOptions, type ClientOptions } from './options.js';
import {
  HistoryKind,
  HistoryMessageSchema,
  InstanceStatus,
  toInstance,
  type HistoryEntry,
  type Instance,
  type InstanceRecord,
  type StateMatch,
} from './protocol/record.js';
import { decodeJson } from './protocol/json.js';
import { closeConnection, ensureWorkflowStreams, openRuntime, type Runtime } from './store/runtime.js';
import { readHistory, withJournal } from './store/history.js';
import { parseRecord, readRecord } from './store/records.js';
import { encodeInboxEvent, publishToInstance } from './store/inbox.js';
import { learnSecretPaths } from './store/secret-paths.js';
import { isTimeout } from './store/nats-errors.js';
import { reencryptWorkflows, type ReencryptReport } from './store/reencrypt.js';
import { readTaskProgress } from './effects/tasks.js';
import { verifyInstance, type VerifyReport } from './step/verify.js';
import { startInstance } from './step/step.js';
import { childWorkflowsOf } from './define/child.js';
import type { MachineRunner } from './step/runner.js';
import { SpanKind, carrierOf, carrierOfActive, failSpan } from './telemetry/telemetry.js';
import { redactEnvelopes } from './security/redact.js';
import { admit, check, limitsOf } from './gate/admission.js';
import { checkEventToSend, checkInput, checkInputToSend } from './gate/validate.js';

export interface StartOptions<W extends WorkflowDefinition> {
  /** Instance id; the same id with the same input returns the existing instance. Random if absent. */
  id?: string;
  input: WorkflowInput<W>;
  /** The starter's token (an OIDC JWT or an AWS IAM token), verified and checked against `permissions.start`. */
  token?: string;
  /** Wait for the engine to create the instance (default), or return once the start is accepted. */
  wait?: boolean;
  /** How long to wait for the engine's answer (default 10 s); then the start stays queued and `start()` returns it pending. */
  timeoutMs?: number;
}

/** The engine's answer to a start. */
interface StartAnswer {
  outcome: 'created' | 'exists' | 'conflict' | 'rejected';
  reason?: string;
  revision?: number;
}

const DEFAULT_START_WAIT_MS = 10_000;
/** A client reads the secret paths the namespace publishes for a workflow at most this often (see learnPaths). */
const PUBLISHED_PATHS_MAX_AGE_MS = 1_000;
/** How long the client trusts what it read of a partition's lease. */
const LEASE_CACHE_MS = 2_000;
/** Slack for the server's clock against this one when judging a lease's last renewal. */
const LEASE_CLOCK_SKEW_MS = 5_000;
/** What a client reads of a lease: how long it lasts unrenewed. */
const LeaseViewSchema = z.object({ ttlMs: z.number().positive().default(5_000) });

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

export interface ControlOptions {
  /** Why: recorded in the history and the instance's `error`. */
  reason?: string;
  /** The sender's token, checked against the workflow's `permissions`. */
  token?: string;
}

export interface SendResult {
  /** Sequence of the event in the events stream. */
  seq: number;
  /** True when the stream already had an event with this idempotency key. */
  duplicate: boolean;
}

/** Which instances `list()` yields; `TState` is what `matches()` takes for the workflow. */
export interface ListFilter<TState = string | Record<string, unknown>> {
  status?: InstanceStatus;
  /**
   * Only instances in this state (XState `matches`): a state name, or an object for a nested one.
   * A state the workflow does not have is an `INVALID_OPTIONS` error.
   */
  state?: TState;
}

export interface WaitForOptions {
  /** How long to wait before a `TIMEOUT` error; default 30 s. */
  timeoutMs?: number;
}

const DEFAULT_WAIT_FOR_MS = 30_000;

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
  private readonly warnedUnserved = new Set<string>();
  private readonly leases = new Map<string, { atMs: number; renewedAtMs: number | undefined; ttlMs: number }>();
  private closing: Promise<void> | undefined;
  /** Watches of waitFor calls in progress, stopped when the client closes. */
  private readonly waits = new Set<() => void>();
  private resolveClosed!: () => void;
  private readonly closedPromise = new Promise<void>((r) => (this.resolveClosed = r));

  protected constructor(rt: Runtime) {
    this.rt = rt;
  }

  static async connect(options: ClientOptions): Promise<Client> {
    const resolved = parseOptions(ClientOptionsSchema, 'createClient', options);
    // A client reads the signing key only when a start must sign (see EngineSigner.ready).
    return new Client(await openRuntime(resolved));
  }

  /**
   * The KV buckets that hold the namespace's instance records (spread by partition; fixed when the
   * namespace was first created), for tools that watch every record, such as the web view.
   */
  get recordBuckets(): readonly string[] {
    return Array.from({ length: this.rt.records.shards }, (_, s) => this.rt.names.instancesShard(s));
  }

  /** The bucket that holds one instance's record. */
  recordBucketOf(workflow: string, id: string): string {
    return this.rt.names.instancesShard(shardOf(workflow, id, this.rt.partitions, this.rt.records.shards));
  }

  /** The namespace's partition count (fixed when it was first created). */
  get partitions(): number {
    return this.rt.partitions;
  }

  /**
   * Starts an instance, idempotent by id. The start goes through the instance's inbox like any
   * event: the engine that owns the instance checks it (input schema, token, `permissions.start`)
   * and creates the record. The input is checked here first, so an invalid one fails at once.
   *
   * By default `start()` waits for the engine's answer and returns the new (or existing)
   * instance; the same id with a different input is an `INSTANCE_CONFLICT` error (secret fields
   * are not compared: a start that differs only in them returns the existing instance). With
   * `wait: false`, or when no engine answers within `timeoutMs`, it returns once the start is
   * durably accepted, with status `'pending'`: the engine creates the instance when it gets to it
   * (a warning says when no live engine serves the workflow).
   */
  async start<W extends WorkflowDefinition>(workflow: W, options: StartOptions<W>): Promise<WorkflowInstance<W>> {
    this.checkCall('start', workflow, options, ['id', 'input', 'token', 'wait', 'timeoutMs'], true);
    if (options.timeoutMs !== undefined) checkMs('start', 'timeoutMs', options.timeoutMs);
    if (options.wait !== undefined && typeof options.wait !== 'boolean') fail(ErrorCode.InvalidOptions, 'start: wait must be true or false');
    const runner = this.rt.registry.runnerFor(workflow);
    const id = options.id === undefined ? randomUUID() : checkName(`workflow '${workflow.name}': instance id`, options.id);
    const input = checkInputToSend(workflow, id, options.input);
    if (!input.ok) fail(ErrorCode.InvalidInput, `${input.reason}; nothing was started`);
    const learning = this.learnPaths(workflow.name);
    check(await admit(this.rt.security.verifier, workflow, { kind: 'start' }, options.token, 'client'), 'nothing was started');
    const event = { type: EngineEvent.Start, input: input.wire, version: workflow.version };
    const tel = this.rt.telemetry;
    const span = tel.startSpan(
      `jetstate.start ${workflow.name}`,
      SpanKind.PRODUCER,
      { 'jetstate.workflow': workflow.name, 'jetstate.instance.id': id },
      context.active(),
    );
    // Wait for the engine's answer only when an engine that serves the workflow is alive.
    const served = options.wait === false ? false : await this.partitionServed(workflow.name, id);
    if (served === false && options.wait !== false) this.warnIfUnserved(workflow.name);
    const wait = options.wait !== false && served !== false;
    const reply = wait ? this.awaitReply(options.timeoutMs ?? DEFAULT_START_WAIT_MS) : undefined;
    try {
      await learning;
      const data = encodeInboxEvent(this.rt, workflow.name, id, event);
      this.checkSize(workflow, id, 'start', data);
      const ack = await this.publish(
        {
          workflow: workflow.name,
          id,
          event,
          ...(options.token ? { token: options.token } : {}),
          trace: carrierOf(span) ?? carrierOfActive(context.active()),
          ...(reply ? { replyTo: reply.inbox } : {}),
        },
        data,
      );
      span.setAttribute('jetstate.event.seq', ack.seq);
      const answer = reply ? await reply.answer : undefined;
      if (answer?.outcome === 'conflict') {
        fail(
          ErrorCode.InstanceConflict,
          `workflow '${workflow.name}' instance '${id}' already exists with a different input; use another id, or the same input to get the existing instance`,
        );
      }
      if (answer?.outcome === 'rejected') throw rejectionError(String(answer.reason ?? 'refused'), 'nothing was started');
      // Created, or its start queued in the inbox ahead of any event sent after it.
      this.remember(this.rt.names.instanceKey(workflow.name, id));
      const record = answer ? await this.readRecord(workflow.name, id) : null;
      if (record) return this.view(workflow, record);
      // Answered but gone already: deleted meanwhile, not unserved.
      if (wait && !answer) this.warnIfUnserved(workflow.name);
      return pendingInstance(workflow, runner, id, input.value) as WorkflowInstance<W>;
    } catch (e) {
      failSpan(span, e);
      throw e;
    } finally {
      reply?.cancel();
      span.end();
    }
  }

  /**
   * Sends an event; returns once the events stream has durably accepted it. The type must be one
   * the workflow declares and the payload must match its schema, else an `INVALID_EVENT` error
   * and nothing is written. Sending to a missing instance is an `INSTANCE_NOT_FOUND` error: the
   * client looks once per instance and then remembers it (started or sent to here, forgotten when
   * deleted here). An instance deleted by another process meanwhile gets the event in its inbox,
   * where the engine refuses it ("does not exist; start it first", in its dead letters).
   */
  async send<W extends WorkflowDefinition>(workflow: W, id: string, event: WorkflowEvent<W>, options: SendOptions = {}): Promise<SendResult> {
    this.checkCall('send', workflow, options, ['idempotencyKey', 'token']);
    const key = options.idempotencyKey;
    // The key becomes the message id JetStream deduplicates by: an empty one would mean none.
    if (key !== undefined && (typeof key !== 'string' || !/^[^\r\n]{1,1024}$/.test(key)))
      fail(ErrorCode.InvalidOptions, 'send: idempotencyKey must be a string of 1 to 1024 characters on one line, the same for every try of one event');
    const tel = this.rt.telemetry;
    const parent = context.active();
    const type = typeof (event as { type?: unknown } | null)?.type === 'string' ? (event as { type: string }).type : 'unknown';
    const span = tel.startSpan(
      `jetstate.send ${workflow.name}`,
      SpanKind.PRODUCER,
      { 'jetstate.workflow': workflow.name, 'jetstate.instance.id': id, 'jetstate.event.type': type },
      parent,
    );
    try {
      checkName(`workflow '${workflow.name}': instance id`, id);
      const checked = checkEventToSend(workflow, id, event);
      if (!checked.ok) fail(ErrorCode.InvalidEvent, `${checked.reason}; nothing was sent`);
      const data = checked.wire;
      this.rt.registry.add(workflow);
      const learning = this.learnPaths(workflow.name);
      check(await admit(this.rt.security.verifier, workflow, { kind: 'event', type: data.type }, options.token, 'client'), 'nothing was sent');
      await learning;
      const body = encodeInboxEvent(this.rt, workflow.name, id, data);
      this.checkSize(workflow, id, `event '${data.type}'`, body);
      const key = this.rt.names.instanceKey(workflow.name, id);
      // A relayed send cannot look (the site may be cut off): the site refuses an event for a
      // missing instance, recorded in its dead letters.
      if (!this.known.has(key) && !this.rt.relay) {
        const entry = await this.lookUp(workflow.name, id, 'nothing was sent');
        if (!entry || entry.operation !== 'PUT') {
          fail(ErrorCode.InstanceNotFound, `workflow '${workflow.name}' instance '${id}' does not exist; start it first; the event was not sent`);
        }
        this.remember(key);
      }
      const ack = await this.publish(
        {
          workflow: workflow.name,
          id,
          event: data,
          ...(options.idempotencyKey ? { idempotencyKey: options.idempotencyKey } : {}),
          ...(options.token ? { token: options.token } : {}),
          trace: carrierOf(span) ?? carrierOfActive(parent),
        },
        body,
      );
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
   * The secret paths the namespace publishes for a workflow, learned before an event for it is
   * sealed: a newer version than this client's definition may declare more. Read at most once a
   * second per workflow (concurrent calls share a read). Handled here: the caller awaits it later.
   * A relayed event is sealed with the definition's paths.
   */
  private learnPaths(workflow: string): Promise<void> {
    if (this.rt.relay) return Promise.resolve();
    const learning = learnSecretPaths(this.rt, workflow, { lenient: true, maxAgeMs: PUBLISHED_PATHS_MAX_AGE_MS }).catch((e: unknown) => {
      if (!isTimeout(e)) throw e;
      fail(
        ErrorCode.Timeout,
        `workflow '${workflow}': the secret paths the namespace publishes for it could not be read (${(e as Error).message}); nothing was sent: try again`,
        { cause: e },
      );
    });
    learning.catch(() => {});
    return learning;
  }

  /**
   * Publishes to an instance's inbox. A workflow no engine ever served has no streams: a client
   * allowed to create streams creates them (the event waits for an engine); one that is not gets
   * the `NOT_SERVED` error.
   */
  private async publish(e: Parameters<typeof publishToInstance>[1], data: Uint8Array): ReturnType<typeof publishToInstance> {
    try {
      return await this.publishOrCreateStreams(e, data);
    } catch (err) {
      if (err instanceof JetstateError || !isTimeout(err)) throw err;
      fail(ErrorCode.Timeout, unacknowledged(e, (err as Error).message), { cause: err });
    }
  }

  private async publishOrCreateStreams(e: Parameters<typeof publishToInstance>[1], data: Uint8Array): ReturnType<typeof publishToInstance> {
    try {
      return await publishToInstance(this.rt, e, data);
    } catch (err) {
      if (!(err instanceof JetstateError) || err.code !== ErrorCode.NotServed) throw err;
      try {
        await ensureWorkflowStreams(this.rt, e.workflow);
      } catch {
        throw err;
      }
      this.warnIfUnserved(e.workflow);
      return publishToInstance(this.rt, e, data);
    }
  }

  /**
   * Whether a live engine owns the partition of this instance: its lease there was renewed within
   * the lease TTL (by the server's clock, with some slack for this one's). Undefined when this
   * client may not read leases.
   */
  private async partitionServed(workflow: string, id: string): Promise<boolean | undefined> {
    const p = partitionOf(workflow, id, this.rt.partitions);
    const key = this.rt.names.leaseKey(workflow, p);
    const now = Date.now();
    let seen = this.leases.get(key);
    if (!seen || now - seen.atMs > LEASE_CACHE_MS) {
      try {
        const entry = await this.rt.control.get(key);
        const lease = entry && entry.operation === 'PUT' ? LeaseViewSchema.safeParse(decodeJson(entry.value)) : undefined;
        seen = { atMs: now, renewedAtMs: entry && lease?.success ? entry.created.getTime() : undefined, ttlMs: lease?.success ? lease.data.ttlMs : 0 };
      } catch {
        return undefined;
      }
      this.leases.set(key, seen);
    }
    return seen.renewedAtMs !== undefined && now - seen.renewedAtMs < seen.ttlMs + LEASE_CLOCK_SKEW_MS;
  }

  /**
   * Asks an instance to cancel. A machine that handles `jetstate.cancel` in its current state (a
   * transition naming it, or `jetstate.*`; a catch-all `'*'` does not count) decides what that
   * means (a transition to clean-up or compensation states; the event carries `reason`);
   * otherwise the instance stops (status `stopped`, `error` says why). Returns once the
   * request is durably accepted; checked against `permissions.cancel` (or `default`).
   *
   * @example
   * ```ts
   * await client.cancel(order, 'o-17', { reason: 'customer asked' });
   * ```
   */
  cancel<W extends WorkflowDefinition>(workflow: W, id: string, options: ControlOptions = {}): Promise<SendResult> {
    return this.control(workflow, id, EngineEvent.Cancel, 'cancel', options);
  }

  /**
   * Stops an instance now, whatever its machine: pending timers and tasks are dropped (running
   * attempts aborted), child instances stopped, status `stopped` with the reason. Checked against
   * `permissions.terminate` (or `default`).
   */
  terminate<W extends WorkflowDefinition>(workflow: W, id: string, options: ControlOptions = {}): Promise<SendResult> {
    return this.control(workflow, id, EngineEvent.Terminate, 'terminate', options);
  }

  /**
   * Deletes a finished instance: its record, its history and what the engine noted about it. A
   * running instance is refused (terminate it first): the refusal is in its history. The same id
   * can be started again afterwards. Checked against `permissions.delete` (or `default`).
   */
  delete<W extends WorkflowDefinition>(workflow: W, id: string, options: Omit<ControlOptions, 'reason'> = {}): Promise<SendResult> {
    return this.control(workflow, id, EngineEvent.Delete, 'delete', options);
  }

  private async control(
    workflow: WorkflowDefinition,
    id: string,
    type: string,
    kind: 'cancel' | 'terminate' | 'delete',
    options: ControlOptions,
  ): Promise<SendResult> {
    this.checkCall(kind, workflow, options, kind === 'delete' ? ['token'] : ['reason', 'token']);
    checkName(`workflow '${workflow.name}': instance id`, id);
    this.rt.registry.add(workflow);
    if (options.reason !== undefined && (typeof options.reason !== 'string' || options.reason.length > 1_000)) {
      fail(ErrorCode.InvalidOptions, `${kind}: reason must be a string of at most 1000 characters`);
    }
    check(await admit(this.rt.security.verifier, workflow, { kind }, options.token, 'client'), `nothing was sent`);
    const key = this.rt.names.instanceKey(workflow.name, id);
    if (!this.known.has(key)) {
      const entry = await this.lookUp(workflow.name, id, 'nothing was sent');
      if (!entry || entry.operation !== 'PUT')
        fail(ErrorCode.InstanceNotFound, `workflow '${workflow.name}' instance '${id}' does not exist; nothing to ${kind}`);
    }
    const event = { type, ...(options.reason !== undefined ? { reason: options.reason } : {}) };
    const ack = await this.publish(
      { workflow: workflow.name, id, event, ...(options.token ? { token: options.token } : {}), trace: carrierOfActive(context.active()) },
      encodeInboxEvent(this.rt, workflow.name, id, event),
    );
    // Deleted (or refused, while still running): the next call looks again.
    if (kind === 'delete') this.known.delete(key);
    return { seq: ack.seq, duplicate: ack.duplicate };
  }

  private checkSize(workflow: WorkflowDefinition, id: string, what: string, body: Uint8Array): void {
    const { maxEventBytes } = limitsOf(this.rt.security.limits, workflow);
    if (body.length > maxEventBytes) {
      fail(
        ErrorCode.LimitExceeded,
        `[limit.event_size] workflow '${workflow.name}' instance '${id}': ${what} is ${body.length} bytes, over the limit of ${maxEventBytes}; send a reference (an object-store key) instead of the data; nothing was sent`,
      );
    }
  }

  /** Waits for the engine's answer to a start on a fresh inbox of this connection. */
  private awaitReply(timeoutMs: number): { inbox: string; answer: Promise<StartAnswer | undefined>; cancel(): void } {
    const inbox = createInbox(this.rt.inboxPrefix);
    let cancelTimer: (() => void) | undefined;
    let settle!: (a: StartAnswer | undefined) => void;
    const answer = new Promise<StartAnswer | undefined>((r) => (settle = r));
    const sub = this.rt.nc.subscribe(inbox, {
      max: 1,
      callback: (err, msg) => {
        cancelTimer?.();
        if (err) return settle(undefined);
        try {
          settle(JSON.parse(msg.string()) as StartAnswer);
        } catch {
          settle(undefined);
        }
      },
    });
    cancelTimer = longTimeout(() => settle(undefined), timeoutMs);
    return {
      inbox,
      answer,
      cancel: () => {
        cancelTimer();
        sub.unsubscribe();
        settle(undefined);
      },
    };
  }

  /** Says once per workflow when no live engine serves it (its starts and events wait). */
  private warnIfUnserved(workflow: string): void {
    if (this.warnedUnserved.has(workflow)) return;
    this.warnedUnserved.add(workflow);
    this.rt.logger.warn(
      `workflow '${workflow}': no live engine serves it in namespace '${this.rt.names.namespace}' (or none answered in time); starts and events are accepted and wait until an engine with this workflow applies them`,
    );
  }

  /**
   * Re-encrypts the secrets of every instance of a workflow, and of the child workflows it invokes
   * (which may hold secrets it passed them), under the primary key of the ring, so older keys can
   * leave it: every record (compare-and-set; a concurrent write wins and the record is read again)
   * and every instance's history (published again, the older copies purged). It goes through
   * everything it can and reports the rest in `failed` (a key missing from the ring, an unreadable
   * record) instead of stopping. Run it until `resealed` is 0 and `failed` is empty.
   */
  async reencrypt<W extends WorkflowDefinition>(workflow: W): Promise<ReencryptReport> {
    this.checkCall('reencrypt', workflow);
    this.rt.registry.add(workflow);
    if (!this.rt.security.codec.ring)
      fail(ErrorCode.InvalidOptions, `reencrypt needs the key ring with the new key: secrets: { keyRing } (or JETSTATE_KEYS for the CLI)`);
    this.rt.security.codec.refresh();
    return reencryptWorkflows(this.rt, [...workflowTree(workflow)]);
  }

  /**
   * The newest rejected events of the namespace (the dead-letter stream), newest last, with the
   * reason each was refused. Payloads are left out: they may be hostile or hold secrets.
   */
  async deadLetters(options: { limit?: number } = {}): Promise<DeadLetter[]> {
    this.checkOpen();
    checkOptions('deadLetters', options, ['limit']);
    const limit = options.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
      fail(ErrorCode.InvalidOptions, `deadLetters: limit must be a whole number from 1 to 10000 (got ${String(options.limit)})`);
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

  /**
   * The instance, or null when it does not exist; typed from the workflow (`WorkflowInstance<W>`:
   * its context, state value, output and tags as the machine declares them).
   */
  async get<W extends WorkflowDefinition>(workflow: W, id: string): Promise<WorkflowInstance<W> | null> {
    this.checkCall('get', workflow);
    // Known here, its secret paths are opened (or redacted) in what is read.
    this.rt.registry.add(workflow);
    const record = await this.readRecord(workflow.name, checkName('instance id', id));
    if (!record) return (await this.pendingStart(workflow, id)) as WorkflowInstance<W> | null;
    const instance = this.view(workflow, record);
    const parked = await this.parkedReason(workflow.name, id);
    if (parked) instance.parked = parked;
    // Running tasks that failed an attempt show how far they got.
    await Promise.all(
      instance.tasks.map(async (t) => {
        const progress = await readTaskProgress(this.rt, record, t.id, record.tasks[t.id]!.token);
        if (progress) Object.assign(t, progress);
      }),
    );
    return instance;
  }

  /**
   * An instance whose start is accepted but not applied yet (its inbox ends with the start and
   * no record exists): pending, with why when no live engine serves it. Null when there is no
   * such start, or this client may not read the events stream.
   */
  private async pendingStart(workflow: WorkflowDefinition, id: string): Promise<Instance | null> {
    const parked = await this.parkedReason(workflow.name, id);
    const p = partitionOf(workflow.name, id, this.rt.partitions);
    let data: Uint8Array;
    try {
      const stream = this.rt.names.eventStream(workflow.name, p);
      const subject = this.rt.names.eventSubject(p, workflow.name, id);
      // Its last event: a delete means there is nothing to show; a start is the one to show.
      const last = await this.rt.jsm.streams.getMessage(stream, { last_by_subj: subject });
      if (!last || typeOf(last.data) === EngineEvent.Delete) return null;
      // Else its first event still in the stream: a start, when it was not applied yet.
      const m = typeOf(last.data) === EngineEvent.Start ? last : await this.rt.jsm.streams.getMessage(stream, { seq: 1, next_by_subj: subject } as never);
      if (!m) return null;
      // An engine already went past it (it refused the start): nothing is pending.
      if ((await this.partitionCheckpoint(workflow.name, p)) >= m.seq) return null;
      // Refused before the checkpoint says so: the refusal is the id's last history entry.
      if (await this.refusedAt(workflow.name, id, m.seq)) return null;
      data = m.data;
    } catch {
      return null;
    }
    let start: { type?: unknown; input?: unknown };
    try {
      start = this.rt.security.codec.openEvent(workflow.name, id, decodeJson(data)) as typeof start;
    } catch {
      return null;
    }
    if (start.type !== EngineEvent.Start) return null;
    const input = checkInput(workflow, id, start.input);
    if (!input.ok) return null;
    const instance = pendingInstance(workflow, this.rt.registry.runnerFor(workflow), id, input.value);
    if (parked) instance.parked = parked;
    else if ((await this.partitionServed(workflow.name, id)) === false) {
      instance.parked = `no live engine serves workflow '${workflow.name}' (partition ${p}) in namespace '${this.rt.names.namespace}'; its start waits in the stream until one runs`;
    }
    return instance;
  }

  /** Whether the id's last history message records the refusal of its event at `seq`. */
  private async refusedAt(workflow: string, id: string, seq: number): Promise<boolean> {
    const last = await this.rt.jsm.streams
      .getMessage(this.rt.names.historyStream, { last_by_subj: this.rt.names.historySubject(workflow, id) })
      .catch(() => null);
    if (!last) return false;
    let message: unknown;
    try {
      message = decodeJson(last.data);
    } catch {
      return false;
    }
    const parsed = HistoryMessageSchema.safeParse(message);
    return parsed.success && parsed.data.entries.some((e) => e.kind === HistoryKind.Rejected && e.seq === seq);
  }

  /** How far the partition's events are finished (its lease, or what its last owner left), 0 when unknown. */
  private async partitionCheckpoint(workflow: string, partition: number): Promise<number> {
    for (const key of [this.rt.names.leaseKey(workflow, partition), this.rt.names.checkpointKey(workflow, partition)]) {
      try {
        const entry = await this.rt.control.get(key);
        if (!entry || entry.operation !== 'PUT') continue;
        const c = z.object({ checkpoint: z.number() }).safeParse(decodeJson(entry.value));
        if (c.success) return c.data.checkpoint;
      } catch {
        return 0;
      }
    }
    return 0;
  }

  /** Why an engine cannot apply an instance's events, if one said so (see the worker's blocked instances). */
  private async parkedReason(workflow: string, id: string): Promise<string | undefined> {
    try {
      const entry = await this.rt.control.get(this.rt.names.parkedKey(workflow, id));
      if (!entry || entry.operation !== 'PUT') return undefined;
      const parked = z.object({ reason: z.string() }).safeParse(decodeJson(entry.value));
      return parked.success ? parked.data.reason : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Every instance of a workflow, optionally filtered by status or state. A `state` the workflow
   * does not have is an `INVALID_OPTIONS` error (it would match nothing). A record that cannot be
   * read (`RECORD_UNREADABLE`: a status a newer version wrote, secrets under a key the ring lacks)
   * is left out with a warning naming it; `get()` of it says why.
   */
  async *list<W extends WorkflowDefinition>(workflow: W, filter: ListFilter<StateMatch<StateValueOf<W>>> = {}): AsyncIterable<WorkflowInstance<W>> {
    this.checkCall('list', workflow, filter, ['status', 'state']);
    const statuses: readonly string[] = Object.values(InstanceStatus);
    if (filter.status !== undefined && !statuses.includes(filter.status))
      fail(ErrorCode.InvalidOptions, `list: status '${String(filter.status)}' is not one of ${statuses.join(', ')} (it would match nothing)`);
    this.rt.registry.add(workflow);
    if (filter.state !== undefined) checkStateTest(workflow.name, this.machinesOf(workflow), filter.state);
    const keys: string[] = [];
    for (const kv of this.rt.records.all) for await (const k of await kv.keys(`${workflow.name}.>`)) keys.push(k);
    keys.sort();
    for (let i = 0; i < keys.length; i += 64) {
      const records = await Promise.all(keys.slice(i, i + 64).map((k) => this.readListed(workflow.name, k.slice(workflow.name.length + 1))));
      for (const r of records) {
        if (!r) continue;
        const inst = this.view(workflow, r);
        if (filter.status && inst.status !== filter.status) continue;
        if (filter.state !== undefined && !inst.matches(filter.state as never)) continue;
        yield inst;
      }
    }
  }

  /** A record for list(): one that cannot be read is left out, said as a warning (the others are still listed). */
  private async readListed(workflow: string, id: string): Promise<InstanceRecord | null> {
    try {
      return await this.readRecord(workflow, id);
    } catch (e) {
      if (!(e instanceof JetstateError) || e.code !== ErrorCode.RecordUnreadable) throw e;
      this.rt.logger.warn(`list: '${workflow}.${id}' left out: ${e.message}`, { workflow, id });
      return null;
    }
  }

  /**
   * Resolves with the instance once `predicate` holds, watching its KV key (no polling). Rejects
   * with `TIMEOUT` after `timeoutMs` (default 30 s), or at once when the instance finished without
   * matching. The predicate gets the typed instance; a `matches()` in it of a state the workflow
   * does not have is an `INVALID_OPTIONS` error (it could never hold). It sees the instance as it
   * is stored: events applied together in one write (a burst) store only the state after the last,
   * so a state passed through on the way is not seen; `history()` has every transition.
   */
  async waitFor<W extends WorkflowDefinition>(
    workflow: W,
    id: string,
    predicate: (instance: WorkflowInstance<W>) => boolean,
    options: WaitForOptions = {},
  ): Promise<WorkflowInstance<W>> {
    this.checkCall('waitFor', workflow, options, ['timeoutMs']);
    if (typeof predicate !== 'function')
      fail(ErrorCode.InvalidOptions, 'waitFor: predicate must be a function of the instance, e.g. (i) => i.status === "done"');
    this.rt.registry.add(workflow);
    const key = this.rt.names.instanceKey(workflow.name, checkName('instance id', id));
    const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_FOR_MS;
    checkMs('waitFor', 'timeoutMs', timeoutMs);
    if (timeoutMs === 0) return this.matchesNow(workflow, id, predicate);
    const deadline = Date.now() + timeoutMs;
    const machines = this.machinesOf(workflow);
    let last: WorkflowInstance<W> | undefined;
    let lastError: Error | undefined;
    const closed = (): never => fail(ErrorCode.Closed, `waitFor: the client closed while waiting for workflow '${workflow.name}' instance '${id}'`);
    // A watch that fails or ends early (NATS restarting, a leader election) is opened again until the deadline.
    while (Date.now() < deadline) {
      if (this.closing) closed();
      let watcher: Awaited<ReturnType<KV['watch']>>;
      try {
        // Bounded by the deadline: while the server cannot answer, the open would wait out the API's timeout.
        const opening = this.rt.records.ofKey(key).watch({ key });
        const opened = await waitAtMost(opening, Math.min(deadline - Date.now(), MAX_TIMER_MS));
        if (!opened) {
          void opening.then(
            (w) => w.stop(),
            () => {},
          );
          throw new Error('the watch did not open in time (the server does not answer)');
        }
        watcher = await opening;
      } catch (e) {
        lastError = e as Error;
        await new Promise((r) => setTimeout(r, Math.max(0, Math.min(250, deadline - Date.now()))));
        continue;
      }
      const cancelTimer = longTimeout(() => watcher.stop(), deadline - Date.now());
      const stop = (): void => watcher.stop();
      this.waits.add(stop);
      try {
        for await (const e of watcher) {
          if (e.operation !== 'PUT') continue;
          const record = this.parseRecord(workflow.name, id, e.value);
          last = checkedMatches(this.view(workflow, record), workflow.name, machines);
          let reached: boolean;
          try {
            reached = predicate(last);
          } catch (mistake) {
            throw new PredicateError(mistake);
          }
          if (reached) return last;
          if (last.status !== 'running') {
            fail(
              ErrorCode.Timeout,
              `workflow '${workflow.name}' instance '${id}' is ${last.status} in state ${JSON.stringify(last.value)} and will not reach the awaited state`,
            );
          }
        }
      } catch (e) {
        if (e instanceof PredicateError) throw e.mistake; // the caller's own error, as thrown
        if (e instanceof JetstateError) throw e;
        lastError = e as Error;
      } finally {
        this.waits.delete(stop);
        cancelTimer();
        watcher.stop();
      }
    }
    if (this.closing) closed();
    if (!last && lastError) {
      throw new JetstateError(
        ErrorCode.Timeout,
        `workflow '${workflow.name}' instance '${id}': could not watch it within ${timeoutMs} ms: ${lastError.message}`,
        { cause: lastError },
      );
    }
    fail(
      ErrorCode.Timeout,
      last
        ? `workflow '${workflow.name}' instance '${id}' did not reach the awaited state within ${timeoutMs} ms; it is in ${JSON.stringify(last.value)} at revision ${last.revision}`
        : `workflow '${workflow.name}' instance '${id}' did not appear within ${timeoutMs} ms; start it first`,
    );
  }

  /**
   * The applied transitions and rejections of an instance, in order, from the history stream;
   * typed from the workflow (`WorkflowHistoryEntry<W>`): narrow on `kind`, then on `event.type`.
   */
  async history<W extends WorkflowDefinition>(workflow: W, id: string): Promise<WorkflowHistoryEntry<W>[]> {
    this.checkCall('history', workflow);
    this.rt.registry.add(workflow);
    checkName('instance id', id);
    // The entries were written by the step from events the gate parsed with these schemas.
    return (await this.historyThrough(workflow.name, id, await this.readRecord(workflow.name, id))) as WorkflowHistoryEntry<W>[];
  }

  /**
   * The history as the stream holds it, with the entries the record still journals (published
   * after the write without waiting; in the record until the stream confirms them).
   */
  private async historyThrough(workflow: string, id: string, record: InstanceRecord | null): Promise<HistoryEntry[]> {
    const { codec } = this.rt.security;
    const stored = await readHistory(this.rt, workflow, id);
    const opened = codec.ring ? codec.openHistory(workflow, id, stored.entries, stored.secrets) : (redactEnvelopes(stored.entries) as HistoryEntry[]);
    // Refused while no instance had the id (after a delete, before this start): not this instance's.
    const born = record?.born;
    const entries = born === undefined ? opened : opened.filter((e) => !(e.kind === HistoryKind.Rejected && e.revision === 0 && e.seq < born));
    return record ? withJournal(entries, record.lastHistory) : entries;
  }

  /** Replays an instance's history from its start and reports whether it reproduces the stored snapshot. */
  async verify<W extends WorkflowDefinition>(workflow: W, id: string, options: { reveal?: boolean } = {}): Promise<VerifyReport> {
    this.checkCall('verify', workflow, options, ['reveal']);
    this.rt.registry.add(workflow);
    const record = await this.readRecord(workflow.name, checkName('instance id', id));
    if (!record) fail(ErrorCode.InstanceNotFound, `workflow '${workflow.name}' instance '${id}' does not exist`);
    const found = this.rt.registry.find(record.workflow, record.version);
    if (!found) {
      fail(
        ErrorCode.WorkflowNotRegistered,
        `workflow '${workflow.name}' instance '${id}': stored version ${record.version} is not registered; pass it in 'workflows'`,
      );
    }
    // The report shows secret values redacted unless asked (`reveal`): it is read by people and logged.
    const redact = options.reveal === true ? [] : this.rt.security.codec.pathsFor(record.workflow, record.secrets);
    return verifyInstance(found.def, found.runner, record, await this.historyThrough(workflow.name, id, record), redact);
  }

  /** Closes the connection if jetstate opened it. Idempotent. */
  close(): Promise<void> {
    if (!this.closing) for (const stop of this.waits) stop();
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
    this.rt.records.close();
    if (this.rt.ownsConnection) await closeConnection(this.rt.nc);
  }

  protected checkOpen(): void {
    if (this.closing) fail(ErrorCode.Closed, 'this jetstate client is closed; create a new one');
  }

  /**
   * Open, given a workflow definition, and options with only the keys it knows (a misspelt one,
   * such as `idempotency_key`, would be dropped without a word): else a clear error, nothing done.
   */
  protected checkCall(method: string, workflow: unknown, options?: unknown, known?: readonly string[], required = false): void {
    this.checkOpen();
    if (!isWorkflowDefinition(workflow))
      fail(
        ErrorCode.InvalidOptions,
        `${method}: the workflow must be a definition made with defineWorkflow(...) (the object its module exports), not ${describeValue(workflow)}`,
      );
    if (known === undefined) return;
    if (options === undefined && required) fail(ErrorCode.InvalidOptions, `${method}(workflow, options): options are missing; give { ${known.join(', ')} }`);
    if (options !== undefined) checkOptions(method, options, known);
  }

  /** `waitFor` with `timeoutMs: 0`: the instance as it is when it matches, else TIMEOUT saying where it is. */
  private async matchesNow<W extends WorkflowDefinition>(
    workflow: W,
    id: string,
    predicate: (i: WorkflowInstance<W>) => boolean,
  ): Promise<WorkflowInstance<W>> {
    const now = await this.get(workflow, id);
    if (now && predicate(now)) return now;
    return fail(
      ErrorCode.Timeout,
      now
        ? `workflow '${workflow.name}' instance '${id}' is ${now.status} in state ${JSON.stringify(now.value)}, not the awaited one (timeoutMs 0 looks once, without waiting)`
        : `workflow '${workflow.name}' instance '${id}' does not exist (timeoutMs 0 looks once, without waiting); start it first`,
    );
  }

  protected async readRecord(workflow: string, id: string): Promise<InstanceRecord | null> {
    try {
      return (
        (await readRecord(this.rt.records.of(workflow, id), this.rt.security.codec, this.rt.names.instanceKey(workflow, id), 'open-or-redact'))?.record ?? null
      );
    } catch (e) {
      throw readTimeout(e, workflow, id, 'try again');
    }
  }

  /** The instance's record entry, read before a send or a control event to tell a missing instance. */
  private async lookUp(workflow: string, id: string, then: string): Promise<KvEntry | null> {
    const key = this.rt.names.instanceKey(workflow, id);
    try {
      return await this.rt.records.ofKey(key).get(key);
    } catch (e) {
      throw readTimeout(e, workflow, id, `${then}: try again`);
    }
  }

  protected parseRecord(workflow: string, id: string, bytes: Uint8Array): InstanceRecord {
    return parseRecord(this.rt.security.codec, this.rt.names.instanceKey(workflow, id), bytes, 'open-or-redact');
  }

  /**
   * The view of a record, typed from the workflow: its values come from that workflow's machine
   * (the version that wrote the record, whose tags `hasTag` reads).
   */
  private view<W extends WorkflowDefinition>(workflow: W, record: InstanceRecord): WorkflowInstance<W> {
    const machine = this.rt.registry.find(record.workflow, record.version)?.def.machine ?? workflow.machine;
    return toInstance(record, (value: StateValue) => tagsOf(machine, value), resolverOf(machine)) as WorkflowInstance<W>;
  }

  /** The machines of every registered version of a workflow, which `matches()` tests are checked against. */
  private machinesOf(workflow: WorkflowDefinition): AnyStateMachine[] {
    return this.rt.registry.versions(workflow.name).map((r) => r.def.machine);
  }

  private remember(key: string): void {
    if (this.known.size >= KNOWN_CAP) this.known.clear();
    this.known.add(key);
  }
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

/** A workflow's name and those of the child workflows it invokes, and theirs in turn. */
function workflowTree(workflow: WorkflowDefinition, into = new Set<string>()): Set<string> {
  if (into.has(workflow.name)) return into;
  into.add(workflow.name);
  for (const child of childWorkflowsOf(workflow.machine).values()) workflowTree(child, into);
  return into;
}

/** The error a client throws for a start the engine refused, by the reason's category. */
function rejectionError(reason: string, suffix: string): JetstateError {
  const category = /^\[([a-z_.]+)\]/.exec(reason)?.[1] ?? '';
  const code = category.startsWith('identity')
    ? ErrorCode.Unauthenticated
    : category.startsWith('permission')
      ? ErrorCode.PermissionDenied
      : category.startsWith('limit')
        ? ErrorCode.LimitExceeded
        : category === 'instance.exists'
          ? ErrorCode.InstanceConflict
          : ErrorCode.InvalidInput;
  return new JetstateError(code, `${reason}; ${suffix}`);
}

/**
 * The instance with a `matches()` that refuses a state none of the workflow's machines has, with
 * `INVALID_OPTIONS`; `waitFor` hands it to its predicate.
 */
function checkedMatches<T extends { matches(state: never): boolean }>(instance: T, workflow: string, machines: readonly AnyStateMachine[]): T {
  const matches = instance.matches.bind(instance) as (state: unknown) => boolean;
  (instance as { matches: (state: never) => boolean }).matches = (state) => {
    checkStateTest(workflow, machines, state);
    return matches(state);
  };
  return instance;
}

/** How a start that is accepted but not applied yet looks: its first state, computed here. */
function pendingInstance(workflow: WorkflowDefinition, runner: MachineRunner, id: string, input: unknown): Instance {
  const now = Date.now();
  const started = startInstance(workflow, runner, id, input, now);
  const view = toInstance(started.record, (value: StateValue) => tagsOf(workflow.machine, value), resolverOf(workflow.machine));
  return { ...view, status: 'pending', revision: 0, timers: [], tasks: [] };
}

/** XState's snapshot of a stored state value and context, for `can()` and `getMeta()` of the view. */
function resolverOf(machine: AnyStateMachine): (value: StateValue, context: unknown) => AnyMachineSnapshot {
  return (value, context) => machine.resolveState({ value, context } as never) as AnyMachineSnapshot;
}

/** The `type` of an encoded event, if it has a readable one. */
function typeOf(data: Uint8Array): unknown {
  try {
    return (decodeJson(data) as { type?: unknown } | null)?.type;
  } catch {
    return undefined;
  }
}

/** A read of an instance's record that NATS did not answer in time, as the TIMEOUT it is; any other error as it is. */
function readTimeout(e: unknown, workflow: string, id: string, then: string): unknown {
  if (e instanceof JetstateError || !isTimeout(e)) return e;
  return new JetstateError(
    ErrorCode.Timeout,
    `workflow '${workflow}' instance '${id}': NATS did not answer the read of its record in time (${(e as Error).message}; a server stalled, a leader being elected, a reconnect); ${then}`,
    { cause: e },
  );
}

/** Why a start or send has no acknowledgement, and how to retry it without a double. */
function unacknowledged(e: { workflow: string; id: string; event: { type: string }; idempotencyKey?: string }, why: string): string {
  const control = CONTROL_ADVICE[e.event.type];
  const what = e.event.type === EngineEvent.Start ? 'the start of' : control ? `the ${control.verb} of` : `event '${e.event.type}' for`;
  const advice =
    e.event.type === EngineEvent.Start
      ? 'start it again (a start of the instance that exists with the same input returns it)'
      : control
        ? control.again
        : `send it again with the same idempotencyKey${e.idempotencyKey ? '' : ' (give one: without it a retry may be applied twice)'}`;
  return (
    `${what} workflow '${e.workflow}' instance '${e.id}' got no acknowledgement from JetStream ` +
    `(${why}: a cluster electing its leaders, a server restarting or overloaded, or a subject this NATS user may not use); it may have been stored: ${advice}`
  );
}

/** What to do when a control call got no acknowledgement (they take no idempotency key). */
const CONTROL_ADVICE: Record<string, { verb: string; again: string }> = {
  [EngineEvent.Cancel]: { verb: 'cancel', again: "cancel it again while it runs (a machine that handles 'jetstate.cancel' may see both)" },
  [EngineEvent.Terminate]: { verb: 'terminate', again: 'terminate it again (once it has stopped, another changes nothing)' },
  [EngineEvent.Delete]: { verb: 'delete', again: 'delete it again (once it is gone, another is INSTANCE_NOT_FOUND)' },
};

/** Options must be an object with only these keys. */
function checkOptions(method: string, options: unknown, known: readonly string[]): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    fail(ErrorCode.InvalidOptions, `${method}: options must be an object with ${known.join(', ')}`);
  checkKeys(`${method} options`, '', options, known, ErrorCode.InvalidOptions);
}

function checkMs(method: string, name: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0)
    fail(ErrorCode.InvalidOptions, `${method}: ${name} must be a non-negative number of milliseconds (got ${String(value)})`);
}

/** What a value that should have been a workflow definition is, for an error message. */
function describeValue(v: unknown): string {
  if (typeof v === 'string') return `the string '${v}' (import the definition instead of naming it)`;
  if (typeof v === 'object' && v !== null && 'root' in v && 'transition' in v) return 'an XState machine (pass the definition defineWorkflow made from it)';
  return v === null || v === undefined ? String(v) : typeof v === 'object' ? 'an object that is not a definition' : `a ${typeof v}`;
}

/** Carries an error a waitFor predicate threw through the watch loop, to be thrown as it was. */
class PredicateError extends Error {
  constructor(readonly mistake: unknown) {
    super('waitFor predicate threw');
  }
}
