/**
 * The event gate: what an event read from an instance's inbox amounts to, whatever the sender
 * did before publishing it. Every event passes here, in this order: size, JSON, the engine
 * signature (required on the engine's own event types, checked for freshness so a captured one
 * cannot be replayed), reserved types, the secrets (opened: the schema checks plain values), the
 * schema, and for a sender's event its token and the workflow's `permissions`. The result is an
 * event for the step, or a rejection with its reason (the step records it, the worker
 * dead-letters it). The per-instance rate is judged by the caller, which holds the instance's
 * bucket.
 */
import type { MsgHdrs } from '@nats-io/nats-core';
import type { WorkflowDefinition } from '../define/definition.js';
import { decodeJson } from '../protocol/json.js';
import { MissingKeyError } from '../errors.js';
import {
  CONTROL_EVENTS,
  EngineEvent,
  type TaskResultEvent,
  isChildResult,
  isFail,
  isReservedType,
  isSelfSend,
  isStop,
  isTaskResult,
  isTimerFire,
  type ParentRef,
} from '../protocol/events.js';
import { ENGINE_IDENTITY, type IdentitySummary } from '../protocol/identity.js';
import { MSG_ID_HEADER, REPLY_HEADER, SEND_HEADER, SIGNATURE_HEADER, SIGNED_AT_HEADER, TO_CHILD_HEADER, TOKEN_HEADER } from '../protocol/headers.js';
import type { EngineSigner } from '../security/signer.js';
import type { SecretCodec } from '../security/codec.js';
import { isInheritedPaths } from '../security/inherited-secrets.js';
import { holdsSealed } from '../security/secrets.js';
import type { IdentityVerifier } from '../security/identity.js';
import { carrierFromHeaders, type TraceCarrier } from '../telemetry/telemetry.js';
import type { StepEvent } from '../step/step.js';
import { admit, admitsAnonymously, limitsOf, summarize, type DefaultLimits } from './admission.js';
import { checkEvent, checkInput } from './validate.js';

/** What the gate needs: token verification, secrets, engine signatures, limits. */
export interface GateSecurity {
  readonly verifier: IdentityVerifier | undefined;
  readonly codec: SecretCodec;
  readonly signer: EngineSigner;
  readonly limits: DefaultLimits;
}

/** An event as read from the stream, with what its headers carry. */
export interface RawEvent {
  seq: number;
  subject: string;
  data: Uint8Array;
  /** When the stream accepted it. */
  timeMs: number;
  trace: TraceCarrier | undefined;
  msgId: string | undefined;
  signature: string | undefined;
  signedAtMs: number | undefined;
  token: string | undefined;
  /** Where a starter waits for the answer to its start. */
  replyTo: string | undefined;
  /** A send between instances: its outbox key, as the sender says (see {@link SEND_HEADER}). */
  send?: string | undefined;
  /** A send from a parent to its child: the parent's invoke id (see {@link TO_CHILD_HEADER}). */
  toChild?: string | undefined;
  /** Not from the stream: the outcome of a task this engine ran in process (trusted, applied whatever its sequence). */
  /**
   * A task's outcome from this process; `after`: the last of the instance's events this engine has
   * judged before it (applied, or refused and held unfinished), which its write records as judged.
   */
  local?: { event: TaskResultEvent; key: string; after?: number } | undefined;
}

export function rawEvent(seq: number, subject: string, data: Uint8Array, timeMs: number, h: MsgHdrs | undefined): RawEvent {
  const signedAt = h?.get(SIGNED_AT_HEADER);
  return {
    seq,
    subject,
    data,
    timeMs,
    trace: carrierFromHeaders(h),
    msgId: h?.get(MSG_ID_HEADER) || undefined,
    signature: h?.get(SIGNATURE_HEADER) || undefined,
    signedAtMs: signedAt ? Number(signedAt) : undefined,
    token: h?.get(TOKEN_HEADER) || undefined,
    replyTo: h?.get(REPLY_HEADER) || undefined,
    send: h?.get(SEND_HEADER) || undefined,
    toChild: h?.get(TO_CHILD_HEADER) || undefined,
  };
}

/** An event for the step, maybe rejected; `rated` when the per-instance rate applies to it. */
export type GatedEvent = StepEvent & { rated?: boolean; start?: { input: unknown; parent?: ParentRef | undefined; secrets?: string[] | undefined } };

/** The workflow version a start asks for (the starter's definition), if it names one. */
export function startVersion(data: Uint8Array): number | undefined {
  const v = (safeDecode(data) as { version?: unknown } | null)?.version;
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : undefined;
}

/** The gate could not decide now (an identity provider unreachable): try the batch again. */
export interface GateRetry {
  retry: string;
}

