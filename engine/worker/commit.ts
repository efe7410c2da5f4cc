/**
 * Persist, then act: the one place a step's result becomes durable and its effects go out, for a
 * new instance, for the next state of one, and for the repair of a write whose effects a crash
 * cut short. In that order, every time:
 *
 * 1. the record is written (create, or compare-and-set on the revision the step started from);
 * 2. the history entries it journals are published, not awaited (the record keeps them in
 *    `lastHistory` until the stream confirms them, see {@link journal});
 * 3. the timers and tasks the write scheduled are published (idempotent, keyed message ids);
 *    cancelled tasks are told to stop (best effort: their outcomes are ignored anyway);
 * 4. a finished instance is announced;
 * 5. the outbox runs: custom actions, sends to other instances, child starts and stops;
 * 6. a finished child tells its parent, after its outbox: a `sendParent` in its last step reaches
 *    the parent before its done event, as in XState;
 * 7. when the outbox put events into other instances' streams, the record is written again
 *    without it ({@link Committer.markOutbox}).
 *
 * The event that caused the write is finished (the checkpoint may pass it) only after all of
 * this and once the stream has stored its history ({@link Committer.stored}). A crash anywhere
 * after 1 leaves that event unfinished: it is read again, found applied (`lastSeq`), and
 * {@link Committer.repair} runs 2 to 6 again from the record, which holds all they need (the
 * timers and tasks of its last write carry its revision as their token; the outbox and
 * `lastHistory` are in it).
 */
import type { AnyMachineSnapshot } from 'xstate';
import { EngineEvent, isDelivery, outcomeEvent } from '../protocol/events.js';
import { instanceTag, type HistoryEntry, type InstanceRecord } from '../protocol/record.js';
import type { Runtime } from '../store/runtime.js';
import type { InstanceStore, LoadedInstance } from '../store/records.js';
import { entryKey, publishCompletion, publishHistory } from '../store/history.js';
import { publishToInstance } from '../store/inbox.js';
import type { WorkflowDefinition } from '../define/definition.js';
import type { MachineRunner } from '../step/runner.js';
import type { Effect, OutboxEntry, ScheduledTimer, TaskChange } from '../step/plan.js';
import { publishTimers } from '../effects/timers.js';
import { waitAtMost } from '../clock.js';
import { ConflictError } from '../errors.js';
import { errorText } from '../step/runner.js';
import { publishCancels, publishTasks, type Handover } from '../effects/tasks.js';
import type { EffectExecutor } from '../effects/outbox.js';
import type { TraceSource } from '../telemetry/telemetry.js';

export interface CommitHooks {
  /** Right before the state write (fault injection in tests). */
  beforeStateWrite?: ((key: string, revision: number) => void) | undefined;
  /** Right after the state write, before anything else (fault injection in tests). */
  afterStateWrite?: ((key: string, revision: number) => void) | undefined;
  /** Once a write's deliveries are stored, before the record is written without them (fault injection in tests). */
  beforeOutboxMark?: ((key: string) => Promise<void> | void) | undefined;
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
  /**
   * Set by a repair: the tasks of a write a crash may have cut short. One that runs in process may
   * have had its first attempt in the engine that died; its message says so, and the next is the second.
   */
  repaired?: boolean;
  /** Right after the write, before anything else: what may start as soon as the state is durable (tasks run in process). */
  afterWrite?: ((written: LoadedInstance) => void) | undefined;
  /** Aborted when this engine no longer owns the instance's partition (see {@link EffectExecutor.run}). */
  owned?: AbortSignal | undefined;
}

/**
 * Confirmations are kept per instance, not per id: an engine that saw an earlier instance with the
 * same id (deleted, then started again) must not take the new one's entries for confirmed.
 */
const incarnationKey = (key: string, born: number | undefined): string => (born === undefined ? key : `${key}@${born}`);

