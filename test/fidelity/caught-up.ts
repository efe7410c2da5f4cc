/**
 * Whether an engine has finished every event the stream holds for some instances, read from its
 * partition workers (test-only access to engine internals): an event is finished once the worker
 * has read it, the instance's queue no longer holds it and no batch of the instance is being
 * applied (its sends may not be out yet). Exact per instance, where a partition's
 * checkpoint can be held back for good by another instance that is blocked.
 */
import type { JetStreamManager } from '@nats-io/jetstream';
import type { Engine } from '../../engine/index.js';
import { partitionOf, type Layout } from '../../engine/protocol/names.js';

interface WorkerInternals {
  workflow: string;
  partition: number;
  reader: { position: number };
  queues: Map<string, { events: Array<{ seq: number }>; running: boolean }>;
}

interface EngineInternals {
  rt: { jsm: JetStreamManager; names: Layout; partitions: number };
  manager: { workers(): WorkerInternals[] };
}

export async function engineCaughtUp(engine: Engine, instances: ReadonlyArray<{ workflow: string; id: string }>): Promise<boolean> {
  const { rt, manager } = engine as unknown as EngineInternals;
  const workers = manager.workers();
  for (const { workflow, id } of instances) {
    const partition = partitionOf(workflow, id, rt.partitions);
    const last = await rt.jsm.streams
      .getMessage(rt.names.eventStream(workflow, partition), { last_by_subj: rt.names.eventSubject(partition, workflow, id) })
      .catch(() => null);
    if (!last) continue;
    const w = workers.find((x) => x.workflow === workflow && x.partition === partition);
    if (!w || w.reader.position <= last.seq) return false;
    const q = w.queues.get(rt.names.instanceKey(workflow, id));
    if (q?.events.some((e) => e.seq <= last.seq)) return false;
    // A batch being applied: its write may be visible while its sends (to itself, to others) are
    // not in the streams yet.
    if (q?.running) return false;
  }
  return true;
}
