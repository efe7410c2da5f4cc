/**
 * Runs the effects of a step after its state write. Contract (also in the README):
 * - an action registered by name in `setup({ actions })` runs at least once: it stays in the
 *   record's outbox until the next write, and runs again if a crash cut its run short; it gets
 *   `idempotencyKey` (`<workflow>.<id>@<born>.<revision>.<index>`), the same on every run, and the context
 *   it saw at its place in the step, also on a re-run; one that throws is retried three times with
 *   backoff, then reported, and the instance goes on;
 * - an inline action function runs once after the write, but not again after a crash (at most
 *   once); one that throws fails the instance (XState stops the actor with the error): a signed
 *   `jetstate.fail` event with the error goes to its inbox, and is recorded like any event;
 * - sends to other instances (and to itself), child starts and child stops go through the target's
 *   inbox, signed, with a message id keyed from the outbox entry's key, so a re-run is deduplicated;
 *   one the target's stream cannot take yet (a leader being elected, a node restarting) is tried
 *   again until it is stored, the instance's next events waiting, or until the engine closes or
 *   loses the instance's partition (the event stays unfinished and the next owner sends it again:
 *   two engines trying side by side could each store it, further apart than the duplicate
 *   window); a send to a workflow no engine serves yet waits the same way (a child start there
 *   tells the parent it did not start); one no stream will ever take (a permission) is reported
 *   and given up;
 * - XState's `log` goes to the engine's logger at info (with the workflow and id), `emit` is
 *   published on `<ns>.emit.<workflow>.<id>` (core NATS, best effort, secrets sealed), both once.
 * Actions of one instance run in order, before its next events are applied.
 */
import type { AnyMachineSnapshot } from 'xstate';
import type { ResolvedSend } from '../define/messages.js';
import { ErrorCode, JetstateError, KeyRingMissingError } from '../errors.js';
import { EngineEvent, OutboxKind, isDelivery, parentToken, type ParentRef } from '../protocol/events.js';
import { bornOf } from '../protocol/record.js';
import type { Runtime } from '../store/runtime.js';
import { publishToInstance, tellParentChildNotStarted } from '../store/inbox.js';
import type { Effect, OutboxEntry } from '../step/plan.js';
import type { LoadedInstance } from '../store/records.js';
import type { TraceCarrier } from '../telemetry/telemetry.js';
import { encodeJson } from '../protocol/json.js';
import { errorText } from '../step/runner.js';
import { isStreamFull, mayStoreLater } from '../store/nats-errors.js';
import { sleepUnless } from '../clock.js';
import { sendLogicalId } from '../gate/received.js';

const RETRY_DELAYS_MS = [100, 400, 1_600];
/** A delivery the target cannot take yet is tried again from this delay, doubling up to the next. */
const DELIVERY_RETRY_MIN_MS = 100;
const DELIVERY_RETRY_MAX_MS = 5_000;
/** How often a delivery still waiting is logged again. */
const DELIVERY_WARN_EVERY_MS = 30_000;

/** Runs effects after the state that produced them is durable. */
export interface EffectExecutor {
  run(instance: LoadedInstance, effects: Effect[], waits?: Waits): Promise<void>;
  /** Runs a persisted outbox again, after a crash may have cut its first run short. */
  rerun(instance: LoadedInstance, outbox: readonly OutboxEntry[], waits?: Waits): Promise<void>;
  /** Ends the waits for deliveries the targets cannot take yet (the engine is closing). */
  stop(): void;
}

/** How a delivery that cannot be stored yet waits (see {@link EffectExecutor.run}). */
export interface Waits {
  /**
   * Called once, when a delivery cannot be stored yet, with the keys of the entries that ran
   * before it (so the caller can keep only what is left in the record).
   */
  onStall?: ((done: ReadonlySet<string>) => Promise<void>) | undefined;
  /** Aborted when this engine no longer owns the instance's partition: the delivery stops trying. */
  owned?: AbortSignal | undefined;
}

interface ChildStart {
  workflow: string;
  id: string;
  version: number;
  input: unknown;
  parent: ParentRef;
  /** The child's inherited secret paths (plan.ts): sent with its start, which seals its input with them. */
  secrets?: string[];
}

/** What a delivery that cannot be stored yet does while it waits (see {@link Waits}). */
interface DeliveryWait {
  stalled: (() => Promise<void>) | undefined;
  owned: AbortSignal | undefined;
}

export class ActionExecutor implements EffectExecutor {
  private readonly reported = new Set<string>();
  /** Aborted when the engine closes: ends the waits of deliveries. */
  private readonly closing = new AbortController();