/** Instances whose history confirmations are kept (the rest are published again, harmlessly). */
const JOURNAL_CAPACITY = 50_000;
/**
 * History goes to its stream in batches: a running instance's journal is published once it holds
 * this many entries, or {@link HISTORY_DELAY_MS} after the write that started it, whichever comes
 * first (a finished instance's at once). Until then the entries are in the record (durable with
 * it, read by `history()` and `verify`): one synced history write per batch instead of per write.
 */
const HISTORY_BATCH = 8;
const HISTORY_DELAY_MS = 100;

/** How long a refused history publish waits before it is asked again, at first and at most. */
const HISTORY_RETRY_MIN_MS = 100;
const HISTORY_RETRY_MAX_MS = 5_000;

/** A journal waiting for its batch, and what resolves once it is stored. */
interface Batch {
  record: InstanceRecord;
  sealed: readonly HistoryEntry[];
  timer: ReturnType<typeof setTimeout>;
  stored: Promise<void>;
  settle: (published: Promise<void> | undefined) => void;
}

export class Committer {
  /** Per instance: history entries the stream confirmed, so the next write drops them from its journal. */
  private readonly confirmed = new Map<string, Set<string>>();
  /** History publishes not answered yet (awaited by {@link flush}). */
  private readonly publishing = new Set<Promise<void>>();
  /** Per instance: entries published and not answered yet (not sent again meanwhile). */
  private readonly sending = new Map<string, Set<string>>();
  /** Per instance: its publishes under way, each asked again until the stream stores it (see {@link stored}). */
  private readonly storing = new Map<string, Set<Promise<void>>>();
  /** Per instance: its newest journal, waiting to be published (see {@link HISTORY_BATCH}). */
  private readonly batching = new Map<string, Batch>();
  /** Instances whose last write's effects failed here, until a repair runs them (see {@link afterWrite}). */
  private readonly cutShort = new Set<string>();
  private closed = false;

  constructor(
    private readonly rt: Runtime,
    private readonly store: InstanceStore,
    private readonly executor: EffectExecutor,
    private readonly hooks: CommitHooks = {},
  ) {}

  /**
   * Writes a new instance's first record (over an earlier instance's delete marker at revision
   * `over`), then acts. Throws `ConflictError` if the key holds anything else.
   */
  async create(
    key: string,
    def: WorkflowDefinition,
    runner: MachineRunner,
    record: InstanceRecord,
    snapshot: AnyMachineSnapshot,
    bytes: Uint8Array,
    sealed: InstanceRecord,
    acts: Acts,
    over?: number,
  ): Promise<LoadedInstance> {
    this.hooks.beforeStateWrite?.(key, record.revision);
    const written = await this.store.create(key, def, runner, record, snapshot, bytes, over);
    return this.afterWrite(key, () => {
      this.hooks.afterStateWrite?.(key, record.revision);
      acts.afterWrite?.(written);
      this.rt.telemetry.instances.add(1, { 'jetstate.workflow': record.workflow, 'jetstate.status': record.status });
      return this.act(key, written, 'running', sealed, acts, true);
    });
  }

  /** Writes the next state of an instance (compare-and-set), then acts. Throws `ConflictError` when it lost. */
  async write(
    key: string,
    prev: LoadedInstance,
    record: InstanceRecord,
    snapshot: AnyMachineSnapshot,
    bytes: Uint8Array,
    sealed: InstanceRecord,
    acts: Acts,
  ): Promise<LoadedInstance> {
    this.hooks.beforeStateWrite?.(key, record.revision);
    let written: LoadedInstance;
    try {
      written = await this.store.write(key, prev, record, snapshot, bytes);
    } catch (e) {
      // No answer (a timeout, the connection lost): the write may have been stored, and then the
      // retry finds its events applied and would not act on them (a batch of in-process task
      // outcomes holds no event the record names as its last): it repairs the write first.
      if (!(e instanceof ConflictError)) this.cutShort.add(key);
      throw e;
    }
    return this.afterWrite(key, () => {
      this.hooks.afterStateWrite?.(key, record.revision);
      acts.afterWrite?.(written);
      const before = prev.record.status;
      if (before !== record.status) {
        this.rt.telemetry.instances.add(-1, { 'jetstate.workflow': record.workflow, 'jetstate.status': before });
        this.rt.telemetry.instances.add(1, { 'jetstate.workflow': record.workflow, 'jetstate.status': record.status });
      }
      return this.act(key, written, before, sealed, acts, false);
    });
  }

