/**
 * The differential harness. A sequence runs first through jetstate (a real engine on a real
 * nats-server), which records a time line: when the instance started, which event went out with
 * which stream sequence, what the records showed at each settled point, and, from its history,
 * when each timer fired and each activity outcome was applied. The same machine then runs in
 * memory in XState, replaying that time line on a driven simulated clock: events at the stamps
 * jetstate gave them, activity outcomes and timers when jetstate applied them. The two are
 * compared at every settled point and at the end.
 *
 * Timing: jetstate stamps events with the stream's acceptance time and timers with that plus the
 * delay, so both sides share one time line and the same due times. The reference fires a timer
 * when jetstate did, so lateness (a timer applied some time after it was due) is not a
 * divergence; firing it while XState had a timer due earlier pending is one (order), and so is a
 * timer that XState has and jetstate never fires.
 */
import { HistoryKind, type HistoryEntry, type InstanceRecord } from '../../engine/protocol/record.js';
import { childWorkflowsOf } from '../../engine/define/child.js';
import type { WorkflowDefinition } from '../../engine/index.js';
import { compareEffects, compareObservations, observeModel, observeRecord, timerName, type Observation } from './compare.js';
import { takeEffects } from './effects.js';
import { ModelRun } from './model.js';
import type { Frozen, Target } from './targets.js';
import type { Divergence, FidelityCase, Mode, SentEvent, Step } from './types.js';

/** A settled point waits for timers due up to this much later, so it does not sit on a due time. */
export const MARGIN_MS = 40;
/** Long enough for a machine that stalls the engine for seconds (a shared VM's disk): a settled point does not depend on timing. */
const SETTLE_TIMEOUT_MS = 15_000;
/**
 * After an engine was killed: a timer message it had been handed and not yet NAKed comes back
 * only after the timers consumer's ack wait (30 s), so the harness waits that out (lateness).
 */
const SETTLE_AFTER_RESTART_MS = 40_000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Mark =
  | { t: 'start'; at: number }
  | { t: 'send'; seq: number; event: SentEvent; to?: string | undefined; toId?: string | undefined; step: number }
  | { t: 'observe'; at: number; label: string; obs: Observation; compare: boolean }
  | { t: 'stall'; window: Frozen }
  /** An activity's outcome applied by jetstate (from its history): the reference gets it then too. */
  | { t: 'release'; seq: number; at: number; invokeId: string }
  /** A timer jetstate fired (from its history; `to`: of a child instance): the reference fires it then too. */
  | { t: 'fire'; seq: number; at: number; timerId: string; to?: string | undefined };

export interface RunSpec {
  c: FidelityCase;
  def: WorkflowDefinition;
  steps: readonly Step[];
  mode: Mode;
  /** Unique per run: the instance id and `input.run`. */
  run: string;
  /** Kill mode: the step whose event is followed by a crash right after its state write. */
  killAt?: number;
}

export interface RunResult {
  spec: RunSpec;
  divergences: Divergence[];
  /** How late jetstate fired its latest timer, after its due time (not a divergence; reported). */
  maxLatenessMs: number;
  durationMs: number;
}

/** Every workflow a definition needs registered: itself and its child workflows, recursively. */
export function workflowsOf(def: WorkflowDefinition, out = new Map<string, WorkflowDefinition>()): Map<string, WorkflowDefinition> {
  if (out.has(def.name)) return out;
  out.set(def.name, def);
  for (const child of childWorkflowsOf(def.machine).values()) workflowsOf(child, out);
  return out;
}

function childDef(spec: RunSpec, invokeId: string): WorkflowDefinition {
  const name = spec.c.children?.[invokeId];
  const def = name ? workflowsOf(spec.def).get(name) : undefined;
  if (!def) throw new Error(`case '${spec.c.name}': no child workflow for invoke id '${invokeId}'; list it in children`);
  return def;
}

/**
 * The child instances a run's parent started, by invoke id: the first child under an invoke id is
 * `<parent id>_<invoke id>`, a later one (invoked again) has another id, which the parent's record
 * names while it runs.
 */
class ChildIds {
  private readonly current = new Map<string, string>();
  private readonly all = new Map<string, Set<string>>();
  constructor(private readonly run: string) {}

  /** Learns the ids the parent's record names for its running children. */
  note(record: InstanceRecord): void {
    for (const [invokeId, c] of Object.entries(record.children)) {
      this.current.set(invokeId, c.id);
      this.ids(invokeId).add(c.id);
    }
  }

