/**
 * Applies one batch of an instance's events, in stream order: the pipeline every event takes.
 *
 *   load the record → repair its last write if a crash cut that short → the event gate → the
 *   per-instance rate → the pure step → the record-size limit → commit (persist, then act) →
 *   dead letters for what was refused
 *
 * A start creates the record (a start for an instance that exists is a retry, or a conflict);
 * any other event for an instance that does not exist is refused. Events at or below the
 * record's `lastSeq` were applied before (a redelivery) and are skipped: that is what makes the
 * state effect exactly-once.
 */
import { canonicalJson, decodeJson, digest, encodeJson } from '../protocol/json.js';
import { EngineEvent, isChildResult, isStart, isTaskResult, outcomeEvent, parentToken, type ParentRef } from '../protocol/events.js';
import { HistoryKind, instanceTag, isBeforeDelete, type HistoryEntry, type InstanceRecord } from '../protocol/record.js';
import { BlockedError, ConflictError, MissingKeyError, NotYetError } from '../errors.js';
import { isCasConflict } from '../store/nats-errors.js';
import type { Runtime } from '../store/runtime.js';
import type { InstanceStore, LoadedInstance } from '../store/records.js';
import { publishHistory } from '../store/history.js';
import { tellParentChildNotStarted } from '../store/inbox.js';
import { deadLetter } from '../store/dead-letters.js';
import { redactPaths } from '../security/redact.js';
import type { WorkflowDefinition } from '../define/definition.js';
import { applyEvents, startInstance, type StepEvent } from '../step/step.js';
import { gateEvent, readable, rejection, signatureProblem, startVersion, takeRate, type GatedEvent, type RawEvent } from '../gate/event-gate.js';
import { limitsOf } from '../gate/admission.js';
import { TransitionSpans } from '../telemetry/transition-spans.js';
import type { TraceCarrier, TraceSource } from '../telemetry/telemetry.js';
import type { TaskService } from '../effects/tasks.js';
import type { TaskChange } from '../step/plan.js';
import { journal, type Committer } from './commit.js';
import { Received, sendOf } from '../gate/received.js';