  /**
   * What follows a write: when it fails, the write's effects may be cut short, and the instance's
   * next batch repairs it first ({@link needsRepair}), whichever events that batch holds (a batch
   * of in-process task outcomes holds none the record names as its last).
   */
  private async afterWrite(key: string, then: () => Promise<LoadedInstance>): Promise<LoadedInstance> {
    try {
      return await then();
    } catch (e) {
      this.cutShort.add(key);
      throw e;
    }
  }

  /** True when this engine cut an effect of the instance's last write short (see {@link afterWrite}). */
  needsRepair(key: string): boolean {
    return this.cutShort.has(key);
  }

  /**
   * Acts again on an instance's last write, after a crash may have cut that short: every step is
   * idempotent (keyed message ids, history deduplicated by revision, actions with their keys).
   * Returns the instance as it is stored after (see {@link markOutbox}).
   */
  async repair(key: string, instance: LoadedInstance, owned?: AbortSignal): Promise<LoadedInstance> {
    const { record } = instance;
    const sealed = this.store.encode(record).sealed;
    // Every pending timer: one write applies several events, and a timer set by an earlier one
    // carries that transition's revision, not the record's (a fire acts only with its token, so a
    // timer published twice fires once).
    const timers = Object.entries(record.timers).map(([timerId, t]) => ({ timerId, token: t.token, dueAtMs: t.dueAtMs }));
    // Every pending task, not only those of the last write: a task that ran in this engine's
    // process may never have reached the tasks stream (keyed message ids make this idempotent).
    const tasks = Object.entries(record.tasks).map(([invokeId, t]) => ({ invokeId, token: t.token, src: t.src, input: t.input }));
    const repaired = await this.act(
      key,
      instance,
      undefined,
      sealed,
      { timers, tasks, cancelledTasks: [], outbox: record.outbox, trace: record.trace, repaired: true, owned },
      false,
    );
    this.cutShort.delete(key);
    return repaired;
  }

  /** Of a record's journal, the entries the stream has not confirmed (that this engine knows of). */
  unconfirmed(key: string, born: number | undefined, entries: readonly HistoryEntry[]): HistoryEntry[] {
    const confirmed = this.confirmed.get(incarnationKey(key, born));
    if (!confirmed || entries.length === 0) return [...entries];
    const left = entries.filter((e) => !confirmed.has(entryKey(e)));
    // What this journal no longer holds will not be asked about again.
    for (const k of [...confirmed]) if (!entries.some((e) => entryKey(e) === k)) confirmed.delete(k);
    return left;
  }

  /**
   * Resolves once the history of every write of an instance made so far is in its stream;
   * undefined when nothing is waiting. Rejects only when this committer is closed first. The
   * partition worker finishes an event only then: its checkpoint never passes an event whose
   * history is only in the record, so a crash leads to the event's redelivery and a repair.
   */
  stored(key: string): Promise<void> | undefined {
    const waits = [...(this.storing.get(key) ?? [])];
    const batch = this.batching.get(key);
    if (batch) waits.push(batch.stored);
    if (waits.length === 0) return undefined;
    return Promise.all(waits).then(() => {});
  }

  /**
   * Publishes the instance's journal waiting for its batch now, and waits up to `timeoutMs` for
   * its history to be stored. True when it is (or nothing was waiting).
   */
  async settle(key: string, timeoutMs: number): Promise<boolean> {
    this.publishBatch(key);
    const stored = this.stored(key)?.then(
      () => true,
      () => false,
    );
    return stored === undefined || ((await waitAtMost(stored, timeoutMs)) && (await stored));
  }