  constructor(private readonly rt: Runtime) {}

  stop(): void {
    this.closing.abort();
  }

  /** Sends to another instance, starts or stops a child: through the target's inbox, signed. */
  private async deliver(key: string, type: string, params: unknown, trace: TraceCarrier | undefined): Promise<void> {
    if (type === OutboxKind.Send) {
      const send = params as ResolvedSend;
      await publishToInstance(this.rt, {
        workflow: send.workflow,
        id: send.id,
        event: send.event as { type: string },
        engine: { logicalId: sendLogicalId(key), send: key, ...(send.toChild !== undefined ? { toChild: send.toChild } : {}) },
        trace,
      });
    } else if (type === OutboxKind.StopChild) {
      const { workflow, id, token, parent } = params as { workflow: string; id: string; token?: number; parent?: ParentRef };
      await publishToInstance(this.rt, {
        workflow,
        id,
        event: { type: EngineEvent.Stop, ...(token !== undefined ? { token } : {}), ...(parent ? { parent } : {}) },
        engine: { logicalId: `stop.${key}` },
        trace,
      });
    } else if (type === OutboxKind.StartChild) {
      const s = params as ChildStart;
      // The child's start continues the trace of the parent's transition that started it.
      try {
        await this.startChild(s, trace);
      } catch (e) {
        if (!(e instanceof JetstateError) || e.code !== ErrorCode.NotServed) throw e;
        // Nobody can ever start it here: the parent learns now rather than waiting for ever.
        this.rt.logger.error(`workflow '${s.parent.workflow}' instance '${s.parent.id}': child workflow '${s.workflow}' cannot start: ${e.message}`);
        await tellParentChildNotStarted(
          this.rt,
          s.parent,
          { workflow: s.workflow, id: s.id },
          e.message,
          `child.${s.workflow}.${s.id}.${parentToken(s.parent)}`,
          trace,
        );
      }
    }
  }

  private async startChild(s: ChildStart, trace: TraceCarrier | undefined): Promise<void> {
    await publishToInstance(this.rt, {
      workflow: s.workflow,
      id: s.id,
      event: {
        type: EngineEvent.Start,
        input: s.input,
        version: s.version,
        parent: s.parent,
        ...(s.secrets && s.secrets.length > 0 ? { secrets: s.secrets } : {}),
      },
      // The parent's workflow too: parents of two workflows may share an id (and a token).
      engine: { logicalId: `start.${s.workflow}.${s.id}.${s.parent.workflow}.${parentToken(s.parent)}` },
      trace,
    });
  }

  async run(instance: LoadedInstance, effects: Effect[], waits: Waits = {}): Promise<void> {
    // The keys of what ran, for a stalled delivery's caller (see Waits.onStall).
    const done = new Set<string>();
    const wait = this.waitFor(waits, done);
    for (const e of effects) {
      await this.runOne(instance, e, wait);
      done.add(e.key);
    }
  }

  private waitFor({ onStall, owned }: Waits, done: ReadonlySet<string>): DeliveryWait {
    return { stalled: onStall && (() => onStall(done)), owned };
  }

  private async runOne(instance: LoadedInstance, e: Effect, wait: DeliveryWait): Promise<void> {
    const { record } = instance;
    switch (e.kind) {
      case 'unsupported':
        return this.reportOnce(instance, e.type);
      case 'send':
      case 'child':
        return this.delivery(instance, e.key, e.type, () => this.deliver(e.key, e.type, e.params, record.trace), wait);
      case 'log': {
        const { value, label } = (e.params ?? {}) as { value?: unknown; label?: unknown };
        const text = typeof value === 'string' ? value : safeJson(value);
        this.rt.logger.info(typeof label === 'string' && label !== '' ? `${label}: ${text}` : text, {
          workflow: record.workflow,
          id: record.id,
          action: 'xstate.log',
          label,
          value,
        });
        return;
      }
      case 'emit':
        return this.emit(instance, (e.params as { event?: unknown } | undefined)?.event);
      case 'inline':
        return this.inline(instance, e, wait);
      case 'action':
        return this.named(instance, e.key, e.type, e.exec?.info ?? { context: record.snapshot['context'], event: e.event }, e.params, wait, e.exec?.snapshot);
    }
  }