export interface GateOptions {
  /** Oldest an engine signature may be when the stream accepted its event. */
  signatureMaxAgeMs: number;
  /**
   * A start that names a version this engine does not have: judge who sent it (signature, token,
   * the start rules of the version given here, the newest) but not its input, which is the other
   * version's to check. Admitted, it waits for an engine with that version; refused, it does not.
   */
  senderOnly?: boolean;
}

/** How far ahead of the stream's clock a signing engine's clock may be. */
const SIGNATURE_SKEW_MS = 60_000;

export function gateEvent(
  security: GateSecurity,
  def: WorkflowDefinition,
  id: string,
  e: RawEvent,
  options: GateOptions,
): GatedEvent | GateRetry | Promise<GatedEvent | GateRetry> {
  const reject = (event: unknown, reason: string, size = e.data.length): GatedEvent => rejection(e, event, reason, size);
  const limits = limitsOf(security.limits, def);
  if (e.data.length > limits.maxEventBytes) {
    const failed = oversizedResult(security, e, options, limits.maxEventBytes);
    if (failed) return failed;
    return reject(
      { oversized: `${e.data.length} bytes` },
      `[limit.event_size] the event is ${e.data.length} bytes, over the limit of ${limits.maxEventBytes}`,
      0,
    );
  }
  const raw = safeDecode(e.data);
  if (raw === UNREADABLE) return reject({ unreadable: `${e.data.length} bytes` }, 'the event is not UTF-8 JSON', 0);
  const type = typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? (raw as { type?: unknown }).type : undefined;
  if (typeof type !== 'string') {
    const checked = checkEvent(def, id, raw);
    return reject(raw, checked.ok ? `workflow '${def.name}' instance '${id}': the event has no string 'type'` : checked.reason);
  }

  let signed = false;
  if (e.signature !== undefined) {
    const problem = signatureProblem(security, e, type, options.signatureMaxAgeMs);
    if (problem) return reject({ type }, problem);
    signed = true;
  }

  if (isReservedType(type)) {
    if (type === EngineEvent.Start) return gateStart(security, def, id, e, raw as Record<string, unknown>, signed, reject, options.senderOnly === true);
    if (CONTROL_EVENTS.has(type)) {
      const reason = (raw as { reason?: unknown }).reason;
      if (reason !== undefined && (typeof reason !== 'string' || reason.length > 1_000))
        return reject({ type }, `'${type}': reason must be a string of at most 1000 characters`);
      const event = { type, ...(reason !== undefined ? { reason } : {}) };
      if (signed) return { seq: e.seq, timeMs: e.timeMs, event, identity: ENGINE_IDENTITY };
      const kind = type === EngineEvent.Cancel ? 'cancel' : type === EngineEvent.Terminate ? 'terminate' : 'delete';
      return withAdmission(security, def, e, { kind }, { type }, (identity) => ({ seq: e.seq, timeMs: e.timeMs, event, identity }));
    }
    const internal = isTimerFire(raw) || isTaskResult(raw) || isChildResult(raw) || isStop(raw) || isSelfSend(raw) || isFail(raw);
    if (!internal)
      return reject(
        { type },
        `workflow '${def.name}' instance '${id}': event type '${type}' is not declared; types starting with 'jetstate.' or 'xstate.' are reserved`,
      );
    // Only engines publish these: without a valid signature it is a forgery.
    if (!signed) return reject({ type }, `[forged] an engine event ('${type}') without a valid engine signature`);
    if (isTaskResult(raw) || isChildResult(raw) || isSelfSend(raw)) {
      if (sealedWithoutRing(security, raw)) return reject({ type }, noRingReason(def, id));
      try {
        return { seq: e.seq, timeMs: e.timeMs, event: security.codec.openEvent(def.name, id, raw) as { type: string } };
      } catch (err) {
        return reject({ type }, unreadableReason(err, signed));
      }
    }
    return { seq: e.seq, timeMs: e.timeMs, event: raw as { type: string } };
  }

  // Secrets first: the schema checks plain values.
  if (sealedWithoutRing(security, raw)) return reject(raw, noRingReason(def, id));
  let opened: unknown;
  try {
    opened = security.codec.openEvent(def.name, id, raw);
  } catch (err) {
    return reject(raw, unreadableReason(err, signed));
  }
  const checked = checkEvent(def, id, opened);
  if (!checked.ok) return reject(raw, checked.reason);
  // Sent by an instance of this namespace (sendTo, sendParent...): trusted as its engine.
  if (signed) return { seq: e.seq, timeMs: e.timeMs, event: checked.value, identity: ENGINE_IDENTITY };
  // Most events (no token, a workflow without rules): nothing to judge, no closures to build.
  if (admitsAnonymously(def, e.token)) return { seq: e.seq, timeMs: e.timeMs, event: checked.value, identity: undefined, rated: true };
  return withAdmission(security, def, e, { kind: 'event', type }, raw, (identity) => ({
    seq: e.seq,
    timeMs: e.timeMs,
    event: checked.value,
    identity,
    rated: true,
  }));
}