  /** Publishes the instance's journal waiting for its batch now (its partition is being stopped). */
  publishNow(key: string): void {
    this.publishBatch(key);
  }

  /**
   * Forgets what this committer knows of a deleted instance: an instance started again under
   * its id starts from revision 1, and its entries must not count as confirmed.
   */
  forget(key: string, born: number | undefined): void {
    this.publishBatch(key);
    this.confirmed.delete(incarnationKey(key, born));
  }

  /** Publishes every journal waiting for its batch, and resolves once every history publish under way is answered. */
  async flush(): Promise<void> {
    for (const key of [...this.batching.keys()]) this.publishBatch(key);
    await Promise.all([...this.publishing]);
  }

  /** Stops asking refused history publishes again (the engine is closing): their entries stay in the records. */
  close(): void {
    this.closed = true;
    this.executor.stop();
  }

  private publishHistory(instance: LoadedInstance, sealed: InstanceRecord): void {
    const { record } = instance;
    if (sealed.lastHistory.length === 0) return;
    const key = this.rt.names.instanceKey(record.workflow, record.id);
    const waiting = this.batching.get(key);
    if (record.status === 'running' && this.fresh(key, record.lastHistory).length < HISTORY_BATCH) {
      // The newest journal holds the earlier ones' entries still unconfirmed: it replaces them.
      if (waiting) {
        waiting.record = record;
        waiting.sealed = sealed.lastHistory;
        return;
      }
      const timer = setTimeout(() => this.publishBatch(key), HISTORY_DELAY_MS);
      timer.unref?.();
      let settle!: Batch['settle'];
      const stored = new Promise<void>((ok, ko) => (settle = (p) => (p ? p.then(ok, ko) : ok())));
      stored.catch(() => {});
      this.batching.set(key, { record, sealed: sealed.lastHistory, timer, stored, settle });
      return;
    }
    if (waiting) {
      clearTimeout(waiting.timer);
      this.batching.delete(key);
    }
    const published = this.publishJournal(key, record, sealed.lastHistory);
    waiting?.settle(published);
  }

  /** The indexes of a journal's entries not published yet (neither confirmed nor on their way). */
  private fresh(key: string, entries: readonly HistoryEntry[]): number[] {
    const sent = this.sending.get(key);
    const out: number[] = [];
    entries.forEach((e, i) => {
      if (!sent?.has(entryKey(e))) out.push(i);
    });
    return out;
  }

  private publishBatch(key: string): void {
    const waiting = this.batching.get(key);
    if (!waiting) return;
    clearTimeout(waiting.timer);
    this.batching.delete(key);
    waiting.settle(this.publishJournal(key, waiting.record, waiting.sealed));
  }

  /**
   * Publishes the entries of a journal not already on their way; they stay in the record until
   * confirmed. A refused publish is logged and asked again until the stream stores it. Returns
   * what resolves then, or undefined when there was nothing to publish.
   */
  private publishJournal(key: string, record: InstanceRecord, sealed: readonly HistoryEntry[]): Promise<void> | undefined {
    const indexes = this.fresh(key, record.lastHistory);
    if (indexes.length === 0) return undefined;
    const keys = indexes.map((i) => entryKey(record.lastHistory[i]!));
    let sent = this.sending.get(key);
    if (!sent) this.sending.set(key, (sent = new Set()));
    for (const k of keys) sent.add(k);
    const stored = this.publishUntilStored(
      record,
      indexes.map((i) => sealed[i]!),
    ).then(() => {
      const incarnation = incarnationKey(key, record.born);
      let confirmed = this.confirmed.get(incarnation);
      if (!confirmed) {
        if (this.confirmed.size >= JOURNAL_CAPACITY) this.confirmed.delete(this.confirmed.keys().next().value!);
        this.confirmed.set(incarnation, (confirmed = new Set()));
      }
      for (const k of keys) confirmed.add(k);
    });
    let under = this.storing.get(key);
    if (!under) this.storing.set(key, (under = new Set()));
    under.add(stored);
    // Closed before it was stored: still journaled in the record, the next owner's repair publishes it.
    const p = stored
      .catch(() => {})
      .finally(() => {
        for (const k of keys) sent.delete(k);
        if (sent.size === 0 && this.sending.get(key) === sent) this.sending.delete(key);
        under.delete(stored);
        if (under.size === 0 && this.storing.get(key) === under) this.storing.delete(key);
      });
    this.publishing.add(p);
    void p.finally(() => this.publishing.delete(p));
    return stored;
  }

