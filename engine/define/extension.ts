/**
 * Engine extensions: services that run beside an engine and finish tasks out of band, such as
 * the Step Functions adapter (an activity starts a long execution, returns `DEFER`, and the
 * extension delivers the outcome when the execution ends, possibly hours and engine restarts
 * later). The host gives an extension what it needs and nothing of the engine's internals.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { Logger } from '../logger.js';
import type { TaskRef } from '../protocol/events.js';
import type { Telemetry, TraceCarrier } from '../telemetry/telemetry.js';

export type { TaskRef };

/** An event copied to the namespace's dead-letter stream, with where it was read and why it was refused. */
export interface DeadLetterInput {
  /** The instance the event was addressed to (from its subject), or `_` parts when unknown. */
  workflow: string;
  id: string;
  /** Where it was read: its stream, subject and sequence. */
  stream: string;
  subject: string;
  seq: number;
  data: Uint8Array;
  reason: string;
}

/** Returned by an activity whose outcome an extension delivers later with `completeTask`. */
export const DEFER: unique symbol = Symbol.for('jetstate.task.defer') as never;

export type TaskOutcome = { ok: true; output: unknown } | { ok: false; error: { name: string; message: string } & Record<string, unknown> };

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
  /**
   * Copies an event the extension could not deliver, as it came, to the namespace's dead-letter
   * stream with the reason (`[code] what and what to do`); idempotent per `stream` and `seq`.
   */
  deadLetter(letter: DeadLetterInput): Promise<void>;
}

export interface EngineExtension {
  /** Looked up by activities through `ActivityContext.extension(name)`. */
  readonly name: string;
  /**
   * Starts its loops. Called again after `stop()` when the engine's start is tried again (a
   * cluster still electing its leaders), so an extension must be able to start after a stop.
   */
  start(host: ExtensionHost): Promise<void>;
  /** Stops its loops; pending work stays durable for the next engine. Also called after a `start` that failed. */
  stop(): Promise<void>;
}