/**
 * An engine without a key ring cannot open a sealed value: an event holding one (sealed at paths a
 * newer version of the workflow declared, by a sender with the ring) is refused, not handed to the
 * machine as an envelope. (Walking the parsed event, about 60 ns for a small one, was measured
 * cheaper than searching its bytes first.)
 */
function sealedWithoutRing(security: Pick<GateSecurity, 'codec'>, value: unknown): boolean {
  return security.codec.ring === undefined && holdsSealed(value);
}

function noRingReason(def: WorkflowDefinition, id: string): string {
  return (
    `[secrets.unreadable] workflow '${def.name}' instance '${id}': the event holds sealed values (secrets a sender with the key ring sealed) ` +
    `and this engine has no key ring to open them; give it the namespace's key ring: secrets: { keyRing: process.env.JETSTATE_KEYS }`
  );
}

/**
 * Why an event's sealed fields cannot be opened. An event an engine signed, sealed with a key this
 * engine's ring lacks, may not be bad input: another engine may have a newer key. Its
 * {@link MissingKeyError} is thrown on, for the caller to tell a key the namespace's engines have
 * (the instance waits for it) from one that came from outside (refused: see apply.ts).
 */
function unreadableReason(err: unknown, signed: boolean): string {
  if (signed && err instanceof MissingKeyError) throw err;
  return `[secrets.unreadable] ${(err as Error).message}`;
}

/**
 * Why a signed event's engine signature does not stand (undefined when it does): it does not
 * match the event, or it is older than `maxAgeMs` when the stream took it (a replay).
 */
export function signatureProblem(security: Pick<GateSecurity, 'signer'>, e: RawEvent, type: string, maxAgeMs: number): string | undefined {
  if (!security.signer.verify(e.subject, e.msgId, e.signedAtMs, e.data, e.signature)) {
    return `[forged] event '${type}' carries an engine signature that does not match it`;
  }
  const age = e.timeMs - e.signedAtMs!;
  if (age > maxAgeMs || -age > SIGNATURE_SKEW_MS) {
    return `[replayed] event '${type}' was signed ${age} ms before the stream accepted it (at most ${maxAgeMs} ms): a replay of an engine event`;
  }
  return undefined;
}

/**
 * A task's or a child workflow's result too large for this workflow, signed by an engine: applied
 * as a failure of the invoke that names the limit, which ends the invoke (refused, it would wait
 * for ever). Anything else too large is refused.
 */
function oversizedResult(security: GateSecurity, e: RawEvent, options: GateOptions, maxEventBytes: number): GatedEvent | undefined {
  if (e.signature === undefined) return undefined;
  const raw = safeDecode(e.data);
  if (!isTaskResult(raw) && !isChildResult(raw)) return undefined;
  const { type, invokeId, token } = raw;
  if (signatureProblem(security, e, type, options.signatureMaxAgeMs)) return undefined;
  const born = (raw as { born?: unknown }).born;
  const what = type === EngineEvent.Child ? "child workflow's" : "activity's";
  const message = `the ${what} result is ${e.data.length} bytes as an event, over this workflow's maxEventBytes limit of ${maxEventBytes}; return less (keep large data elsewhere and return a reference)`;
  const event = { type, invokeId, token, ...(typeof born === 'number' ? { born } : {}), ok: false, error: { name: 'ResultTooLarge', message } };
  return { seq: e.seq, timeMs: e.timeMs, event, identity: ENGINE_IDENTITY };
}

function gateStart(
  security: GateSecurity,
  def: WorkflowDefinition,
  id: string,
  e: RawEvent,
  raw: Record<string, unknown>,
  signed: boolean,
  reject: (event: unknown, reason: string) => GatedEvent,
  senderOnly: boolean,
): GatedEvent | GateRetry | Promise<GatedEvent | GateRetry> {
  const summary = { type: EngineEvent.Start };
  if (raw['parent'] !== undefined && !signed) return reject(summary, `[forged] a start naming a parent instance without a valid engine signature`);
  // Inherited secret paths come only from a parent's engine: they decide what is sealed.
  const secrets = raw['secrets'];
  if (secrets !== undefined && !signed) return reject(summary, `[forged] a start naming inherited secret paths without a valid engine signature`);
  if (secrets !== undefined && !isInheritedPaths(secrets))
    return reject(summary, `workflow '${def.name}' instance '${id}': the start's inherited secret paths are not a list of dotted paths`);
  if (senderOnly) {
    if (signed) return { seq: e.seq, timeMs: e.timeMs, event: summary, identity: ENGINE_IDENTITY };
    return withAdmission(security, def, e, { kind: 'start' }, summary, (identity) => ({ seq: e.seq, timeMs: e.timeMs, event: summary, identity }));
  }
  if (sealedWithoutRing(security, raw['input'])) return reject(summary, noRingReason(def, id));
  let input: unknown;
  try {
    input = security.codec.open(def.name, id, 'input', raw['input'], secrets);
  } catch (err) {
    return reject(summary, unreadableReason(err, signed));
  }
  const checked = checkInput(def, id, input);
  if (!checked.ok) return reject(summary, checked.reason);
  const parent = raw['parent'] as ParentRef | undefined;
  const start = { input: checked.value, ...(parent ? { parent } : {}), ...(secrets !== undefined && secrets.length > 0 ? { secrets } : {}) };
  const event = { type: EngineEvent.Start, input: checked.value };
  if (signed) return { seq: e.seq, timeMs: e.timeMs, event, start, identity: ENGINE_IDENTITY };
  return withAdmission(security, def, e, { kind: 'start' }, summary, (identity) => ({ seq: e.seq, timeMs: e.timeMs, event, start, identity }));
}