  /** Publishes until the stream stores the entries, or the committer is closed (then rejects). */
  private async publishUntilStored(record: InstanceRecord, entries: HistoryEntry[]): Promise<void> {
    let delay = HISTORY_RETRY_MIN_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        await publishHistory(this.rt, record, entries, record.secrets);
        if (attempt > 1) this.rt.logger.info(`workflow '${record.workflow}' instance '${record.id}': history published after ${attempt} attempts`);
        return;
      } catch (e) {
        if (this.closed) throw e;
        // Logged at the first refusal, then as an error at every tenth: the partition's checkpoint
        // waits for it, and a refusal that lasts (a key missing from the ring, a permission) needs
        // someone to act.
        const what = `workflow '${record.workflow}' instance '${record.id}': history not published yet (${(e as Error).message}); it stays in the record`;
        if (attempt === 1) this.rt.logger.warn(`${what} and is asked again in ${delay} ms`);
        else if (attempt % 10 === 0)
          this.rt.logger.error(`${what}; refused ${attempt} times, asked again every ${delay} ms; the partition's checkpoint waits for it`);
        await new Promise((r) => setTimeout(r, delay).unref());
        delay = Math.min(delay * 2, HISTORY_RETRY_MAX_MS);
        if (this.closed) throw e;
      }
    }
  }

  /** The tasks to publish, grouped by what their messages carry: a repair's in-process tasks count the attempt they may have had. */
  private taskGroups(instance: LoadedInstance, acts: Acts): Array<{ tasks: TaskChange[]; handover?: Handover }> {
    const inProcess = (t: TaskChange): boolean => instance.runner.activities.get(t.src)?.options.inProcess === true;
    const groups = acts.repaired
      ? [{ tasks: acts.tasks.filter(inProcess), handover: { attempts: 1 } }, { tasks: acts.tasks.filter((t) => !inProcess(t)) }]
      : [{ tasks: [...acts.tasks] }];
    return groups.filter((g) => g.tasks.length > 0);
  }

  /**
   * `before`: the status before the write, or undefined when unknown (a repair of a finished
   * instance). Returns the instance as it is stored after acting.
   */
  private async act(
    key: string,
    instance: LoadedInstance,
    before: InstanceRecord['status'] | undefined,
    sealed: InstanceRecord,
    acts: Acts,
    created: boolean,
  ): Promise<LoadedInstance> {
    const { record } = instance;
    const rt = this.rt;
    // The history goes out without being waited for: the record journals its entries until the
    // stream confirms them (see `journal`), so the next write need not wait for this one's.
    this.publishHistory(instance, sealed);
    // Independent of each other (each idempotent, on its own stream): at once, so that a write's
    // effects cost one round of synced writes rather than one each.
    await Promise.all([
      acts.timers.length > 0 ? publishTimers(rt, record, acts.timers, acts.trace) : undefined,
      ...this.taskGroups(instance, acts).map((g) => publishTasks(rt, record, g.tasks, acts.trace, g.handover)),
    ]);
    if (acts.cancelledTasks.length > 0) publishCancels(rt, record, acts.cancelledTasks);
    const finished = record.status !== 'running' && (before === undefined || before === 'running' || created);
    if (finished) publishCompletion(rt, record);
    // A delivery that has to wait leaves in the record only what is left to run: the next owner,
    // maybe later than the duplicate window, does not send again what was stored.
    let current = instance;
    const onStall = async (done: ReadonlySet<string>): Promise<void> => {
      const left = current.record.outbox.filter((o) => !done.has(o.key));
      if (left.length < current.record.outbox.length) current = await this.markOutbox(key, current, left);
    };
    const waits = { onStall, owned: acts.owned };
    if (acts.effects && acts.effects.length > 0) await this.executor.run(instance, acts.effects, waits);
    if (acts.outbox && acts.outbox.length > 0) await this.executor.rerun(instance, acts.outbox, waits);
    // After the outbox: its sends to the parent (sendParent) go into the parent's inbox first.
    if (finished) await notifyParent(rt, record);
    if (!record.outbox.some(isDelivery)) return current;
    await this.hooks.beforeOutboxMark?.(key);
    return this.markOutbox(key, current, []);
  }

  /**
   * The record again with only `outbox` left (the same revision and state): empty once a write's
   * sends, child starts and stops are stored, or what is left when one of them has to wait, so
   * that reading its last event again (a repair) sends nothing twice. Their message ids
   * deduplicate a re-run only within the events streams' duplicate window, and an event can be
   * read again much later: a partition's checkpoint held behind an instance waiting for its
   * version or for a target stream, or an engine that crashed before its checkpoint moved and was
   * not replaced within the window. Custom actions alone are not worth a write: they run at least
   * once by contract.
   */
  private async markOutbox(key: string, instance: LoadedInstance, outbox: InstanceRecord['outbox']): Promise<LoadedInstance> {
    const record: InstanceRecord = { ...instance.record, outbox };
    try {
      return await this.store.write(key, instance, record, instance.snapshot, this.store.encode(record).bytes);
    } catch (e) {
      // Someone else wrote since: that write replaced the outbox, and this engine's next write will find out.
      if (!(e instanceof ConflictError))
        this.rt.logger.warn(
          `workflow '${record.workflow}' instance '${record.id}': keeping in its record only what of its outbox is not stored yet failed (${errorText(e)}): reading its last event again later than the duplicate window would send the stored part again`,
          { workflow: record.workflow, id: record.id },
        );
      return instance;
    }
  }
}

