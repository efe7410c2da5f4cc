/**
 * The reference: the same machine run in memory by XState itself (`createActor(machine, { input })`
 * on a simulated clock), replaying the timeline jetstate recorded. Activities become plain
 * promise actors running the same function; child workflows become the child's machine.
 */
import { createActor, fromPromise, SimulatedClock, type AnyActorRef, type AnyMachineSnapshot, type AnyStateMachine } from 'xstate';
import { activitiesOf, type ActivityDefinition } from '../../engine/define/activity.js';
import { childWorkflowsOf } from '../../engine/define/child.js';
import type { WorkflowDefinition } from '../../engine/index.js';
import { record } from './effects.js';

interface ScheduledEventLike {
  source: AnyActorRef;
  id: string;
  event: { type: string };
}

/** A pending timer of the model: its XState id, the event it raises and when it is due. */
export interface ModelTimer {
  /** The clock's own number for it (its scheduling order). */
  n: number;
  id: string;
  event: string;
  dueMs: number;
  /** '' when the root actor scheduled it, else the id of the child actor that did. */
  source: string;
}

/** What firing a timer at jetstate's word found. */
export interface FireOutcome {
  /** The reference's timer it fired; undefined when it has none by that id. */
  timer?: ModelTimer;
  /** Timers of the same actor that were due earlier (or as early and scheduled first): XState fires them first. */
  earlier: ModelTimer[];
}

/**
 * XState's simulated clock, driven: time moves only to the instants of the recorded time line and
 * no timer fires on its own; a timer fires when jetstate fired it (its history says when), and
 * the clock reports when a timer due earlier was still pending then, which XState would have
 * fired first. So lateness (jetstate applying a timer after its due time) is no divergence, and
 * the order is. The clock also knows each timeout's scheduled event (id, event, source), to list
 * pending timers like jetstate lists its durable timers.
 */
export class ModelClock extends SimulatedClock {
  private system: { _snapshot: { _scheduledEvents: Record<string, ScheduledEventLike> } } | undefined;
  private root: AnyActorRef | undefined;
  private readonly seen = new WeakSet<object>();
  private readonly labels = new Map<number, { id: string; event: string; source: AnyActorRef }>();

  attach(actor: AnyActorRef): void {
    this.root = actor;
    this.system = actor.system as unknown as typeof this.system;
  }

  override setTimeout(fn: (...args: unknown[]) => void, timeout: number): number {
    // XState's scheduler records the scheduled event right before it asks the clock.
    const fresh = Object.values(this.system?._snapshot._scheduledEvents ?? {}).find((e) => !this.seen.has(e));
    const id = super.setTimeout(fn, timeout) as unknown as number;
    if (fresh) {
      this.seen.add(fresh);
      this.labels.set(id, { id: fresh.id, event: fresh.event.type, source: fresh.source });
    }
    return id;
  }

  override clearTimeout(id: unknown): void {
    this.labels.delete(id as number);
    super.clearTimeout(id as never);
  }

  private timeoutsMap(): Map<number, { start: number; timeout: number; fn: () => void }> {
    return (this as unknown as { timeouts: Map<number, { start: number; timeout: number; fn: () => void }> }).timeouts;
  }

  /** Pending timers, soonest first (ties in scheduling order, as XState fires them). */
  pending(): ModelTimer[] {
    return [...this.timeoutsMap()]
      .map(([n, t]) => {
        const label = this.labels.get(n);
        return {
          n,
          id: label?.id ?? '?',
          event: label?.event ?? '?',
          dueMs: t.start + t.timeout,
          source: !label || label.source === this.root ? '' : label.source.id,
        };
      })
      .sort((a, b) => a.dueMs - b.dueMs || a.n - b.n);
  }

  /** Moves the time forward (never back); no timer fires (`set` would fire the due ones). */
  moveTo(t: number): void {
    if (t > this.now()) (this as unknown as { _now: number })._now = t;
  }

  /**
   * Fires the pending timer of `source` that `matches` (the earliest so named), as jetstate did,
   * and says which timers XState would have fired before it.
   */
  async fire(source: string, matches: (t: ModelTimer) => boolean): Promise<FireOutcome> {
    const mine = this.pending().filter((t) => t.source === source);
    const timer = mine.find(matches);
    if (!timer) return { earlier: [] };
    const earlier = mine.filter((t) => t !== timer && (t.dueMs < timer.dueMs || (t.dueMs === timer.dueMs && t.n < timer.n)));
    const entry = this.timeoutsMap().get(timer.n)!;
    this.timeoutsMap().delete(timer.n);
    this.labels.delete(timer.n);
    entry.fn.call(null);
    await settleMicrotasks();
    return { timer, earlier };
  }
}

