/**
 * The host of engine extensions (see define/extension.ts): what an extension may do with the
 * engine, through the same paths as the engine itself (task outcomes through the inbox).
 */
import { Kvm } from '@nats-io/kv';
import { TerminalError } from '../define/activity.js';
import type { EngineExtension, ExtensionHost, TaskOutcome } from '../define/extension.js';
import { EngineEvent, isForEarlierInstance, outcomeEvent, type TaskRef } from '../protocol/events.js';
import { instanceTag } from '../protocol/record.js';
import { partitionOf } from '../protocol/names.js';
import { shortHash } from '../protocol/json.js';
import type { Runtime } from '../store/runtime.js';
import { publishToInstance } from '../store/inbox.js';
import { deadLetter } from '../store/dead-letters.js';
import { readRecord } from '../store/records.js';
import type { TraceCarrier } from '../telemetry/telemetry.js';

export const taskRefKey = (ref: TaskRef): string => `${ref.workflow}.${instanceTag(ref)}.${shortHash(ref.invokeId)}.${ref.token}`;

/**
 * Publishes a task's outcome into its instance's inbox with a stable, keyed message id. An output
 * that holds a value of one of the instance's secret paths under another name (a stage that echoes
 * its input back) names where, so it is sealed there too, as for a task run in the engine.
 */
export async function publishTaskOutcome(rt: Runtime, ref: TaskRef, outcome: TaskOutcome, trace: TraceCarrier | undefined): Promise<void> {
  const event = outcome.ok
    ? outcomeEvent(EngineEvent.Task, ref, { ok: true, output: outcome.output, secrets: await outputSecretsOf(rt, ref, outcome.output) })
    : outcomeEvent(EngineEvent.Task, ref, { ok: false, error: outcome.error });
  await publishToInstance(rt, {
    workflow: ref.workflow,
    id: ref.id,
    event,
    engine: { logicalId: `task.${ref.workflow}.${instanceTag(ref)}.${ref.token}.${ref.invokeId}` },
    trace,
  });
}

/** The paths of a task's output that hold a secret value of its instance (read from its record), beyond the declared ones. */
async function outputSecretsOf(rt: Runtime, ref: TaskRef, output: unknown): Promise<string[]> {
  const { codec } = rt.security;
  // (Read even without declared paths: a parent's inherited ones are in the record.)
  const found = await readRecord(rt.records.of(ref.workflow, ref.id), codec, rt.names.instanceKey(ref.workflow, ref.id));
  if (!found || isForEarlierInstance(ref, found.record.born)) return [];
  const declared = codec.pathsFor(ref.workflow);
  return codec.outputSecrets(found.record, [found.record.tasks[ref.invokeId]?.input], output).filter((p) => !declared.includes(p));
}

export function createExtensionHost(
  rt: Runtime,
  engine: {
    engineId: () => string;
    owns: (workflow: string, partition: number) => boolean;
    onTaskCancel: (l: (ref: TaskRef) => void) => () => void;
    /** The task's outcome is delivered: its progress entry can go (see TaskService.taskOver). */
    taskOver: (ref: TaskRef) => void;
    replicas: number;
  },
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
    async completeTask(ref, outcome, trace) {
      await publishTaskOutcome(rt, ref, outcome, trace);
      engine.taskOver(ref);
    },
    deadLetter: (letter) => deadLetter(rt, letter),
    async taskState(ref) {
      let found;
      try {
        found = await readRecord(rt.records.of(ref.workflow, ref.id), rt.security.codec, rt.names.instanceKey(ref.workflow, ref.id), 'open-or-redact');
      } catch {
        return 'unknown';
      }
      if (!found || isForEarlierInstance(ref, found.record.born)) return 'gone';
      if (found.record.revision < ref.token) return 'unknown';
      return found.record.tasks[ref.invokeId]?.token === ref.token ? 'pending' : 'gone';
    },
    owns: (workflow, id) => engine.owns(workflow, partitionOf(workflow, id, rt.partitions)),
    onTaskCancel: (listener) => engine.onTaskCancel(listener),
  };
}

/** The extension an activity asked for, or a clear error saying how to configure it. */
export function findExtension<T>(extensions: ReadonlyMap<string, EngineExtension>, name: string, needed: string): T {
  const found = extensions.get(name);
  if (!found) {
    // Terminal: retrying cannot configure the engine.
    throw new TerminalError(
      `${needed} needs the '${name}' engine extension; pass extensions: [${name === 'step-functions' ? 'stepFunctions({ region })' : name}] to createEngine`,
    );
  }
  return found as unknown as T;
}