/**
 * The history a write keeps in its record (`lastHistory`): the entries of earlier writes the
 * stream has not confirmed yet, then its own. A crash loses none of them: the repair publishes
 * them again, and readers add them to what the stream holds.
 */
export function journal(
  committer: Committer,
  key: string,
  born: number | undefined,
  previous: readonly HistoryEntry[],
  entries: readonly HistoryEntry[],
): HistoryEntry[] {
  return [...committer.unconfirmed(key, born, previous), ...entries];
}

/** Sends a finished child's outcome to its parent's inbox; idempotent (keyed message id). */
export async function notifyParent(rt: Runtime, child: InstanceRecord): Promise<void> {
  const parent = child.parent;
  // A stopped child tells its parent too: stopped by the parent (it left the invoking state), the
  // parent no longer holds its token and ignores it; terminated or cancelled from outside, the
  // parent's invoke ends with the error instead of waiting for ever.
  if (!parent || child.status === 'running') return;
  // The values of the child's secret paths stay secret in its output on the way to the parent.
  const secrets = child.status === 'done' ? rt.security.codec.outputSecrets(child, [], child.output) : [];
  const event = outcomeEvent(
    EngineEvent.Child,
    parent,
    child.status === 'done'
      ? { ok: true, output: child.output, secrets }
      : {
          ok: false,
          error:
            child.status === 'failed'
              ? { name: 'ChildWorkflowFailed', message: child.error ?? 'failed' }
              : {
                  name: 'ChildWorkflowStopped',
                  message: `child workflow '${child.workflow}' instance '${child.id}' was stopped${child.error ? `: ${child.error}` : ''}`,
                },
        },
    { workflow: child.workflow, id: child.id },
  );
  await publishToInstance(rt, {
    workflow: parent.workflow,
    id: parent.id,
    event,
    engine: { logicalId: `child.${child.workflow}.${instanceTag(child)}.${parent.token}` },
    trace: child.trace,
  });
}