  /** The newest child under an invoke id (the first one's id until the parent names another). */
  of(invokeId: string): string {
    return this.current.get(invokeId) ?? `${this.run}_${invokeId}`;
  }

  /** Every child seen under an invoke id, the first one's id included. */
  ids(invokeId: string): Set<string> {
    let ids = this.all.get(invokeId);
    if (!ids) this.all.set(invokeId, (ids = new Set([`${this.run}_${invokeId}`])));
    return ids;
  }
}

interface Settled {
  at: number;
  record: InstanceRecord;
  kids: Record<string, InstanceRecord | null>;
  /** Set when the instance did not settle in time (it is compared as it is). */
  stuck?: string;
}

/**
 * Waits until the instance (and its children) is quiet: every event sent so far applied, no task
 * running, every timer due by now (plus the margin) applied, no finished child still pending in
 * its parent, and no revision change for `quietMs` (messages between instances, such as a child's
 * sendParent, travel through the event streams: they have no other trace to wait for).
 */
async function settle(target: Target, spec: RunSpec, minSeq: number, timeoutMs: number, restartsBefore: number, childIds: ChildIds): Promise<Settled> {
  const began = Date.now();
  let deadline = began + timeoutMs;
  const quietMs = spec.c.children ? 150 : 15;
  let previous = '';
  let quietSince = 0;
  for (;;) {
    await target.up();
    if (target.restarts.length > restartsBefore) {
      // The engine was killed during this run: wait out what it held (see SETTLE_AFTER_RESTART_MS).
      deadline = Math.max(deadline, began + SETTLE_AFTER_RESTART_MS);
    }
    const record = await target.read(spec.def.name, spec.run);
    if (!record) {
      // The engine creates the record from the start event: it may not have got to it yet.
      if (Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      throw new Error(`instance ${spec.run} has no record`);
    }
    childIds.note(record);
    const kids: Record<string, InstanceRecord | null> = {};
    for (const invokeId of Object.keys(spec.c.children ?? {})) kids[invokeId] = await target.read(childDef(spec, invokeId).name, childIds.of(invokeId));
    const now = Date.now();
    const waits: string[] = [];
    let waitMs = 0;
    if (record.lastSeq < minSeq) waits.push(`event ${minSeq} not applied`);
    for (const r of [record, ...Object.values(kids)]) {
      if (!r || r.status !== 'running') continue;
      if (Object.keys(r.tasks).length > 0) waits.push(`${r.id}: tasks ${Object.keys(r.tasks).join(',')} running`);
      for (const [id, t] of Object.entries(r.timers)) {
        if (t.dueAtMs > now + MARGIN_MS) continue;
        waits.push(`${r.id}: timer ${id} due`);
        waitMs = Math.max(waitMs, t.dueAtMs - now + 5);
      }
    }
    // A child that finished is still pending in its parent until the parent applies the outcome.
    for (const [invokeId, c] of Object.entries(record.children)) {
      const kid = kids[invokeId] ?? (await target.read(c.workflow, c.id));
      if (!kid || kid.status !== 'running') waits.push(`child ${c.id} ${kid ? kid.status : 'not created'} but pending in its parent`);
    }
    const signature = [record, ...Object.values(kids)].map((r) => r?.revision ?? 0).join(',');
    // Messages between instances and an instance's events to itself (sendTo self) travel through
    // the event streams: once the engine has finished every event there, they have arrived.
    if (waits.length === 0 && target.caughtUp) {
      const instances = [
        { workflow: spec.def.name, id: spec.run },
        ...Object.keys(spec.c.children ?? {}).map((k) => ({ workflow: childDef(spec, k).name, id: childIds.of(k) })),
      ];
      if (!(await target.caughtUp(instances))) waits.push('the restarted engine has not caught up');
      // The records were read before that answer: an event applied in between (the instance's
      // event to itself) must not let a record read before it pass as settled.
      else {
        const again = (await Promise.all(instances.map((i) => target.read(i.workflow, i.id)))).map((r) => r?.revision ?? 0).join(',');
        if (again !== signature) waits.push('an event was applied meanwhile');
      }
    }
    if (waits.length === 0 && signature === previous && now - quietSince >= quietMs) return { at: now, record, kids };
    if (waits.length > 0 || signature !== previous) quietSince = now;
    previous = signature;
    if (Date.now() > deadline) return { at: now, record, kids, stuck: waits.join('; ') || 'revisions kept changing' };
    await sleep(Math.max(waitMs, waits.length > 0 ? 10 : Math.min(quietMs, 15)));
  }
}

interface Recording {
  marks: Mark[];
  /** Stream sequence → acceptance time of the instance's and its children's events. */
  stamps: Map<string, number>;
  verify: string[];
  /** Points where the instance did not settle in time, and why. */
  stuck: string[];
  /** The instance's record at the end. */
  last?: InstanceRecord;
  error?: string;
}

/** An event's stamp, by the instance that took it (the run's own, or a child's) and its sequence. */
const stampKey = (instanceId: string, seq: number): string => `${instanceId}#${seq}`;

/** Runs the sequence through jetstate and records its timeline. */
async function drive(target: Target, spec: RunSpec, alphabet: readonly SentEvent[]): Promise<Recording> {
  const { def, run, mode, steps } = spec;
  const marks: Mark[] = [];
  const rec: Recording = { marks, stamps: new Map(), verify: [], stuck: [] };
  const childIds = new ChildIds(run);
  /** Every settled point is recorded (the replay checks timing against it); `compare` marks the ones compared. */
  const observe = (s: Settled, label: string, compare: boolean): void => {
    marks.push({ t: 'observe', at: s.at, label, obs: observeRecord(def.machine, s.record, s.kids, alphabet), compare });
  };
  const client = target.client;
  // In a batch, another run's crash may already have restarted the engine during this run.
  const restartsAtStart = target.restarts.length;
  let where = 'start';
  const settled = async (minSeq: number): Promise<Settled> => {
    // Once stuck, the rest of the run does not wait as long again.
    const r = await settle(target, spec, minSeq, rec.stuck.length > 0 ? 1_000 : SETTLE_TIMEOUT_MS, rec.stuck.length > 0 ? Infinity : restartsAtStart, childIds);
    if (r.stuck) rec.stuck.push(`${where}: ${r.stuck}`);
    return r;
  };
  try {
    await target.up();
    const start = async (): Promise<void> => {
      const started = await client.start(def, { id: run, input: { run, ...spec.c.input } });
      marks.push({ t: 'start', at: started.createdAtMs });
    };
    // A sequence that begins with a stall starts its instance while no timer can fire (no engine).
    const first = steps[0];
    if (first && 'stall' in first) {
      if (!target.stall) throw new Error('a stall needs a target that can hold its clock or stop its engine');
      marks.push({ t: 'stall', window: await target.stall(first.stall, start) });
    } else {
      await start();
    }
    let s = await settled(0);
    observe(s, 'start', mode === 'each');
    let lastSeq = 0;
    let crashed = false;
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i]!;
      if (i === 0 && 'stall' in step) continue; // done with the start
      where = `step ${i + 1}`;
      const inBurst = mode === 'burst' && 'send' in step && i > 0 && 'send' in steps[i - 1]!;
      if ('send' in step) {
        if (!inBurst) {
          s = await settled(lastSeq);
          observe(s, `before step ${i + 1}`, false);
        }
        const toId = step.to ? childIds.of(step.to) : undefined;
        if (mode === 'kill' && i === spec.killAt && !crashed && target.armCrash && target.restarts.length === restartsAtStart) {
          crashed = true;
          target.armCrash(`${step.to ? childDef(spec, step.to).name : def.name}.${toId ?? run}`);
        }
        await target.up();
        const r = step.to ? await client.send(childDef(spec, step.to), toId!, step.send as never) : await client.send(def, run, step.send as never);
        marks.push({ t: 'send', seq: r.seq, event: step.send, to: step.to, toId, step: i });
        if (!step.to) lastSeq = r.seq;
        const nextIsSend = i + 1 < steps.length && 'send' in steps[i + 1]!;
        if (mode === 'burst' && nextIsSend) continue;
        s = await settled(lastSeq);
        observe(s, `step ${i + 1} (${step.send.type})`, mode === 'each');
      } else if ('wait' in step) {
        await sleep(step.wait);
        s = await settled(lastSeq);
        observe(s, `step ${i + 1} (wait ${step.wait})`, mode === 'each');
      } else {
        if (!target.stall) throw new Error('a stall needs a target that can hold its clock or stop its engine');
        await settled(lastSeq);
        marks.push({ t: 'stall', window: await target.stall(step.stall) });
        s = await settled(lastSeq);
        observe(s, `step ${i + 1} (stall ${step.stall})`, mode === 'each');
      }
    }
    where = 'end';
    s = await settled(lastSeq);
    observe(s, 'end', mode !== 'each');
    rec.last = s.record;
    // Stamps and fired timers from the history: what the engine itself used.
    const histories: Array<[string | undefined, string, HistoryEntry[]]> = [[undefined, run, await client.history(def, run)]];
    for (const invokeId of Object.keys(spec.c.children ?? {})) {
      for (const kid of childIds.ids(invokeId)) histories.push([invokeId, kid, await client.history(childDef(spec, invokeId), kid).catch(() => [])]);
    }
    for (const [to, instanceId, entries] of histories) {
      for (const e of entries) {
        if (e.kind !== HistoryKind.Start) rec.stamps.set(stampKey(instanceId, e.seq), e.timeMs);
        // Not applied (an entry that changed nothing was applied: a timer fired with no transition is gone).
        if (e.kind !== HistoryKind.Event || (e.reason !== undefined && e.unchanged !== true)) continue;
        const ev = e.event as { type?: string; invokeId?: string; timerId?: string };
        if (!to && ev.type === 'jetstate.task' && typeof ev.invokeId === 'string')
          marks.push({ t: 'release', seq: e.seq, at: e.timeMs, invokeId: ev.invokeId });
        if (ev.type === 'jetstate.timer' && typeof ev.timerId === 'string') marks.push({ t: 'fire', seq: e.seq, at: e.timeMs, timerId: ev.timerId, to });
      }
    }
    const report = await client.verify(def, run);
    if (!report.ok) rec.verify = report.problems;
  } catch (e) {
    rec.error = (e as Error).message;
  }
  return rec;
}