/** Judges the sender's token against the workflow's rules, then builds the admitted event. */
function withAdmission(
  security: GateSecurity,
  def: WorkflowDefinition,
  e: RawEvent,
  action: Parameters<typeof admit>[2],
  shown: unknown,
  build: (identity: IdentitySummary | undefined) => GatedEvent,
): GatedEvent | GateRetry | Promise<GatedEvent | GateRetry> {
  const decide = (admission: Exclude<ReturnType<typeof admit>, Promise<unknown>>): GatedEvent | GateRetry => {
    if (!admission.ok) {
      // An identity provider that cannot be reached: the caller retries a few times before rejecting.
      if (admission.retryable) return { retry: admission.reason };
      return rejection(e, shown, admission.reason, e.data.length);
    }
    return build(admission.identity ? summarize(admission.identity) : undefined);
  };
  const admitted = admit(security.verifier, def, action, e.token, 'engine', e.timeMs);
  return admitted instanceof Promise ? admitted.then(decide) : decide(admitted);
}

/**
 * A rejected event is kept in history (and in the record's `lastHistory`) as it came only up to
 * this size; a larger one as a summary. The dead-letter copy keeps it whole. Without the bound, a
 * burst of large invalid events in one batch could make the history message larger than the
 * server takes, and the record too large for the valid events between them.
 */
const REJECTED_EVENT_MAX_BYTES = 1_024;
/** Reasons (a schema error lists every issue) are cut to this many characters in history. */
const REJECTED_REASON_MAX_CHARS = 1_000;

function boundedEvent(event: unknown, size: number): unknown {
  if (size <= REJECTED_EVENT_MAX_BYTES) return event;
  const type = (event as { type?: unknown } | null)?.type;
  return typeof type === 'string' ? { type: type.slice(0, 128), truncated: `${size} bytes` } : { truncated: `${size} bytes` };
}

function boundedReason(reason: string): string {
  return reason.length <= REJECTED_REASON_MAX_CHARS ? reason : `${reason.slice(0, REJECTED_REASON_MAX_CHARS)}... (${reason.length} characters)`;
}

/** A rejected event for the step; `size`: of what the history keeps of it (0 for a summary made here). */
export function rejection(e: { seq: number; timeMs: number }, event: unknown, reason: string, size: number): GatedEvent {
  return { seq: e.seq, timeMs: e.timeMs, event: boundedEvent(event, size), rejected: boundedReason(reason) };
}

const UNREADABLE = Symbol('unreadable');

function safeDecode(data: Uint8Array): unknown {
  try {
    return decodeJson(data);
  } catch {
    return UNREADABLE;
  }
}

/** The event as history shows it when it is rejected before it could be read. */
export function readable(data: Uint8Array): unknown {
  const v = safeDecode(data);
  return v === UNREADABLE ? { unreadable: `${data.length} bytes` } : boundedEvent(v, data.length);
}

/**
 * A token bucket per instance over the stream's acceptance times (a burst of one second), kept in
 * the instance's record, so every engine and every retry of a batch decides the same.
 */
export function takeRate(
  bucket: { tokens: number; atMs: number } | undefined,
  perSecond: number,
  timeMs: number,
): { ok: boolean; bucket: { tokens: number; atMs: number } } {
  const burst = Math.max(1, perSecond);
  const b = bucket ? { ...bucket } : { tokens: burst, atMs: timeMs };
  b.tokens = Math.min(burst, b.tokens + (Math.max(0, timeMs - b.atMs) / 1_000) * perSecond);
  b.atMs = Math.max(b.atMs, timeMs);
  if (b.tokens < 1) return { ok: false, bucket: b };
  b.tokens -= 1;
  return { ok: true, bucket: b };
}
