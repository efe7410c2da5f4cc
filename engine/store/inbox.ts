/**
 * The one way to put an event into an instance's inbox (its partition's events stream): the
 * subject and partition, secrets sealed for the receiving instance, the trace context, a
 * sender's token, and either an engine signature with a keyed message id (engine events) or the
 * sender's idempotency key (client events). A publish the stream reports as a duplicate is
 * checked against what is stored under that message id: a different message there is a
 * collision, never a silent success.
 */
import { randomUUID } from 'node:crypto';
import { errors as coreErrors, headers as natsHeaders, type MsgHdrs } from '@nats-io/nats-core';
import type { PubAck } from '@nats-io/jetstream';
import { ErrorCode, JetstateError } from '../errors.js';
import { canonicalJson, decodeJson, encodeJson } from '../protocol/json.js';
import { partitionOf } from '../protocol/names.js';
import { EngineEvent, outcomeEvent, type ParentRef } from '../protocol/events.js';
import { traceHeaders, type TraceCarrier } from '../telemetry/telemetry.js';
import { isMessageNotFound, isNoResponders, isStreamNotFound, permissionViolation } from './nats-errors.js';
import type { Runtime } from './runtime.js';
import { learnSecretPaths } from './secret-paths.js';
import { REPLY_HEADER, SEND_HEADER, TO_CHILD_HEADER, TOKEN_HEADER } from '../protocol/headers.js';

export interface InboxEvent {
  workflow: string;
  id: string;
  /** The event as the instance sees it (plain; sealed here). */
  event: { type: string } & Record<string, unknown>;
  /**
   * An engine's own event: signed, with a message id keyed from this logical id, so a re-run
   * after a crash is deduplicated and nobody else can take the id first.
   */
  engine?: { logicalId: string; send?: string | undefined; toChild?: string | undefined };
  /** A client's idempotency key (random when absent). */
  idempotencyKey?: string;
  /** The sender's token, verified by the engine. */
  token?: string;
  trace?: TraceCarrier | undefined;
  /** An inbox of the sender, for the engine's answer to a start. */
  replyTo?: string;
}

export interface InboxAck {
  seq: number;
  duplicate: boolean;
  /** Encoded size of the event, as stored. */
  bytes: number;
}

/** The subject of an instance's events. */
export function inboxSubject(rt: Runtime, workflow: string, id: string): string {
  return rt.names.eventSubject(partitionOf(workflow, id, rt.partitions), workflow, id);
}

/** The encoded event as it will be stored: its secrets sealed for the receiving instance. */
export function encodeInboxEvent(rt: Runtime, workflow: string, id: string, event: unknown): Uint8Array {
  return encodeJson(rt.security.codec.sealEvent(workflow, id, event));
}

/**
 * Publishes an event to an instance's inbox and returns once the stream stored it. Throws
 * `NOT_SERVED` when no engine ever created the workflow's streams, `DUPLICATE_CONFLICT` when the
 * message id is taken by a different message.
 */
export async function publishToInstance(rt: Runtime, e: InboxEvent, encoded?: Uint8Array): Promise<InboxAck> {
  // A client with `relayDomain` queues the event in the hub for the site's relay (docs/EDGE.md);
  // everything else about it (headers, message id, sealing) is what the inbox would have got.
  const relay = e.engine ? undefined : rt.relay;
  const subject = relay ? rt.names.relaySubject(e.workflow, e.id) : inboxSubject(rt, e.workflow, e.id);
  let data = encoded;
  if (!data) {
    if (!relay && !rt.registry.has(e.workflow)) {
      // Another service's workflow: its secret paths are published before its streams are made, so
      // they are read once the streams exist (read before, they could be missed, and the event
      // would go out in the clear into streams made meanwhile).
      if (!(await streamsSeen(rt, e.workflow, e.id))) throw notServed(rt, e.workflow, new coreErrors.NoRespondersError(subject));
      await learnSecretPaths(rt, e.workflow);
    }
    data = encodeInboxEvent(rt, e.workflow, e.id, e.event);
  }
  let headers: MsgHdrs | undefined = traceHeaders(e.trace);
  if (e.token) (headers ??= natsHeaders()).set(TOKEN_HEADER, e.token);
  if (e.replyTo) (headers ??= natsHeaders()).set(REPLY_HEADER, e.replyTo);
  let msgID: string;
  if (e.engine) {
    msgID = rt.security.signer.messageId(e.engine.logicalId);
    if (e.engine.send !== undefined) (headers ??= natsHeaders()).set(SEND_HEADER, e.engine.send);
    if (e.engine.toChild !== undefined) (headers ??= natsHeaders()).set(TO_CHILD_HEADER, e.engine.toChild);
    headers = rt.security.signer.headers(subject, msgID, data, headers ?? natsHeaders());
  } else {
    msgID = e.idempotencyKey ?? randomUUID();
  }
  let ack: PubAck;
  try {
    const options = { msgID, ...(headers ? { headers } : {}) };
    ack = await (relay ? relay.js.publish(subject, data, options) : rt.publish(subject, data, options));
  } catch (err) {
    if (!relay && isNoResponders(err) && !(await streamExists(rt, e.workflow, e.id))) throw notServed(rt, e.workflow, err);
    throw err;
  }
  if (ack.duplicate) {
    const stream = relay ? rt.names.relayStream : rt.names.eventStream(e.workflow, partitionOf(e.workflow, e.id, rt.partitions));
    await checkDuplicate(rt, e, { stream, jsm: relay?.jsm ?? rt.jsm }, subject, msgID, ack.seq);
  }
  return { seq: ack.seq, duplicate: ack.duplicate, bytes: data.length };
}