/** Replays the recorded time line in memory and compares. */
async function replay(spec: RunSpec, rec: Recording, alphabet: readonly SentEvent[]): Promise<{ divergences: Divergence[]; maxLatenessMs: number }> {
  const divergences: Divergence[] = [];
  const childIds = Object.keys(spec.c.children ?? {});
  const model = new ModelRun(spec.def, { run: spec.run, ...spec.c.input }, spec.run, spec.c.reference?.());
  let maxLatenessMs = 0;
  // One time line: what went through the stream in stream order (sends, timer fires, activity
  // outcomes, at their stamps), settled points at the time they were read.
  const timeOf = (m: Mark): number => {
    if (m.t === 'start' || m.t === 'observe' || m.t === 'release' || m.t === 'fire') return m.at;
    if (m.t === 'send') return rec.stamps.get(stampKey(m.toId ?? spec.run, m.seq)) ?? Infinity;
    return m.window.from;
  };
  const seqOf = (m: Mark): number => (m.t === 'send' || m.t === 'release' || m.t === 'fire' ? m.seq : Infinity);
  const timeline = rec.marks.map((m, i) => ({ m, i, time: timeOf(m) })).sort((a, b) => a.time - b.time || seqOf(a.m) - seqOf(b.m) || a.i - b.i);
  if (process.env['FIDELITY_DEBUG'] === 'timeline') {
    const t0 = timeline[0]?.time ?? 0;
    const line = (m: Mark): string =>
      m.t === 'send'
        ? `send ${m.event.type}${m.to ? ` to ${m.to}` : ''} (seq ${m.seq})`
        : m.t === 'observe'
          ? `settled ${m.label}, timers ${m.obs.timers.join(',') || '-'}`
          : m.t === 'release'
            ? `outcome of ${m.invokeId}`
            : m.t === 'fire'
              ? `timer ${m.timerId}${m.to ? ` of ${m.to}` : ''} fired`
              : m.t;
    console.error(`[${spec.c.name} ${spec.run}]\n${timeline.map(({ m, time }) => `  ${time - t0} ${line(m)}`).join('\n')}`);
  }
  for (const { m, time } of timeline) {
    if (time !== Infinity) model.clock.moveTo(time);
    if (m.t === 'start') {
      await model.start(m.at);
    } else if (m.t === 'release') {
      await model.release(m.invokeId);
    } else if (m.t === 'fire') {
      const at = `${m.to ? `${m.to}'s ` : ''}timer ${m.timerId}`;
      const anonymous = timerName(m.timerId, '') === '~';
      const fired = await model.clock.fire(m.to ?? '', (t) => (anonymous ? timerName(t.id, '') === '~' : t.id === m.timerId));
      if (!fired.timer) {
        divergences.push({ kind: 'timers', at, detail: `jetstate fired ${m.timerId}, which XState does not have pending` });
        continue;
      }
      maxLatenessMs = Math.max(maxLatenessMs, m.at - fired.timer.dueMs);
      const first = fired.earlier[0];
      if (first) {
        const how = first.dueMs < fired.timer.dueMs ? `due ${fired.timer.dueMs - first.dueMs} ms earlier` : 'due at the same time and scheduled first';
        divergences.push({ kind: 'timers', at, detail: `jetstate fired ${m.timerId} while ${first.id} was pending, ${how}: XState fires ${first.id} first` });
      }
    } else if (m.t === 'send') {
      if (time === Infinity) {
        // The run stopped before its history was read (reported as failed): compare no further.
        if (!rec.error)
          divergences.push({ kind: 'failed', at: `step ${m.step + 1}`, detail: `event ${m.event.type} (seq ${m.seq}) is not in jetstate's history` });
        break;
      }
      await model.send(m.event, m.to);
    } else if (m.t === 'observe' && m.compare) {
      const want = observeModel(model, childIds, alphabet);
      if (process.env['FIDELITY_DEBUG'])
        console.error(
          `[${spec.c.name} ${spec.run}] ${m.label}\n  XState   ${JSON.stringify({ ...want, derived: undefined })}\n  jetstate ${JSON.stringify({ ...m.obs, derived: undefined })}`,
        );
      divergences.push(...compareObservations(want, m.obs, m.label));
    }
  }
  model.stop();
  return { divergences, maxLatenessMs };
}