/** Lets promise actors (activities in memory) settle and their outcomes be processed. */
export async function settleMicrotasks(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/**
 * When an activity's outcome is delivered: the reference computes it at once, but hands it to the
 * machine only when the harness releases it (at the point jetstate applied that outcome), since
 * how long an activity takes is up to the world, not to the machine.
 */
export type Gate = (invokeId: string, signal: AbortSignal) => Promise<void>;

/** The activity as an in-memory promise actor: the same function, retried as the engine would. */
function inMemoryActivity(name: string, def: ActivityDefinition, gate?: Gate): ReturnType<typeof fromPromise> {
  return fromPromise(async ({ input, signal, self }) => {
    const outcome = run(input, signal);
    outcome.catch(() => {});
    if (gate) await gate(self.id, signal);
    return outcome;
  });
  async function run(input: unknown, signal: AbortSignal): Promise<unknown> {
    let last: unknown;
    for (let attempt = 1; attempt <= def.options.retry.maxAttempts; attempt++) {
      try {
        return await def.fn({
          input,
          signal,
          attempt,
          idempotencyKey: `model.${name}`,
          heartbeat: () => {},
          task: { workflow: 'model', id: 'model', invokeId: name, token: 0 },
          trace: undefined,
          extension: () => {
            throw new Error('no extensions in memory');
          },
        });
      } catch (e) {
        last = e;
        if ((e as Error).name === 'TerminalError') break;
      }
    }
    throw last;
  }
}

/** The machine as XState runs it in memory: activities and child workflows replaced. */
export function inMemoryMachine(def: WorkflowDefinition, gate?: Gate): AnyStateMachine {
  const machine = def.machine;
  const actors: Record<string, unknown> = {};
  for (const [name, a] of activitiesOf(machine)) actors[name] = inMemoryActivity(name, a, gate);
  for (const [name, child] of childWorkflowsOf(machine)) actors[name] = inMemoryMachine(child);
  return Object.keys(actors).length === 0 ? machine : machine.provide({ actors: actors as never });
}

/** One in-memory run of a machine, driven by the harness. */
export class ModelRun {
  readonly clock = new ModelClock();
  readonly actor: AnyActorRef;
  readonly logs: unknown[][] = [];
  readonly emitted: string[] = [];
  /** Set when the actor reported an error (XState stops on an unhandled error). */
  error: unknown;
  /** Activity outcomes waiting to be released, by invoke id, oldest first. */
  private readonly waiting = new Map<string, Array<() => void>>();

  constructor(
    readonly def: WorkflowDefinition,
    readonly input: Record<string, unknown>,
    readonly run: string,
    machine?: AnyStateMachine,
  ) {
    const gate: Gate = (invokeId, signal) =>
      new Promise<void>((resolve) => {
        const queue = this.waiting.get(invokeId) ?? [];
        this.waiting.set(invokeId, queue);
        queue.push(resolve);
        // A stopped activity (its state was exited) never gets an outcome.
        signal.addEventListener('abort', () => queue.splice(queue.indexOf(resolve) >>> 0, 1), { once: true });
      });
    this.actor = createActor(machine ?? inMemoryMachine(def, gate), {
      input,
      clock: this.clock,
      logger: (...args: unknown[]) => {
        this.logs.push(args);
        record('log', 'log', { context: { run }, event: { type: '?' } }, args.map(String).join(' '));
      },
    });
    this.clock.attach(this.actor);
    this.actor.on('*', (e: { type: string }) => {
      this.emitted.push(e.type);
      record('emit', e.type, { context: { run }, event: { type: '?' } });
    });
    this.actor.subscribe({ error: (e: unknown) => (this.error = e) });
  }

  async start(atMs: number): Promise<void> {
    this.clock.moveTo(atMs);
    this.actor.start();
    await settleMicrotasks();
  }

  async send(event: { type: string }, to?: string): Promise<void> {
    if (to) {
      const child = (this.snapshot().children as Record<string, AnyActorRef | undefined>)[to];
      // jetstate rejects an event for an instance that does not exist: nothing happens either way.
      child?.send(event);
    } else {
      this.actor.send(event);
    }
    await settleMicrotasks();
  }

  /** Hands the oldest pending outcome of this invocation to the machine. */
  async release(invokeId: string): Promise<void> {
    this.waiting.get(invokeId)?.shift()?.();
    await settleMicrotasks();
  }

  snapshot(): AnyMachineSnapshot {
    return this.actor.getSnapshot() as AnyMachineSnapshot;
  }

  /** The snapshot of a running child machine, by invoke id. */
  child(id: string): AnyMachineSnapshot | undefined {
    const ref = (this.snapshot().children as Record<string, AnyActorRef | undefined>)[id];
    const snap = ref?.getSnapshot() as AnyMachineSnapshot | undefined;
    return snap && 'value' in snap ? snap : undefined;
  }

  stop(): void {
    this.actor.stop();
  }
}