  /** A named action (setup({ actions })): at least once, with its effect key as `idempotencyKey`; then what it sent to itself. */
  private async named(
    instance: LoadedInstance,
    key: string,
    type: string,
    info: { context?: unknown; event?: unknown; self?: unknown },
    params: unknown,
    wait: DeliveryWait,
    snapshot: AnyMachineSnapshot = instance.snapshot,
  ): Promise<void> {
    const impl = instance.runner.actions.get(type);
    if (!impl) return;
    const sends: unknown[] = [];
    await this.attempt(instance, key, type, () => impl({ ...actionSelf(info, sends, snapshot), idempotencyKey: key }, params));
    await this.sendToSelf(instance, key, sends, wait);
  }

  /**
   * What an action sent with `self.send`, to the instance's own inbox as signed `jetstate.self`
   * events, after the action, in order (as XState's mailbox takes them after the current event).
   * Keyed by the action's effect key: a re-run stores each once.
   */
  private async sendToSelf(instance: LoadedInstance, key: string, sends: readonly unknown[], wait: DeliveryWait): Promise<void> {
    const { workflow, id } = instance.record;
    for (const [n, event] of sends.entries()) {
      if (typeof event !== 'object' || event === null || typeof (event as { type?: unknown }).type !== 'string') {
        this.rt.logger.warn(
          `workflow '${workflow}' instance '${id}': self.send in action ${key} got ${safeJson(event)}, not an event object { type }; not sent`,
          {
            workflow,
            id,
          },
        );
        continue;
      }
      await this.delivery(
        instance,
        `${key}.self${n}`,
        EngineEvent.Self,
        () =>
          publishToInstance(this.rt, {
            workflow,
            id,
            event: { type: EngineEvent.Self, event, ...bornOf(instance.record) },
            engine: { logicalId: `self.${key}.${n}` },
            trace: instance.record.trace,
          }).then(() => {}),
        wait,
      );
    }
  }

  async rerun(instance: LoadedInstance, outbox: readonly OutboxEntry[], waits: Waits = {}): Promise<void> {
    const context = instance.record.snapshot['context'];
    const done = new Set<string>();
    const wait = this.waitFor(waits, done);
    for (const e of outbox) {
      if (isDelivery(e)) {
        await this.delivery(instance, e.key, e.type, () => this.deliver(e.key, e.type, e.params, instance.record.trace), wait);
      } else {
        // The context it saw at its place in the step, when that was not the one the step ended with.
        await this.named(instance, e.key, e.type, { context: e.context !== undefined ? e.context : context, event: e.event }, e.params, wait);
      }
      done.add(e.key);
    }
  }

  /**
   * An inline action runs once, after the write. XState stops the actor when one throws; here the
   * write is done, so the instance is failed by an event of its own: recorded, replayed by verify.
   */
  private async inline(instance: LoadedInstance, e: Effect, wait: DeliveryWait): Promise<void> {
    if (!e.exec?.exec) return;
    const info = e.exec.info ?? { context: instance.record.snapshot['context'], event: e.event };
    const sends: unknown[] = [];
    try {
      await e.exec.exec({ ...actionSelf(info, sends, e.exec.snapshot ?? instance.snapshot), idempotencyKey: e.key }, e.params);
    } catch (err) {
      const { workflow, id } = instance.record;
      const reason = `inline action '${e.type}' threw after the write that ran it: ${errorText(err)}`;
      // Recorded in the instance (its error and history), like a guard that throws; info for the log.
      this.rt.logger.info(`workflow '${workflow}' instance '${id}': ${reason}; the instance fails`, { workflow, id });
      // Sent until its stream stores it, like a send: dropped, the instance would go on as if the action had succeeded.
      await this.delivery(
        instance,
        e.key,
        EngineEvent.Fail,
        async () => {
          await publishToInstance(this.rt, {
            workflow,
            id,
            event: { type: EngineEvent.Fail, reason: reason.slice(0, 1_000), ...bornOf(instance.record) },
            engine: { logicalId: `fail.${e.key}` },
            trace: instance.record.trace,
          });
        },
        wait,
      );
      return;
    }
    await this.sendToSelf(instance, e.key, sends, wait);
  }

  /** XState's `emit`: published after the write, once, best effort; secrets sealed like an event's. */
  private emit(instance: LoadedInstance, event: unknown): void {
    const { workflow, id } = instance.record;
    if (typeof event !== 'object' || event === null) return;
    try {
      this.rt.nc.publish(this.rt.names.emitSubject(workflow, id), encodeJson(this.rt.security.codec.sealEvent(workflow, id, event)));
    } catch (err) {
      this.rt.logger.warn(
        `workflow '${workflow}' instance '${id}': emitted event '${String((event as { type?: unknown }).type)}' not published (${(err as Error).message})`,
      );
    }
  }

