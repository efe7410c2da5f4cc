/**
 * Engine extensions: services that run beside an engine and finish tasks out of band, such as
 * the Step Functions adapter (an activity starts a long execution, returns `DEFER`, and the
 * extension delivers the outcome when the execution ends, possibly hours and engine restarts
 * later). The host gives an extension what it needs and nothing of the engine's internals.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { TerminalError } from '../define/activity.js';
import { partitionOf } from '../protocol/names.js';
import type { Logger } from '../options.js';
import { InstanceRecordSchema, decodeJson, encodeJson, shortHash } from '../protocol/record.js';
import type { Runtime } from '../store/runtime.js';
import { TASK_EVENT, type TaskResultEvent } from '../step/step.js';
import type { Telemetry, TraceCarrier } from '../telemetry/telemetry.js';

/** Returned by an activity whose outcome an extension delivers later with `completeTask`. */
export const DEFER: unique symbol = Symbol.for('jetstate.task.defer') as never;

/** Names one invocation of a task: the same for every attempt. */
export interface TaskRef {
  workflow: string;
  id: string;
  invokeId: string;
  token: number;
}

export type TaskOutcome =
  | { ok: true; output: unknown }
  | { ok: false; error: { name: string; message: string } & Record<string, unknown> };

export interface ExtensionHost {
  readonly namespace: string;
  readonly engineId: string;
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly logger: Logger;
  readonly telemetry: Telemetry;
  readonly replicas: number;
  /** Opens (creating if needed) the KV bucket `<namespace>_<suffix>`. */
  bucket(suffix: string): Promise<KV>;
  /** Delivers a task's outcome to its instance; idempotent, applied only while the task is pending. */
  completeTask(ref: TaskRef, outcome: TaskOutcome, trace?: TraceCarrier): Promise<void>;
  /** Whether the task is still pending in its instance's record ('unknown' when unreadable). */
  taskState(ref: TaskRef): Promise<'pending' | 'gone' | 'unknown'>;
  /** True when this engine owns the partition of the instance now (so one engine acts for it). */
  owns(workflow: string, id: string): boolean;
  /** Calls `listener` when an instance leaves the state that invoked a task (best effort; check `taskState` too). */
  onTaskCancel(listener: (ref: TaskRef) => void): () => void;
}

export interface EngineExtension {
  /** Looked up by activities through `ActivityContext.extension(name)`. */
  readonly name: string;
  start(host: ExtensionHost): Promise<void>;
  /** Stops its loops; pending work stays durable for the next engine. */
  stop(): Promise<void>;
}

export const taskRefKey = (ref: TaskRef): string => `${ref.workflow}.${ref.id}.${shortHash(ref.invokeId)}.${ref.token}`;

/** Publishes a task's outcome into its instance's event stream with a stable message id. */
export async function publishTaskOutcome(rt: Runtime, ref: TaskRef, outcome: TaskOutcome, trace: TraceCarrier | undefined): Promise<void> {
  const event: TaskResultEvent = outcome.ok
    ? { type: TASK_EVENT, invokeId: ref.invokeId, token: ref.token, ok: true, output: rt.security.codec.seal(ref.workflow, ref.id, 'output', outcome.output) }
    : { type: TASK_EVENT, invokeId: ref.invokeId, token: ref.token, ok: false, error: outcome.error };
  const subject = rt.names.eventSubject(partitionOf(ref.workflow, ref.id, rt.partitions), ref.workflow, ref.id);
  const data = encodeJson(event);
  await rt.js.publish(subject, data, rt.security.signer.options(subject, data, { msgID: `task.${ref.workflow}.${ref.id}.${ref.token}.${shortHash(ref.invokeId)}` }, trace));
}

export function createExtensionHost(
  rt: Runtime,
  engine: { engineId: () => string; ownedPartitions: () => number[]; onTaskCancel: (l: (ref: TaskRef) => void) => () => void; replicas: number },
): ExtensionHost {
  const kvm = new Kvm(rt.js);
  return {
    namespace: rt.names.namespace,
    get engineId() {
      return engine.engineId();
    },
    nc: rt.nc,
    js: rt.js,
    jsm: rt.jsm,
    logger: rt.logger,
    telemetry: rt.telemetry,
    replicas: engine.replicas,
    bucket: (suffix) => kvm.create(`${rt.names.namespace}_${suffix}`, { history: 1, replicas: engine.replicas, storage: 'file' }),
    completeTask: (ref, outcome, trace) => publishTaskOutcome(rt, ref, outcome, trace),
    async taskState(ref) {
      const entry = await rt.instances.get(rt.names.instanceKey(ref.workflow, ref.id));
      if (!entry || entry.operation !== 'PUT') return 'gone';
      const parsed = InstanceRecordSchema.safeParse(decodeJson(entry.value));
      if (!parsed.success) return 'unknown';
      if (parsed.data.revision < ref.token) return 'unknown';
      return parsed.data.tasks[ref.invokeId]?.token === ref.token ? 'pending' : 'gone';
    },
    owns: (workflow, id) => engine.ownedPartitions().includes(partitionOf(workflow, id, rt.partitions)),
    onTaskCancel: (listener) => engine.onTaskCancel(listener),
  };
}

/** The extension an activity asked for, or a clear error saying how to configure it. */
export function findExtension<T>(extensions: ReadonlyMap<string, EngineExtension>, name: string, needed: string): T {
  const found = extensions.get(name);
  if (!found) {
    // Terminal: retrying cannot configure the engine.
    throw new TerminalError(`${needed} needs the '${name}' engine extension; pass extensions: [${name === 'step-functions' ? 'stepFunctions({ region })' : name}] to createEngine`);
  }
  return found as unknown as T;
}