/** Runs one sequence through jetstate and the reference, and compares them. */
export async function runSequence(target: Target, spec: RunSpec): Promise<RunResult> {
  const t0 = Date.now();
  const alphabet = spec.c.alphabet.flatMap((s) => ('send' in s && !s.to ? [s.send] : []));
  const rec = await drive(target, spec, alphabet);
  // Actions run right after their write: give the last ones a moment.
  await sleep(50);
  const jetstateEffects = takeEffects(spec.run);
  const divergences: Divergence[] = [];
  if (rec.error) divergences.push({ kind: 'failed', at: 'run', detail: rec.error });
  if (rec.stuck.length > 0)
    divergences.push({
      kind: 'failed',
      at: 'run',
      detail: `did not settle (${rec.stuck[0]})${rec.stuck.length > 1 ? `, nor at ${rec.stuck.length - 1} later points` : ''}`,
    });
  if (spec.c.failsWith !== undefined) {
    // A machine the engine runs until a step it cannot make durable, which fails the instance
    // (XState in memory runs on): that failure, deterministic (verify replays it), is what is checked.
    const last = rec.last;
    if (!rec.error && (last?.status !== 'failed' || !last.error?.includes(spec.c.failsWith))) {
      divergences.push({
        kind: 'status',
        at: 'end',
        detail: `jetstate must fail the instance with an error naming '${spec.c.failsWith}'; it is ${last?.status ?? 'missing'}${last?.error ? ` (${last.error})` : ''}`,
      });
    }
    if (rec.verify.length > 0) divergences.push({ kind: 'verify', at: 'end', detail: rec.verify.join('; ').slice(0, 600) });
    takeEffects(spec.run);
    return { spec, divergences: dedupe(divergences), maxLatenessMs: 0, durationMs: Date.now() - t0 };
  }
  const { divergences: found, maxLatenessMs } = await replay(spec, rec, alphabet);
  divergences.push(...found);
  const referenceEffects = takeEffects(spec.run);
  if (!rec.error) {
    if (rec.verify.length > 0) divergences.push({ kind: 'verify', at: 'end', detail: rec.verify.join('; ').slice(0, 600) });
    divergences.push(...compareEffects(referenceEffects, jetstateEffects));
  }
  return { spec, divergences: dedupe(divergences), maxLatenessMs, durationMs: Date.now() - t0 };
}

/** The partition reader's recovery from a silence (engine/worker/partition-reader.ts). */
const STALL_RECOVERY = /: reading again from sequence \d+ \(no message or heartbeat for \d+ ms\)/;

/** The first divergence of each kind and detail is enough. */
function dedupe(ds: Divergence[]): Divergence[] {
  const seen = new Set<string>();
  return ds.filter((d) => {
    const k = `${d.kind}:${d.detail}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * The engine's warnings about this workflow, as divergences (a warning that something was not run).
 * A partition reader reading again after a silence says the machine stalled, not that anything was
 * left out (what it read is compared as any other): one stall of a shared VM made every later case
 * of the workflow fail.
 */
export function warningsAbout(target: Target, workflow: string): Divergence[] {
  return target
    .warnings()
    .filter((l) => l.includes(`workflow '${workflow}'`) && !STALL_RECOVERY.test(l))
    .map((l) => ({ kind: 'log' as const, at: 'engine', detail: l.slice(0, 300) }));
}