function notServed(rt: Runtime, workflow: string, cause: unknown): JetstateError {
  return new JetstateError(
    ErrorCode.NotServed,
    `workflow '${workflow}' is not served in namespace '${rt.names.namespace}': no engine has registered it, so it has no events streams; ` +
      `start an engine with this workflow (createEngine({ workflows: [...] })); nothing was sent`,
    { cause },
  );
}

/** Workflows whose events streams this process has seen (streams are not removed while they are served). */
const seenStreams = new WeakMap<Runtime, Set<string>>();

async function streamsSeen(rt: Runtime, workflow: string, id: string): Promise<boolean> {
  let seen = seenStreams.get(rt);
  if (seen?.has(workflow)) return true;
  if (!(await streamExists(rt, workflow, id))) return false;
  if (!seen) seenStreams.set(rt, (seen = new Set()));
  seen.add(workflow);
  return true;
}

async function streamExists(rt: Runtime, workflow: string, id: string): Promise<boolean> {
  try {
    await rt.jsm.streams.info(rt.names.eventStream(workflow, partitionOf(workflow, id, rt.partitions)));
    return true;
  } catch (e) {
    if (isStreamNotFound(e)) return false;
    return true; // cannot tell (a permission, a timeout): let the publish error stand
  }
}

/**
 * A duplicate is fine when the stored message is this one (a retry); otherwise someone else took
 * the message id. The stored message is compared opened (secrets are sealed with fresh IVs each
 * time). A sender not allowed to read the stream skips the check.
 */
async function checkDuplicate(
  rt: Runtime,
  e: InboxEvent,
  where: { stream: string; jsm: Runtime['jsm'] },
  subject: string,
  msgID: string,
  seq: number,
): Promise<void> {
  let stored: Uint8Array;
  try {
    const m = await where.jsm.streams.getMessage(where.stream, { seq });
    if (!m || m.subject !== subject) throw new Error('another subject');
    stored = m.data;
  } catch (err) {
    if (permissionViolation(err)) return;
    // Already trimmed: it was applied, and it was ours or the window would have let this through.
    if (isMessageNotFound(err)) return;
    if ((err as Error).message !== 'another subject') throw err;
    stored = new Uint8Array();
  }
  let same = false;
  try {
    // A send that waited in a record may hold envelopes sealed for the receiver already (codec.ts `sealFor`).
    const codec = rt.security.codec;
    same = canonicalJson(codec.openEvent(e.workflow, e.id, decodeJson(stored))) === canonicalJson(codec.openEvent(e.workflow, e.id, e.event));
  } catch {
    same = false;
  }
  if (!same) {
    const what = e.engine ? `engine event '${e.event.type}'` : `event '${e.event.type}'`;
    rt.logger.error(`workflow '${e.workflow}' instance '${e.id}': message id '${msgID}' of ${what} is taken by another message (stream sequence ${seq})`);
    throw new JetstateError(
      ErrorCode.DuplicateConflict,
      `workflow '${e.workflow}' instance '${e.id}': the idempotency key '${msgID}' is already used by a different message (sequence ${seq}); ` +
        `use a new key (include something unguessable in idempotency keys when other senders can publish to the same workflow); nothing was sent`,
    );
  }
}

/**
 * Tells a parent that its child could not start (its invoke ends with `ChildWorkflowNotStarted`),
 * under `logicalId`, so that telling it again is harmless.
 */
export async function tellParentChildNotStarted(
  rt: Runtime,
  parent: ParentRef,
  child: { workflow: string; id: string },
  message: string,
  logicalId: string,
  trace: TraceCarrier | undefined,
): Promise<void> {
  await publishToInstance(rt, {
    workflow: parent.workflow,
    id: parent.id,
    event: outcomeEvent(EngineEvent.Child, parent, { ok: false, error: { name: 'ChildWorkflowNotStarted', message } }, child),
    engine: { logicalId },
    trace,
  });
}
