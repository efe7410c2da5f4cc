/**
 * Runs the custom actions of a step after its state write. Contract (also in the README):
 * - an action registered by name in `setup({ actions })` runs at least once: it stays in the
 *   record's outbox until the next write, and runs again if a crash cut its run short; it gets
 *   `idempotencyKey` (`<workflow>.<id>.<revision>.<index>`), the same on every run;
 * - an inline action function runs once after the write, but not again after a crash;
 * - a throwing action is retried three times with backoff, then reported; the instance goes on.
 * Actions of one instance run in order, before its next events are applied.
 */
import { SEND_ACTION, type ResolvedSend } from '../define/messages.js';
import { partitionOf } from '../protocol/names.js';
import type { EffectExecutor } from '../worker/partition-worker.js';
import { encodeJson } from '../protocol/record.js';
import { ErrorCode, JetstateError } from '../errors.js';
import type { Runtime } from '../store/runtime.js';
import { START_CHILD, STOP_CHILD, STOP_EVENT, type Effect, type OutboxEntry } from '../step/step.js';
import { createInstance } from './start.js';
import type { InstanceRecord } from '../protocol/record.js';
import type { LoadedInstance } from '../store/records.js';
import { contextOf, type TraceCarrier } from '../telemetry/telemetry.js';

const RETRY_DELAYS_MS = [100, 400, 1_600];

export class ActionExecutor implements EffectExecutor {
  private readonly reported = new Set<string>();

  constructor(private readonly rt: Runtime) {}

  private get logger(): Runtime['logger'] {
    return this.rt.logger;
  }

  /** Starts or stops a child workflow instance. Idempotent: the child's id and messages are stable. */
  private async child(key: string, type: string, params: unknown, trace: TraceCarrier | undefined): Promise<void> {
    if (type === STOP_CHILD) {
      const { workflow, id } = params as { workflow: string; id: string };
      await this.send(key, { workflow, id, event: { type: STOP_EVENT } }, trace);
      return;
    }
    const start = params as { workflow: string; id: string; input: unknown; parent: NonNullable<InstanceRecord['parent']> };
    const versions = this.rt.registry.versions(start.workflow);
    const latest = versions.sort((a, b) => b.def.version - a.def.version)[0];
    if (!latest) throw new Error(`child workflow '${start.workflow}' is not registered in this engine`);
    try {
      // The child's start continues the trace of the parent's transition that started it.
      await createInstance(this.rt, latest.def, latest.runner, start.id, start.input, start.parent, contextOf(trace));
    } catch (e) {
      // Invalid input or a conflicting instance: retrying will not help; the parent waits (reported).
      if (e instanceof JetstateError && (e.code === ErrorCode.InvalidInput || e.code === ErrorCode.InstanceConflict)) {
        this.logger.error(`child workflow '${start.workflow}' instance '${start.id}' of ${start.parent.workflow} ${start.parent.id}: ${e.message}`);
        return;
      }
      throw e;
    }
  }

  /** Publishes to the target instance's event stream; the key deduplicates re-runs. */
  private async send(key: string, send: ResolvedSend, trace: TraceCarrier | undefined): Promise<void> {
    const subject = this.rt.names.eventSubject(partitionOf(send.workflow, send.id, this.rt.partitions), send.workflow, send.id);
    // Sealed for the receiving instance, and signed: the receiver trusts its engine's own sends.
    const data = encodeJson(this.rt.security.codec.seal(send.workflow, send.id, 'event', send.event));
    await this.rt.js.publish(subject, data, this.rt.security.signer.options(subject, data, { msgID: `send.${key}` }, trace));
  }

  async run(instance: LoadedInstance, effects: Effect[]): Promise<void> {
    for (const e of effects) {
      if (e.kind === 'unsupported') {
        this.reportOnce(instance, e.type);
        continue;
      }
      if (e.kind === 'send') {
        await this.attempt(instance, e.key, e.type, () => this.send(e.key, e.params as ResolvedSend, instance.record.trace));
        continue;
      }
      if (e.kind === 'child') {
        await this.attempt(instance, e.key, e.type, () => this.child(e.key, e.type, e.params, instance.record.trace));
        continue;
      }
      const impl = e.kind === 'action' ? instance.runner.actions.get(e.type) : undefined;
      const info = e.exec?.info ?? { context: instance.record.snapshot['context'], event: e.event };
      if (impl) await this.attempt(instance, e.key, e.type, () => impl({ ...info, idempotencyKey: e.key }, e.params));
      else if (e.exec?.exec) await this.attempt(instance, e.key, e.type, () => e.exec!.exec!({ ...info, idempotencyKey: e.key }, e.params));
    }
  }

  /** Runs a record's outbox again (after a crash may have cut its first run short). */
  async rerun(instance: LoadedInstance, outbox: readonly OutboxEntry[]): Promise<void> {
    const context = instance.record.snapshot['context'];
    for (const e of outbox) {
      if (e.type === SEND_ACTION) {
        await this.attempt(instance, e.key, e.type, () => this.send(e.key, e.params as ResolvedSend, instance.record.trace));
        continue;
      }
      if (e.type === START_CHILD || e.type === STOP_CHILD) {
        await this.attempt(instance, e.key, e.type, () => this.child(e.key, e.type, e.params, instance.record.trace));
        continue;
      }
      const impl = instance.runner.actions.get(e.type);
      if (impl) await this.attempt(instance, e.key, e.type, () => impl({ context, event: e.event, idempotencyKey: e.key }, e.params));
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
          this.logger.error(`workflow '${instance.record.workflow}' instance '${instance.record.id}': action '${type}' (${key}) failed ${i + 1} times (${(e as Error).message}); giving up on it`);
          return;
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private reportOnce(instance: LoadedInstance, type: string): void {
    const k = `${instance.record.workflow}:${type}`;
    if (this.reported.has(k)) return;
    this.reported.add(k);
    this.logger.warn(`workflow '${instance.record.workflow}': action '${type}' was not run; this engine does not run it yet`);
  }
}