  /**
   * A send, child start or child stop, until the target's stream has stored it: what JetStream
   * cannot take yet is tried again with backoff (logged), holding the instance's next events; what
   * it never will is given up like a failing action. Throws when the engine closes or loses the
   * instance's partition first: the event that made it stays unfinished, and the instance's next
   * owner sends it again.
   */
  private async delivery(instance: LoadedInstance, key: string, type: string, fn: () => Promise<void>, { stalled, owned }: DeliveryWait): Promise<void> {
    const { workflow, id } = instance.record;
    const since = Date.now();
    let delay = DELIVERY_RETRY_MIN_MS;
    let warnedAt: number | undefined;
    let told = false;
    for (;;) {
      // Not once more after the partition went: its next owner sends it (at the same time, deduplicated, or later).
      if (owned?.aborted) throw new Error(`action '${type}' (${key}) not stored before this engine lost the instance's partition; its next owner sends it`);
      try {
        await fn();
        if (warnedAt !== undefined)
          this.rt.logger.info(`workflow '${workflow}' instance '${id}': action '${type}' (${key}) stored after ${Date.now() - since} ms of trying`);
        return;
      } catch (e) {
        // This engine lacks the key ring the target's secrets need, or the target's stream is full:
        // it waits like an outage (warned) until restarted with one, or until the stream has room.
        if (!mayStoreLater(e) && !(e instanceof KeyRingMissingError)) {
          this.rt.logger.error(`workflow '${workflow}' instance '${id}': action '${type}' (${key}) failed (${(e as Error).message}); giving up on it`);
          return;
        }
        if (owned?.aborted) continue; // the check above ends it, before the record is touched
        if (this.closing.signal.aborted || this.rt.nc.isClosed())
          throw new Error(`action '${type}' (${key}) not stored before the engine closed (${(e as Error).message}); the instance's next owner sends it again`);
        if (!told) {
          // While it waits, the record keeps only what is left to run (see Committer.act).
          told = true;
          await stalled?.().catch(() => {});
        }
        if (warnedAt === undefined ? Date.now() - since >= 2_000 : Date.now() - warnedAt >= DELIVERY_WARN_EVERY_MS) {
          warnedAt = Date.now();
          this.rt.logger.warn(
            `workflow '${workflow}' instance '${id}': action '${type}' (${key}) not stored yet after ${Date.now() - since} ms (${(e as Error).message}); ` +
              (e instanceof KeyRingMissingError
                ? `trying again until this engine has the key ring (restart it with one); the instance's next events wait`
                : isStreamFull(e)
                  ? `trying again until the target's stream has room (it is full at its limits); the instance's next events wait`
                  : `trying again until it is (the target's stream electing a leader or restarting); the instance's next events wait`),
          );
        }
        await (owned ? sleepUnless(delay, this.closing.signal, owned) : sleepUnless(delay, this.closing.signal)); // aborted: the next failure throws
        delay = Math.min(delay * 2, DELIVERY_RETRY_MAX_MS);
      }
    }
  }

  private async attempt(instance: LoadedInstance, key: string, type: string, fn: () => unknown): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await fn();
        return;
      } catch (e) {
        const delay = RETRY_DELAYS_MS[i];
        if (delay === undefined) {
          this.rt.logger.error(
            `workflow '${instance.record.workflow}' instance '${instance.record.id}': action '${type}' (${key}) failed ${i + 1} times (${(e as Error).message}); giving up on it`,
          );
          return;
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** Reports an XState action the engine does not know (every known one is run or refused). */
  private reportOnce(instance: LoadedInstance, type: string): void {
    const k = `${instance.record.workflow}:${type}`;
    if (this.reported.has(k)) return;
    this.reported.add(k);
    this.rt.logger.warn(`workflow '${instance.record.workflow}': action '${type}' was not run; this engine does not run it yet`);
  }
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/**
 * An action's arguments with a `self` of this instance: its `send` is kept in `sends` (delivered
 * after the action; the step's `self` is an actor that never runs, whose mailbox would keep the
 * event for ever), and its `getSnapshot()` shows `snapshot` (the step's `self` is shared by the
 * machine's instances). A re-run after a crash has only the snapshot the write stored.
 */
function actionSelf<T extends { self?: unknown }>(info: T, sends: unknown[], snapshot: AnyMachineSnapshot): T {
  const self = Object.create((info.self as object | undefined) ?? null, {
    send: { value: (event: unknown) => void sends.push(event) },
    getSnapshot: { value: () => snapshot },
  }) as unknown;
  return { ...info, self };
}