/** Where the engine answers a start: an inbox (`_INBOX.` or a per-user `_INBOX...` prefix), no wildcards. */
const REPLY_SUBJECT = /^_INBOX[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$/;

/** Attempts to verify a sender while its identity provider cannot be reached, before the event is rejected. */
const IDENTITY_RETRIES = 8;
/** How long a step waits for its instance's history to be stored before it is tried again (the stream is slow or away). */
const HISTORY_WAIT_MS = 5_000;

export interface ApplyContext {
  rt: Runtime;
  store: InstanceStore;
  committer: Committer;
  /** The partition stream the batch was read from (for dead letters). */
  stream: string;
  partition: number;
  /** Oldest an engine signature may be when its event was accepted. */
  signatureMaxAgeMs: number;
  /** Runs tasks in process (absent: every task goes through the tasks stream). */
  tasks?: TaskService | undefined;
  /** The worker, which holds the events of instances whose tasks run in process. */
  local?: LocalTasks | undefined;
  /** Aborted when this engine no longer owns the partition: a delivery still waiting is left to the next owner. */
  owned?: AbortSignal | undefined;
  /** Whether a live engine of the namespace has the key `keyId` in its ring (from the members' heartbeats). */
  keyLive?: ((keyId: string) => boolean) | undefined;
}

/** Where the tasks a write starts may run in process (see PartitionWorker). */
export interface LocalTasks {
  take(record: InstanceRecord, tasks: readonly TaskChange[]): TaskChange[];
  startLocal(key: string, record: InstanceRecord, tasks: readonly TaskChange[], trace: TraceSource): void;
}

/** Answers to starts, sent once the batch is durable. */
interface Reply {
  to: string;
  body: Record<string, unknown>;
}

/** Applies a batch; true when finished, or the reason the instance is blocked (its events wait). */
export async function applyBatch(
  ctx: ApplyContext,
  key: string,
  workflow: string,
  id: string,
  batch: readonly RawEvent[],
  attempt: number,
): Promise<true | string> {
  const replies: Reply[] = [];
  let rest = batch;
  // A start of an instance this engine has not cached is almost always of a new instance: it is
  // created without reading first. The create is compare-and-set: if the record exists after all,
  // the batch is computed again from a fresh read (processWithRetry), as after any conflict. A
  // start that creates nothing (refused, or waiting for its version) proves nothing: the record is
  // read before anything else is judged.
  let assumed = attempt === 0 && !ctx.store.has(key) && isStart(safeType(batch[0]!.data));
  let loaded: Awaited<ReturnType<typeof ctx.store.load>> = assumed ? { problem: 'missing' } : await ctx.store.load(key);
  while (rest.length > 0 && 'problem' in loaded) {
    if (loaded.problem !== 'missing') return loaded.message;
    if (assumed && !isStart(safeType(rest[0]!.data))) {
      assumed = false;
      loaded = await ctx.store.load(key);
      continue;
    }
    const head = rest[0]!;
    if (isBeforeDelete(loaded.marker?.note, head)) {
      // Decided before the instance was deleted (read again from a checkpoint behind its delete):
      // a start would create it again and run its effects a second time.
      ctx.rt.logger.debug(`workflow '${workflow}' instance '${id}': event ${head.seq} came before its delete; skipped`);
      ctx.rt.telemetry.redeliveries.add(1, { 'jetstate.reason': 'deleted' });
      rest = rest.slice(1);
      continue;
    }
    const created = await createFromStart(ctx, key, workflow, id, head, attempt, replies, loaded.marker?.revision);
    if (typeof created === 'string' && assumed) {
      // Waiting for its version is for a new instance; an existing one answers the start itself.
      assumed = false;
      loaded = await ctx.store.load(key);
      continue;
    }
    if (typeof created === 'string') return created;
    rest = rest.slice(1);
    if (created) loaded = created;
  }
  while (rest.length > 0 && !('problem' in loaded)) {
    let instance: LoadedInstance = loaded;
    // A delete ends the instance: the events before it apply to it; the ones after it find no record.
    const cut = rest.findIndex((e) => e.seq > instance.record.lastSeq && typeOf(e.data) === EngineEvent.Delete);
    const before = cut < 0 ? rest : rest.slice(0, cut);
    if (before.length > 0) loaded = instance = await applyTo(ctx, key, instance, before, attempt, replies);
    if (cut < 0) break;
    const deleted = await deleteInstance(ctx, key, instance, rest[cut]!, attempt);
    rest = rest.slice(cut + 1);
    if (deleted) return rest.length > 0 ? applyBatchAgain(ctx, key, workflow, id, rest, attempt, replies) : finishReplies(ctx, replies);
  }
  return finishReplies(ctx, replies);
}

async function applyBatchAgain(
  ctx: ApplyContext,
  key: string,
  workflow: string,
  id: string,
  batch: readonly RawEvent[],
  attempt: number,
  replies: Reply[],
): Promise<true | string> {
  const outcome = await applyBatch(ctx, key, workflow, id, batch, attempt);
  finishReplies(ctx, replies);
  return outcome;
}

/** Answers go only to reply inboxes: a sender cannot make the engine publish on other subjects. */
function finishReplies(ctx: ApplyContext, replies: Reply[]): true {
  for (const r of replies) if (REPLY_SUBJECT.test(r.to)) ctx.rt.nc.publish(r.to, JSON.stringify(r.body));
  replies.length = 0;
  return true;
}

/**
 * Deletes a finished instance: its record, its history and any parked note. A running one must be
 * terminated first (the delete is refused and recorded). True when it was deleted.
 */
async function deleteInstance(ctx: ApplyContext, key: string, loaded: LoadedInstance, e: RawEvent, attempt: number): Promise<boolean> {
  const { rt } = ctx;
  const { record } = loaded;
  const gated = await gate(ctx, loaded.def, record.id, e, attempt);
  const refusal =
    gated.rejected ?? (record.status === 'running' ? `[instance.running] instance '${record.id}' is running; terminate it before deleting it` : undefined);
  if (refusal !== undefined) {
    await refuse(
      ctx,
      record.workflow,
      record.id,
      e,
      refusal,
      'rejected',
      { type: EngineEvent.Delete },
      { revision: record.revision, value: loaded.snapshot.value, status: record.status },
    );
    return false;
  }
  // Judged on the record as it is stored: one cached here may be stale (another engine wrote it
  // while it owned the partition), and the purge below would then hit an instance it did not judge.
  const stored = await rt.records.ofKey(key).get(key);
  if (stored?.revision !== loaded.kvRevision) {
    ctx.store.invalidate(key);
    throw new ConflictError(key);
  }
  // History of earlier writes still on its way would land after the purge, and an instance started
  // again under this id would show it.
  if (!(await ctx.committer.settle(key, HISTORY_WAIT_MS)))
    throw new Error(`its history is not stored yet (see the history warnings); the delete waits until it is`);
  // The history first: a purge that fails leaves the instance whole (the delete is tried again),
  // where a record deleted first would leave its history to an instance started again under the id.
  try {
    await rt.jsm.streams.purge(rt.names.historyStream, { filter: rt.names.historySubject(record.workflow, record.id) });
  } catch (err) {
    throw new Error(`delete: its history cannot be purged (${(err as Error).message}); the instance stays as it is until it can`, { cause: err });
  }
  try {
    await rt.records.remove(key, loaded.kvRevision, { deletedSeq: e.seq, deletedAtMs: e.timeMs });
  } catch (err) {
    if (isCasConflict(err)) throw new ConflictError(key, { cause: err });
    throw err;
  } finally {
    ctx.store.invalidate(key);
  }
  ctx.committer.forget(key, record.born);
  await rt.control.delete(rt.names.parkedKey(record.workflow, record.id)).catch(() => {});
  rt.logger.info(`workflow '${record.workflow}' instance '${record.id}' deleted`, { by: gated.identity?.subject ?? 'anonymous', seq: e.seq });
  rt.telemetry.instances.add(-1, { 'jetstate.workflow': record.workflow, 'jetstate.status': record.status });
  return true;
}

/** True when a send comes from the instance's parent (the same generation, when both say). */
function fromParent(send: { sender: string; at: readonly number[] } | undefined, parent: ParentRef | undefined): boolean {
  if (!send || !parent || send.sender !== `${parent.workflow}.${parent.id}`) return false;
  const born = send.at[0];
  return parent.born === undefined || !born || born === parent.born;
}

function sameParent(a: ParentRef | undefined, b: ParentRef): boolean {
  return a !== undefined && a.workflow === b.workflow && a.id === b.id && a.invokeId === b.invokeId && a.token === b.token && a.born === b.born;
}

/** Tells a parent that its child's id is held by another instance (its invoke fails); returns the reason. */
async function childIdTaken(ctx: ApplyContext, record: InstanceRecord, parent: ParentRef, trace: TraceCarrier | undefined): Promise<string> {
  const holder = record.parent
    ? `the child of an earlier instance '${record.parent.id}' of workflow '${record.parent.workflow}'`
    : 'an instance started on its own';
  const message = `instance '${record.id}' of workflow '${record.workflow}' already exists (${holder}), so instance '${parent.id}' cannot start its child '${parent.invokeId}' under that id; delete '${record.id}' first, or invoke the child under another id`;
  await tellParentChildNotStarted(
    ctx.rt,
    parent,
    { workflow: record.workflow, id: record.id },
    message,
    `taken.${record.workflow}.${record.id}.${parent.workflow}.${instanceTag(parent)}.${parent.token}.${parent.invokeId}`,
    trace,
  );
  return `[instance.exists] ${message}`;
}

/**
 * The first event of an instance that has no record: a start creates it; anything else is
 * refused. Returns the new instance, null when the event was refused, or the reason to wait.
 */
async function createFromStart(
  ctx: ApplyContext,
  key: string,
  workflow: string,
  id: string,
  e: RawEvent,
  attempt: number,
  replies: Reply[],
  over: number | undefined,
): Promise<LoadedInstance | null | string> {
  const { rt } = ctx;
  const version = startVersion(e.data);
  const looksLikeStart = isStart(safeType(e.data));
  if (!looksLikeStart) {
    await refuse(ctx, workflow, id, e, `instance '${id}' of workflow '${workflow}' does not exist; start it first`, 'missing_instance');
    return null;
  }
  const found = version !== undefined ? rt.registry.find(workflow, version) : rt.registry.latest(workflow);
  if (!found) {
    // Only a sender allowed to start this workflow (by the newest version's rules) may make a start
    // wait for an engine with its version: a wait holds the instance and its partition's trim.
    const newest = rt.registry.latest(workflow);
    const judged = newest ? await gate(ctx, newest.def, id, e, attempt, true) : undefined;
    if (judged?.rejected !== undefined) {
      const reason = `${judged.rejected} (a start for version ${version}, which this engine does not have, judged by version ${newest!.def.version}'s rules)`;
      await refuse(ctx, workflow, id, e, reason, 'rejected', judged.event);
      await tellParentOfRefusal(ctx, workflow, id, e, reason);
      if (e.replyTo) replies.push({ to: e.replyTo, body: { outcome: 'rejected', reason } });
      return null;
    }
    return `workflow '${workflow}' instance '${id}': its start asks for version ${version}, which is not registered in this engine; register it, or run an engine that has it. The start waits in the stream.`;
  }
  // A start for an older version: its sender must pass the newest version's start rules too, or
  // an older version's weaker rules would let anyone the newest refuses create (and drive) an instance.
  const newest = rt.registry.latest(workflow);
  if (newest && newest.def.version !== found.def.version) {
    const judged = await gate(ctx, newest.def, id, e, attempt, true);
    if (judged.rejected !== undefined) {
      const reason = `${judged.rejected} (a start for version ${found.def.version}, judged by the newest version ${newest.def.version}'s rules too)`;
      await refuse(ctx, workflow, id, e, reason, 'rejected', judged.event);
      await tellParentOfRefusal(ctx, workflow, id, e, reason);
      if (e.replyTo) replies.push({ to: e.replyTo, body: { outcome: 'rejected', reason } });
      return null;
    }
  }
  const gated = await gate(ctx, found.def, id, e, attempt);
  if (gated.rejected !== undefined || !gated.start) {
    await refuse(ctx, workflow, id, e, gated.rejected ?? 'not a start', 'rejected', gated.event);
    await tellParentOfRefusal(ctx, workflow, id, e, gated.rejected ?? 'not a start');
    if (e.replyTo) replies.push({ to: e.replyTo, body: { outcome: 'rejected', reason: gated.rejected } });
    return null;
  }
  // Its workflow's secret paths as this engine seals them (a newer version may have published more): what it passes a child stays sealed.
  const declared = ctx.rt.security.codec.pathsOf(workflow);
  const started = startInstance(found.def, found.runner, id, gated.start.input, e.timeMs, gated.start.parent, gated.start.secrets, e.seq, declared);
  started.record.lastSeq = e.seq;
  started.entry.seq = e.seq;
  started.record.lastHistory = [started.entry];
  started.record.inputDigest = inputDigest(rt, found.def, gated.start.input, gated.start.secrets);
  if (gated.identity) started.entry.identity = gated.identity;
  const spans = new TransitionSpans(
    rt.telemetry,
    started.record,
    [started.entry],
    new Map([[e.seq, e.trace]]),
    attempt,
    ctx.partition,
    Date.now(),
    rt.telemetry.tracingActive() || e.trace !== undefined,
  );
  const last = spans.last();
  if (last) started.record.trace = last;
  let stored = ctx.store.encode(started.record);
  const { maxSnapshotBytes } = limitsOf(rt.security.limits, found.def);
  if (stored.bytes.length > maxSnapshotBytes) {
    spans.end();
    const reason = `[limit.snapshot_size] the initial record would be ${stored.bytes.length} bytes, over the limit of ${maxSnapshotBytes}; keep large data outside the context (pass references)`;
    await refuse(ctx, workflow, id, e, reason, 'rejected', { type: EngineEvent.Start });
    await tellParentOfRefusal(ctx, workflow, id, e, reason);
    if (e.replyTo) replies.push({ to: e.replyTo, body: { outcome: 'rejected', reason } });
    return null;
  }
  try {
    const local = ctx.local?.take(started.record, started.tasks) ?? [];
    const written = await ctx.committer.create(
      key,
      found.def,
      found.runner,
      started.record,
      started.snapshot,
      stored.bytes,
      stored.sealed,
      {
        timers: started.timers,
        tasks: local.length > 0 ? started.tasks.filter((t) => !local.includes(t)) : started.tasks,
        cancelledTasks: [],
        effects: started.effects,
        trace: spans.byRevision,
        afterWrite: local.length > 0 ? (w) => ctx.local!.startLocal(key, w.record, local, spans.byRevision) : undefined,
        owned: ctx.owned,
      },
      over,
    );
    spans.end();
    if (e.replyTo) replies.push({ to: e.replyTo, body: { outcome: 'created', revision: 1, seq: e.seq } });
    return written;
  } catch (err) {
    spans.fail(err);
    throw err;
  }
}

async function applyTo(
  ctx: ApplyContext,
  key: string,
  loaded: LoadedInstance,
  batch: readonly RawEvent[],
  attempt: number,
  replies: Reply[],
): Promise<LoadedInstance> {
  const { rt } = ctx;
  const tel = rt.telemetry;
  const startedAt = performance.timeOrigin + performance.now();
  const { record, def } = loaded;
  // The write of the last applied event may have been cut off before its effects: finish that first.
  if (ctx.committer.needsRepair(key) || batch.some((e) => e.seq === record.lastSeq)) loaded = await ctx.committer.repair(key, loaded, ctx.owned);
  // Events read again that were judged already are skipped below: a rejection among them may have
  // lost its dead letter to the stop (it goes out after the write), so it is copied now
  // (deduplicated by the event's sequence).
  const judged = (e: RawEvent): boolean => !e.local && e.seq <= record.lastSeq;
  if (batch.some(judged)) await deadLetters(ctx, record.workflow, record.id, batch.filter(judged), record.lastHistory);
  const events: StepEvent[] = [];
  const traceBySeq = new Map<number, TraceCarrier | undefined>();
  const limits = limitsOf(rt.security.limits, def);
  let bucket = record.rate;
  let reread = 0;
  const received = new Received(record.received);
  for (const e of batch) {
    if (e.local) {
      // A task's outcome from this process: trusted, applied whatever its sequence.
      traceBySeq.set(0, e.trace);
      events.push({ seq: 0, timeMs: e.timeMs, event: e.local.event as unknown as { type: string }, force: true });
      continue;
    }
    if (e.seq <= record.lastSeq) {
      reread++;
      continue;
    }
    traceBySeq.set(e.seq, e.trace);
    let gated = await gate(ctx, def, record.id, e, attempt);
    // A child start refused here (the id is held by an instance already) is told to its parent,
    // as one refused before any record exists is: else the parent would wait for ever.
    if (gated.rejected !== undefined && isStart(safeType(e.data))) await tellParentOfRefusal(ctx, record.workflow, record.id, e, gated.rejected);
    if (gated.start?.parent && gated.rejected === undefined && !sameParent(record.parent, gated.start.parent)) {
      // A child start for an id that another instance holds (a parent deleted and started again, or
      // an instance started on its own under a child's id): the parent would wait for ever.
      gated = rejection(e, { type: EngineEvent.Start }, await childIdTaken(ctx, record, gated.start.parent, e.trace), 0);
    } else if (gated.start && gated.rejected === undefined) {
      // A start for an instance that exists: the same input is a retry, another one a conflict.
      const same = sameInput(rt, def, gated.start.input, record);
      if (e.replyTo) replies.push({ to: e.replyTo, body: { outcome: same ? 'exists' : 'conflict', revision: record.revision } });
      if (same) continue;
      gated = rejection(e, { type: EngineEvent.Start }, `[instance.exists] instance '${record.id}' already exists with a different input`, 0);
    }
    // A signature the gate accepted (jetstate.self carries no identity, a user type the engine's).
    const send = gated.rejected === undefined && e.signature !== undefined ? sendOf(rt.security.signer, e) : undefined;
    // A send to a child, from an instance that is not this one's parent: its start of this id was
    // refused (another parent's child holds it), and it sent before it heard so.
    if (gated.rejected === undefined && e.toChild !== undefined && !fromParent(send, record.parent)) {
      const sender = send?.sender ?? 'an unknown sender';
      gated = rejection(
        e,
        gated.event,
        `[not_parent] a send to the child '${e.toChild}' of '${sender}', which is not the parent of instance '${record.id}'`,
        0,
      );
    }
    if (send && received.seen(send.sender, send.at)) {
      // Its sender's outbox ran again later than the duplicate window: applied already.
      rt.logger.info(`instance '${record.id}': event ${e.seq} is send '${e.send}' from '${send.sender}', applied already; skipped`, {
        workflow: record.workflow,
        id: record.id,
      });
      tel.redeliveries.add(1, { 'jetstate.reason': 'applied' });
      continue;
    }
    if (gated.rated && limits.maxEventsPerSecond !== undefined) {
      const taken = takeRate(bucket, limits.maxEventsPerSecond, e.timeMs);
      bucket = taken.bucket;
      if (!taken.ok)
        gated = rejection(e, gated.event, `[limit.rate] instance '${record.id}' takes at most ${limits.maxEventsPerSecond} events per second`, e.data.length);
    }
    events.push(gated);
  }
  if (reread > 0) tel.redeliveries.add(reread, { 'jetstate.reason': 'applied' });
  if (events.length === 0) return loaded;
  const judgedUpTo = batch.some((e) => e.local) ? Math.max(0, ...batch.map((e) => (e.local ? (e.local.after ?? 0) : e.seq))) : 0;
  const now = Date.now();
  const traced = tel.tracingActive() || batch.some((e) => e.trace !== undefined);
  let spans!: TransitionSpans;
  // The spans of the transitions are made with them, so that the record is encoded once, with the
  // trace context it keeps; a step computed again (a record over its size limit) makes new ones,
  // and the first ones, never ended, are never exported.
  // The workflow's secret paths as this engine seals them: what the step passes a child stays sealed.
  const declared = ctx.rt.security.codec.pathsOf(record.workflow);
  const step = (list: StepEvent[]): ReturnType<typeof applyEvents> => {
    const r = applyEvents(loaded.runner, record, loaded.snapshot, list, now, declared);
    spans = new TransitionSpans(tel, record, r.entries, traceBySeq, attempt, ctx.partition, startedAt, traced);
    if (r.changed) {
      // A local outcome (sequence 0) records the events judged before it, and those of the batch.
      if (judgedUpTo > r.record.lastSeq) r.record.lastSeq = judgedUpTo;
      if (bucket) r.record.rate = bucket;
      if (received.changed) r.record.received = received.changed;
      r.record.lastHistory = journal(ctx.committer, key, record.born, record.lastHistory, r.entries);
      const last = spans.last();
      if (last) r.record.trace = last;
      else delete r.record.trace;
    }
    return r;
  };
  let result = step(events);
  let stored = result.changed ? ctx.store.encode(result.record) : undefined;
  if (result.changed && stored!.bytes.length > limits.maxSnapshotBytes && record.lastHistory.length > 0) {
    // The record carries history the stream has not confirmed yet: wait for it, never reject an
    // event because the history stream is slow or away.
    await ctx.committer.settle(key, HISTORY_WAIT_MS);
    result = step(events);
    stored = ctx.store.encode(result.record);
    const carried = result.record.lastHistory.length - result.entries.length;
    if (
      stored.bytes.length > limits.maxSnapshotBytes &&
      carried > 0 &&
      ctx.store.encode({ ...result.record, lastHistory: result.entries }).bytes.length <= limits.maxSnapshotBytes
    ) {
      throw new Error(`instance '${record.id}' keeps ${carried} history entries the history stream has not confirmed; its events wait until it does`);
    }
  }
  while (result.changed && stored!.bytes.length > limits.maxSnapshotBytes) {
    // Reject the first event whose application makes the record too large, and apply the rest.
    const size = stored!.bytes.length;
    let j = events.findIndex((ev, i) => {
      if (ev.rejected !== undefined) return false;
      const partial = applyEvents(loaded.runner, record, loaded.snapshot, events.slice(0, i + 1), now, declared);
      // With every sender of the batch (as the write will have): never more than the write's size.
      if (received.changed) partial.record.received = received.changed;
      return partial.changed && ctx.store.encode(partial.record).bytes.length > limits.maxSnapshotBytes;
    });
    if (j < 0) j = events.findLastIndex((ev) => ev.rejected === undefined);
    if (j < 0) break;
    const over = events[j]!;
    const outcome = over.rejected === undefined && (isTaskResult(over.event) || isChildResult(over.event)) ? over.event : undefined;
    // An invoke's result that cannot be kept is its error (the instance would wait for ever for a
    // rejected one); anything else is rejected. A local task outcome keeps `force` (sequence 0).
    const failed = outcome?.ok
      ? outcomeEvent(
          outcome.type,
          outcome,
          {
            ok: false,
            error: {
              name: 'TerminalError',
              message: `[limit.snapshot_size] the result of '${outcome.invokeId}' would make the record about ${size} bytes, over this workflow's maxSnapshotBytes limit of ${limits.maxSnapshotBytes}; keep large data outside the context (store it elsewhere and keep a reference)`,
            },
          },
          outcome.child,
        )
      : undefined;
    events[j] = failed
      ? { ...over, event: failed }
      : {
          seq: over.seq,
          timeMs: over.timeMs,
          event: over.event,
          identity: over.identity,
          ...(over.force ? { force: true } : {}),
          rejected: `[limit.snapshot_size] applying it would make the record about ${size} bytes, over the limit of ${limits.maxSnapshotBytes}; keep large data outside the context`,
        };
    result = step(events);
    stored = result.changed ? ctx.store.encode(result.record) : undefined;
  }
  let written = loaded;
  try {
    if (result.changed) {
      const local = ctx.local?.take(result.record, result.tasks) ?? [];
      written = await ctx.committer.write(key, loaded, result.record, result.snapshot, stored!.bytes, stored!.sealed, {
        timers: result.timers,
        tasks: local.length > 0 ? result.tasks.filter((t) => !local.includes(t)) : result.tasks,
        cancelledTasks: result.cancelledTasks,
        effects: result.effects,
        trace: spans.byRevision,
        // Tasks run here start as soon as the state is durable, while its effects go out.
        afterWrite: local.length > 0 ? (w) => ctx.local!.startLocal(key, w.record, local, spans.byRevision) : undefined,
        owned: ctx.owned,
      });
    } else {
      // Only rejections: they are history too.
      await publishHistory(rt, record, result.entries, record.secrets);
    }
    await deadLetters(ctx, record.workflow, record.id, batch, result.entries);
    spans.end();
    return written;
  } catch (e) {
    spans.fail(e);
    throw e;
  }
}

async function gate(ctx: ApplyContext, def: WorkflowDefinition, id: string, e: RawEvent, attempt: number, senderOnly = false): Promise<GatedEvent> {
  let gated: Awaited<ReturnType<typeof gateEvent>>;
  try {
    gated = await gateEvent(ctx.rt.security, def, id, e, { signatureMaxAgeMs: ctx.signatureMaxAgeMs, senderOnly });
  } catch (err) {
    if (!(err instanceof MissingKeyError)) throw err;
    return missingKey(ctx, def, id, e, err);
  }
  if ('retry' in gated) {
    if (attempt < IDENTITY_RETRIES) throw new NotYetError(`verifying the sender of event ${e.seq} failed (${gated.retry}); retrying`);
    return rejection(e, readable(e.data), gated.retry, 0);
  }
  return gated;
}

/**
 * An event an engine signed, sealed with a key this engine's ring lacks. A key a live engine of
 * the namespace has (its heartbeat names its ring's key ids): that engine made it primary before
 * this one had it, so the instance waits (parked) for this engine to get it. Any other key (a
 * made-up one, or one every ring has dropped) came from outside: an envelope a sender made up and
 * an engine passed on as it was. Refused, as from a client: nobody can hold an instance up with one.
 */
function missingKey(ctx: ApplyContext, def: WorkflowDefinition, id: string, e: RawEvent, err: MissingKeyError): GatedEvent {
  const named = typeOf(e.data);
  const type = typeof named === 'string' ? named.slice(0, 128) : 'unknown';
  if (!ctx.keyLive?.(err.keyId)) return rejection(e, { type }, `[secrets.unreadable] ${err.message}`, 0);
  throw new BlockedError(
    `workflow '${def.name}' instance '${id}': event ${e.seq} ('${type}'), signed by an engine, cannot be opened here: ${err.message}. ` +
      `Another engine has key '${err.keyId}' and made it primary before this one had it (give every engine a new key before any makes it primary: docs/SECURITY.md, "Keys"); ` +
      `the event and the instance's later ones wait in the stream: restart this engine with that key in its ring`,
  );
}

/**
 * The digest a start's input is compared by, to tell a retry (the same input) from a conflict.
 * For an instance with secrets (declared or inherited) it leaves their fields out, so a start
 * cannot test guesses of a secret (a right one would be "the same"), and it is keyed, so the
 * digest in the record reveals nothing of the other fields either.
 */
function inputDigest(rt: Runtime, def: WorkflowDefinition, input: unknown, inherited: readonly string[] | undefined): string {
  const { codec, signer } = rt.security;
  if (!codec.has(def.name, inherited)) return digest(input);
  return WITHOUT_SECRETS + signer.keyed('input-digest', canonicalJson(redactPaths(input, codec.pathsFor(def.name, inherited))) ?? 'undefined');
}

/** Marks a digest made without the input's secret fields. */
const WITHOUT_SECRETS = 'ns1:';

/** True when a start's input is the one the instance was started with, compared as its digest was made. */
function sameInput(rt: Runtime, def: WorkflowDefinition, input: unknown, record: InstanceRecord): boolean {
  // Started while the workflow had no secret paths (a version declared some since), or before
  // secret fields were left out: its whole input was digested, plainly or keyed.
  if (rt.security.codec.has(def.name, record.secrets) && !record.inputDigest.startsWith(WITHOUT_SECRETS))
    return digest(input) === record.inputDigest || rt.security.signer.keyed('input-digest', canonicalJson(input) ?? 'undefined') === record.inputDigest;
  return inputDigest(rt, def, input, record.secrets) === record.inputDigest;
}

/**
 * A refused child start: its parent's invoke gets the error (as when no engine serves the child's
 * workflow), or the parent would wait for ever. Only for a start an engine signed: a parent named
 * by anyone else is not told anything.
 */
async function tellParentOfRefusal(ctx: ApplyContext, workflow: string, id: string, e: RawEvent, reason: string): Promise<void> {
  const { rt } = ctx;
  let parent: ParentRef | undefined;
  try {
    parent = (decodeJson(e.data) as { parent?: ParentRef } | null)?.parent;
  } catch {
    return;
  }
  if (!parent || typeof parent !== 'object' || typeof parent.workflow !== 'string' || typeof parent.id !== 'string') return;
  if (e.signature === undefined || signatureProblem(rt.security, e, EngineEvent.Start, ctx.signatureMaxAgeMs)) return;
  const message = `child workflow '${workflow}' instance '${id}' refused its start: ${reason.slice(0, 1_000)}`;
  await tellParentChildNotStarted(rt, parent, { workflow, id }, message, `child.${workflow}.${id}.${parentToken(parent)}`, e.trace);
}

/**
 * An event refused outside the step (before an instance exists, or a delete): a history entry, a
 * dead letter, a metric. `at`: the instance as it stands, so the entry sorts after its last transition.
 */
async function refuse(
  ctx: ApplyContext,
  workflow: string,
  id: string,
  e: RawEvent,
  reason: string,
  metric: string,
  shown?: unknown,
  at?: { revision: number; value: HistoryEntry['to']; status: InstanceRecord['status'] },
): Promise<void> {
  const { rt } = ctx;
  const entry: HistoryEntry = {
    kind: HistoryKind.Rejected,
    revision: at?.revision ?? 0,
    seq: e.seq,
    event: shown ?? readable(e.data),
    from: at?.value ?? null,
    to: at?.value ?? null,
    status: at?.status ?? 'failed',
    timeMs: e.timeMs,
    reason,
  };
  rt.logger.warn(`workflow '${workflow}' instance '${id}': event ${e.seq} refused: ${reason.split('\n')[0]}`);
  rt.telemetry.rejected.add(1, { 'jetstate.workflow': workflow, 'jetstate.reason': metric });
  await publishHistory(rt, { workflow, id }, [entry]);
  await deadLetter(rt, { workflow, id, stream: ctx.stream, subject: e.subject, seq: e.seq, data: e.data, reason });
}

/** Copies rejected events, as they came, to the dead-letter stream with the reason. */
async function deadLetters(ctx: ApplyContext, workflow: string, id: string, batch: readonly RawEvent[], entries: readonly HistoryEntry[]): Promise<void> {
  const rejected = entries.filter((x) => x.kind === HistoryKind.Rejected);
  if (rejected.length === 0) return;
  await Promise.all(
    rejected.map((r) => {
      const e = batch.find((p) => p.seq === r.seq);
      // A task outcome from this process was never in the stream: its event is copied as it is.
      const data = e?.local ? encodeJson(e.local.event) : e?.data;
      return e && data
        ? deadLetter(ctx.rt, { workflow, id, stream: ctx.stream, subject: e.subject, seq: e.seq, data, reason: r.reason ?? 'rejected' })
        : undefined;
    }),
  );
}

/** The `type` of an encoded event, if it has one. */
function typeOf(data: Uint8Array): unknown {
  return (safeType(data) as { type?: unknown } | undefined)?.type;
}

function safeType(data: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(data)) as unknown;
  } catch {
    return undefined;
  }
}
