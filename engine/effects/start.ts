/**
 * Creating an instance, shared by `start()` and by parents starting child workflows; and telling
 * a parent that its child finished.
 */
import { z } from 'zod';
import type { WorkflowDefinition } from '../define/definition.js';
import { ErrorCode, fail } from '../errors.js';
import { publishHistory } from '../store/history.js';
import { partitionOf } from '../protocol/names.js';
import { InstanceRecordSchema, canonicalJson, decodeJson, encodeJson, type InstanceRecord } from '../protocol/record.js';
import type { Runtime } from '../store/runtime.js';
import { CHILD_EVENT, KICK_EVENT, startInstance, type MachineRunner } from '../step/step.js';
import { publishTasks, tasksStartedBy } from './tasks.js';
import { publishTimers } from './timers.js';
import type { ChildResultEvent } from '../define/child.js';
import { ROOT_CONTEXT, type Context } from '@opentelemetry/api';
import { SpanKind, SpanStatusCode, carrierOf, carrierOfActive, failSpan, transitionAttributes, type TraceCarrier } from '../telemetry/telemetry.js';
import { limitsOf, type IdentitySummary } from '../gate/admission.js';

/**
 * Validates the input and creates the record with `kv.create`, idempotent by id: the same input
 * returns the existing record; a different one is an `INSTANCE_CONFLICT` error.
 */
export async function createInstance(
  rt: Runtime,
  workflow: WorkflowDefinition,
  runner: MachineRunner,
  id: string,
  input: unknown,
  parent?: InstanceRecord['parent'],
  traceParent: Context = ROOT_CONTEXT,
  startedBy?: IdentitySummary,
): Promise<InstanceRecord> {
  const parsed = workflow.input.safeParse(input);
  if (!parsed.success) {
    fail(ErrorCode.InvalidInput, `workflow '${workflow.name}' instance '${id}': input is not valid; nothing was started:\n${z.prettifyError(parsed.error)}`);
  }
  const key = rt.names.instanceKey(workflow.name, id);
  const started = startInstance(workflow, runner, id, parsed.data, Date.now(), parent);
  const { codec, signer } = rt.security;
  // Signing (the kick, the digest below) needs the namespace's key: read only now, so clients
  // that never sign need no access to it; a client not allowed to read it fails here, before anything is written.
  if (codec.has(workflow.name) || started.record.outbox.length > 0) await signer.ready();
  // A plain digest of an input with secrets would let a guesser test values against it.
  if (codec.has(workflow.name)) started.record.inputDigest = signer.sign('input-digest', Buffer.from(canonicalJson(parsed.data) ?? 'undefined'));
  if (startedBy) started.entry.identity = startedBy;
  const tel = rt.telemetry;
  const span = tel.startSpan(`jetstate.transition ${workflow.name}`, SpanKind.INTERNAL, transitionAttributes(started.record, started.entry, 0), traceParent);
  const carrier = carrierOf(span) ?? carrierOfActive(traceParent);
  if (carrier) started.record.trace = carrier;
  const stored = encodeJson(codec.sealRecord(started.record));
  const { maxSnapshotBytes } = limitsOf(rt, workflow);
  if (stored.length > maxSnapshotBytes) {
    span.end();
    fail(ErrorCode.LimitExceeded, `[limit.snapshot_size] workflow '${workflow.name}' instance '${id}': the initial record is ${stored.length} bytes, over the limit of ${maxSnapshotBytes}; keep large data outside the context (pass references); nothing was started`);
  }
  try {
    // Timers first: they cannot act before the record exists (see timers.ts).
    await publishTimers(rt, workflow.name, id, started.timers, carrier);
    // The start's custom actions run in the engine that owns the instance, after the create.
    if (started.record.outbox.length > 0) await kick(rt, workflow.name, id, started.record.inputDigest, carrier);
    await rt.instances.create(key, stored);
    tel.instances.add(1, { 'jetstate.workflow': workflow.name, 'jetstate.status': started.record.status });
    if (started.record.status === 'failed') span.setStatus({ code: SpanStatusCode.ERROR, message: started.record.error ?? 'failed' });
    await publishTasks(rt, workflow.name, id, started.tasks, carrier);
    await publishHistory(rt, workflow.name, id, [started.entry]);
    span.end();
    return started.record;
  } catch (e) {
    if (!/wrong last sequence|key exists/i.test((e as Error).message)) {
      failSpan(span, e);
      span.end();
      throw e;
    }
  }
  // Idempotent retry of a start: the existing instance's own start span stands.
  span.setAttribute('jetstate.duplicate', true);
  span.end();
  const entry = await rt.instances.get(key);
  if (!entry || entry.operation !== 'PUT') fail(ErrorCode.InstanceConflict, `workflow '${workflow.name}' instance '${id}' was deleted while starting; start it again`);
  const existing = InstanceRecordSchema.safeParse(decodeJson(entry.value));
  if (!existing.success) fail(ErrorCode.RecordUnreadable, `workflow '${workflow.name}' instance '${id}': the stored record is unreadable; it was left untouched`);
  existing.data = codec.openRecord(existing.data);
  if (existing.data.inputDigest !== started.record.inputDigest) {
    fail(ErrorCode.InstanceConflict, `workflow '${workflow.name}' instance '${id}' already exists with a different input; use another id, or the same input to get the existing instance`);
  }
  // A start that crashed before its tasks and history were published is finished by its retry.
  if (existing.data.revision === 1) {
    await publishTasks(rt, workflow.name, id, tasksStartedBy(existing.data), existing.data.trace);
    await publishHistory(rt, workflow.name, id, existing.data.lastHistory);
  }
  return existing.data;
}

async function kick(rt: Runtime, workflow: string, id: string, inputDigest: string, carrier: TraceCarrier | undefined): Promise<void> {
  const subject = rt.names.eventSubject(partitionOf(workflow, id, rt.partitions), workflow, id);
  const data = encodeJson({ type: KICK_EVENT });
  await rt.js.publish(subject, data, rt.security.signer.options(subject, data, { msgID: `kick.${workflow}.${id}.${inputDigest}` }, carrier));
}

/** Sends a finished child's outcome to its parent's inbox; idempotent (stable message id). */
export async function notifyParent(rt: Runtime, child: InstanceRecord): Promise<void> {
  const parent = child.parent;
  if (!parent || (child.status !== 'done' && child.status !== 'failed')) return;
  const event: ChildResultEvent =
    child.status === 'done'
      ? { type: CHILD_EVENT, invokeId: parent.invokeId, token: parent.token, ok: true, output: rt.security.codec.seal(parent.workflow, parent.id, 'output', child.output) }
      : { type: CHILD_EVENT, invokeId: parent.invokeId, token: parent.token, ok: false, error: { name: 'ChildWorkflowFailed', message: child.error ?? 'failed' } };
  const subject = rt.names.eventSubject(partitionOf(parent.workflow, parent.id, rt.partitions), parent.workflow, parent.id);
  const data = encodeJson(event);
  await rt.js.publish(subject, data, rt.security.signer.options(subject, data, { msgID: `child.${child.workflow}.${child.id}` }, child.trace));
}
