/**
 * Persist, then act: the one place a step's result becomes durable and its effects go out, for a
 * new instance, for the next state of one, and for the repair of a write whose effects a crash
 * cut short. In that order, every time:
 *
 * 1. the record is written (create, or compare-and-set on the revision the step started from);
 * 2. the timers and tasks the write scheduled are published (idempotent, keyed message ids);
 *    cancelled tasks are told to stop (best effort: their outcomes are ignored anyway);
 * 3. a finished instance is announced;
 * 4. the write's history entries are published;
 * 5. the outbox runs: custom actions, sends to other instances, child starts and stops;
 * 6. a finished child tells its parent, after its outbox: a `sendParent` in its last step reaches
 *    the parent before its done event, as in XState.
 *
 * The event that caused the write is finished (the checkpoint may pass it) only after all of
 * this. A crash anywhere after 1 leaves that event unfinished: it is read again, found applied
 * (`lastSeq`), and {@link Committer.repair} runs 2 to 6 again from the record, which holds all
 * they need (the timers and tasks of its last write carry its revision as their token; the
 * outbox and `lastHistory` are in it).
 */
import type { AnyMachineSnapshot } from 'xstate';
import { EngineEvent } from '../protocol/events.js';
import type { InstanceRecord } from '../protocol/record.js';
import type { Runtime } from '../store/runtime.js';
import type { InstanceStore, LoadedInstance } from '../store/records.js';
import { publishCompletion, publishHistory } from '../store/history.js';
import { publishToInstance } from '../store/inbox.js';
import type { WorkflowDefinition } from '../define/definition.js';
import type { MachineRunner } from '../step/runner.js';
import type { Effect, OutboxEntry, ScheduledTimer, TaskChange } from '../step/plan.js';
import { publishTimers } from '../effects/timers.js';
import { publishCancels, publishTasks, tasksStartedBy } from '../effects/tasks.js';
import type { EffectExecutor } from '../effects/outbox.js';
import type { TraceSource } from '../telemetry/telemetry.js';

export interface CommitHooks {
  /** Right before the state write (fault injection in tests). */
  beforeStateWrite?: ((key: string, revision: number) => void) | undefined;
  /** Right after the state write, before anything else (fault injection in tests). */
  afterStateWrite?: ((key: string, revision: number) => void) | undefined;
}

/** What a write leads to, besides the record. */
export interface Acts {
  timers: readonly ScheduledTimer[];
  tasks: readonly TaskChange[];
  cancelledTasks: readonly TaskChange[];
  /** Effects of a live step (with XState's inline actions), or the outbox of a repaired write. */
  effects?: Effect[];
  outbox?: readonly OutboxEntry[];
  /** The trace context of the transition that scheduled each effect (by revision). */
  trace: TraceSource;
}

export class Committer {
  constructor(
    private readonly rt: Runtime,
    private readonly store: InstanceStore,
    private readonly executor: EffectExecutor,
    private readonly hooks: CommitHooks = {},
  ) {}

  /** Writes a new instance's first record, then acts. Throws `ConflictError` if it exists. */
  async create(key: string, def: WorkflowDefinition, runner: MachineRunner, record: InstanceRecord, snapshot: AnyMachineSnapshot, bytes: Uint8Array, sealed: InstanceRecord, acts: Acts): Promise<LoadedInstance> {
    this.hooks.beforeStateWrite?.(key, record.revision);
    const written = await this.store.create(key, def, runner, record, snapshot, bytes);
    this.hooks.afterStateWrite?.(key, record.revision);
    this.rt.telemetry.instances.add(1, { 'jetstate.workflow': record.workflow, 'jetstate.status': record.status });
    await this.act(written, 'running', sealed, acts, true);
    return written;
  }

  /** Writes the next state of an instance (compare-and-set), then acts. Throws `ConflictError` when it lost. */
  async write(key: string, prev: LoadedInstance, record: InstanceRecord, snapshot: AnyMachineSnapshot, bytes: Uint8Array, sealed: InstanceRecord, acts: Acts): Promise<LoadedInstance> {
    this.hooks.beforeStateWrite?.(key, record.revision);
    const written = await this.store.write(key, prev, record, snapshot, bytes);
    this.hooks.afterStateWrite?.(key, record.revision);
    const before = prev.record.status;
    if (before !== record.status) {
      this.rt.telemetry.instances.add(-1, { 'jetstate.workflow': record.workflow, 'jetstate.status': before });
      this.rt.telemetry.instances.add(1, { 'jetstate.workflow': record.workflow, 'jetstate.status': record.status });
    }
    await this.act(written, before, sealed, acts, false);
    return written;
  }

  /**
   * Acts again on an instance's last write, after a crash may have cut that short: every step is
   * idempotent (keyed message ids, history deduplicated by revision, actions with their keys).
   */
  async repair(instance: LoadedInstance): Promise<void> {
    const { record } = instance;
    const sealed = this.store.encode(record).sealed;
    const timers = Object.entries(record.timers)
      .filter(([, t]) => t.token === record.revision)
      .map(([timerId, t]) => ({ timerId, token: t.token, dueAtMs: t.dueAtMs }));
    await this.act(instance, undefined, sealed, { timers, tasks: tasksStartedBy(record), cancelledTasks: [], outbox: record.outbox, trace: record.trace }, false);
  }

  /** `before`: the status before the write, or undefined when unknown (a repair of a finished instance). */
  private async act(instance: LoadedInstance, before: InstanceRecord['status'] | undefined, sealed: InstanceRecord, acts: Acts, created: boolean): Promise<void> {
    const { record } = instance;
    const rt = this.rt;
    if (acts.timers.length > 0) await publishTimers(rt, record.workflow, record.id, acts.timers, acts.trace);
    if (acts.tasks.length > 0) await publishTasks(rt, record.workflow, record.id, acts.tasks, acts.trace);
    if (acts.cancelledTasks.length > 0) publishCancels(rt, record.workflow, record.id, acts.cancelledTasks);
    const finished = record.status !== 'running' && (before === undefined || before === 'running' || created);
    if (finished) publishCompletion(rt, record);
    await publishHistory(rt, record.workflow, record.id, sealed.lastHistory, record.secrets);
    if (acts.effects && acts.effects.length > 0) await this.executor.run(instance, acts.effects);
    if (acts.outbox && acts.outbox.length > 0) await this.executor.rerun(instance, acts.outbox);
    // After the outbox: its sends to the parent (sendParent) go into the parent's inbox first.
    if (finished) await notifyParent(rt, record);
  }
}

/** Sends a finished child's outcome to its parent's inbox; idempotent (keyed message id). */
export async function notifyParent(rt: Runtime, child: InstanceRecord): Promise<void> {
  const parent = child.parent;
  if (!parent || (child.status !== 'done' && child.status !== 'failed')) return;
  // The values of the child's secret paths stay secret in its output on the way to the parent.
  const secrets = child.status === 'done' ? rt.security.codec.outputSecrets(child, [], child.output) : [];
  const event =
    child.status === 'done'
      ? { type: EngineEvent.Child, invokeId: parent.invokeId, token: parent.token, ok: true, output: child.output, ...(secrets.length > 0 ? { secrets } : {}) }
      : { type: EngineEvent.Child, invokeId: parent.invokeId, token: parent.token, ok: false, error: { name: 'ChildWorkflowFailed', message: child.error ?? 'failed' } };
  await publishToInstance(rt, { workflow: parent.workflow, id: parent.id, event, engine: { logicalId: `child.${child.workflow}.${child.id}.${parent.token}` }, trace: child.trace });
}
