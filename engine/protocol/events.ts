/**
 * The internal event protocol: the events jetstate itself puts into an instance's inbox (its
 * partition's event stream) besides the ones senders send. They travel the same path as any
 * event, so they are ordered with the instance's other events and applied exactly once; all but
 * a client's start are signed by an engine (see security/signer.ts) and refused without a valid
 * signature.
 */

import { bornOf } from './record.js';

export const EngineEvent = {
  /** Creates an instance: `{ input, parent? }`. From a client (checked like any event) or an engine (a child start, signed). */
  Start: 'jetstate.start',
  /** A durable timer came due: `{ timerId, token }`. */
  Timer: 'jetstate.timer',
  /** A task's outcome: `{ invokeId, token, ok, output?, error? }`. */
  Task: 'jetstate.task',
  /** A child workflow's outcome, for its parent: `{ invokeId, token, ok, output?, error? }`. */
  Child: 'jetstate.child',
  /** The parent left the state that invoked this child: the child stops where it is. */
  Stop: 'jetstate.stop',
  /**
   * A request to cancel: a machine that handles `jetstate.cancel` in its current state decides
   * (clean-up states, compensation); otherwise the instance stops. `{ reason? }`.
   */
  Cancel: 'jetstate.cancel',
  /** Stop now, whatever the machine: timers and tasks are dropped, children stopped. `{ reason? }`. */
  Terminate: 'jetstate.terminate',
  /** Remove a finished instance's record and history. */
  Delete: 'jetstate.delete',
  /** An event the instance sent itself (XState's `sendTo` self), through its inbox: `{ event }`. */
  Self: 'jetstate.self',
  /**
   * The instance fails: an inline action threw after the write that ran it (XState stops the actor
   * with an error). `{ reason }`; only an engine sends it.
   */
  Fail: 'jetstate.fail',
} as const;

/** The instance-control events a sender may send (checked against the workflow's permissions). */
export const CONTROL_EVENTS: ReadonlySet<string> = new Set([EngineEvent.Cancel, EngineEvent.Terminate, EngineEvent.Delete]);
export type EngineEvent = (typeof EngineEvent)[keyof typeof EngineEvent];

/** Kinds of outbox entries besides custom actions (kept in the record until they have run). */
export const OutboxKind = {
  /** An event for another instance (`sendToInstance`, `sendParent`, `sendTo` a child workflow). */
  Send: 'jetstate.send',
  StartChild: 'jetstate.startChild',
  StopChild: 'jetstate.stopChild',
} as const;

/** An outbox entry that puts an event into another instance's stream (a send, a child start or stop). */
export const isDelivery = (e: { type: string }): boolean => e.type === OutboxKind.Send || e.type === OutboxKind.StartChild || e.type === OutboxKind.StopChild;

/** Where a child instance reports back to. */
export interface ParentRef {
  workflow: string;
  id: string;
  invokeId: string;
  token: number;
  /** The parent's `born` (see InstanceRecord), when its record has one. */
  born?: number;
}

export interface StartEvent {
  type: typeof EngineEvent.Start;
  input: unknown;
  /** Set on a child workflow's start (signed by the parent's engine). */
  parent?: ParentRef;
  /**
   * A child's inherited secret paths: where its input holds values its parent declared secret
   * (sealed there). Honoured only on a start signed by an engine.
   */
  secrets?: string[];
}

export interface TimerFireEvent {
  type: typeof EngineEvent.Timer;
  timerId: string;
  token: number;
  /** The instance's `born` (see InstanceRecord): an outcome for an earlier instance with the same id changes nothing. */
  born?: number;
}

export interface ActorOutcomeEvent {
  type: typeof EngineEvent.Task | typeof EngineEvent.Child;
  invokeId: string;
  token: number;
  /** The instance's `born` (see InstanceRecord): an outcome for an earlier instance with the same id changes nothing. */
  born?: number;
  ok: boolean;
  output?: unknown;
  error?: { name: string; message: string } & Record<string, unknown>;
  /** Paths of `output` holding values of the sending instance's secret paths: sealed on the way. */
  secrets?: string[];
  /**
   * For a child's outcome: the child instance it is about. Two children invoked under one invoke id
   * in one step share a token; the parent takes the outcome for the child it holds only. Absent
   * in outcomes sent before it existed (matched by token alone).
   */
  child?: { workflow: string; id: string };
}
export type TaskResultEvent = ActorOutcomeEvent & { type: typeof EngineEvent.Task };

/** What an invocation came to: its output (with the paths to seal in it), or its error. */
export type ActorResult = { ok: true; output: unknown; secrets?: string[] } | { ok: false; error: NonNullable<ActorOutcomeEvent['error']> };

/**
 * The outcome event of the invocation `ref` (a task's or a child's), its fields always in one
 * order: a retry publishes the same bytes under its keyed message id.
 */
export function outcomeEvent<T extends ActorOutcomeEvent['type']>(
  type: T,
  ref: { invokeId: string; token: number; born?: number | undefined },
  result: ActorResult,
  child?: { workflow: string; id: string },
): ActorOutcomeEvent & { type: T } & Record<string, unknown> {
  const head = { type, invokeId: ref.invokeId, token: ref.token, ...bornOf(ref), ...(child ? { child } : {}) };
  return result.ok
    ? { ...head, ok: true, output: result.output, ...(result.secrets && result.secrets.length > 0 ? { secrets: result.secrets } : {}) }
    : { ...head, ok: false, error: result.error };
}
export type ChildResultEvent = ActorOutcomeEvent & { type: typeof EngineEvent.Child };

/** Names one invocation of a task: the same for every attempt. */
export interface TaskRef {
  workflow: string;
  id: string;
  invokeId: string;
  token: number;
  /** Tells the instance apart from an earlier one with the same id (deleted, then started again); absent for instances created before it existed. */
  born?: number;
}

/**
 * True for an engine event (a timer's fire, a task's or child's outcome, a send to itself, a
 * failure of its own) or a task reference made for an earlier instance with the same id: one
 * published late, or captured and published again, after the id was deleted and started again. A
 * sender's own event may have a field named `born`: it is not looked at.
 */
export function isForEarlierInstance(event: unknown, born: number | undefined): boolean {
  const b = (event as { born?: unknown } | null)?.born;
  const type = typeOf(event);
  const engineMade =
    type === undefined ||
    type === EngineEvent.Timer ||
    type === EngineEvent.Task ||
    type === EngineEvent.Child ||
    type === EngineEvent.Self ||
    type === EngineEvent.Fail;
  return engineMade && born !== undefined && typeof b === 'number' && b !== born;
}

const typeOf = (event: unknown): unknown => (typeof event === 'object' && event !== null ? (event as { type?: unknown }).type : undefined);

/** True for the reserved event types (`jetstate.*`, `xstate.*`) no sender may send as its own. */
export function isReservedType(type: string): boolean {
  return type.startsWith('jetstate.') || type.startsWith('xstate.');
}

export function isStart(event: unknown): event is StartEvent {
  return typeOf(event) === EngineEvent.Start;
}

export function isTimerFire(event: unknown): event is TimerFireEvent {
  const e = event as Partial<TimerFireEvent> | null;
  return typeOf(event) === EngineEvent.Timer && typeof e!.timerId === 'string' && typeof e!.token === 'number';
}

function isOutcome(event: unknown, type: string): boolean {
  const e = event as Partial<ActorOutcomeEvent> | null;
  return typeOf(event) === type && typeof e!.invokeId === 'string' && typeof e!.token === 'number' && typeof e!.ok === 'boolean';
}

export function isTaskResult(event: unknown): event is TaskResultEvent {
  return isOutcome(event, EngineEvent.Task);
}

export function isChildResult(event: unknown): event is ChildResultEvent {
  return isOutcome(event, EngineEvent.Child);
}

export function isControl(
  event: unknown,
  type: typeof EngineEvent.Cancel | typeof EngineEvent.Terminate | typeof EngineEvent.Delete,
): event is { type: string; reason?: string } {
  return typeOf(event) === type;
}

export function isStop(event: unknown): boolean {
  return typeOf(event) === EngineEvent.Stop;
}

export interface SelfEvent {
  type: typeof EngineEvent.Self;
  event: { type: string } & Record<string, unknown>;
  /** The sending instance's `born` (see InstanceRecord): an earlier instance's send is not applied. */
  born?: number;
}

/** An event the instance sent itself, wrapped (see `EngineEvent.Self`). */
export function isSelfSend(event: unknown): event is SelfEvent {
  const inner = (event as { event?: unknown } | null)?.event;
  return typeOf(event) === EngineEvent.Self && typeof inner === 'object' && inner !== null && typeof (inner as { type?: unknown }).type === 'string';
}

export interface FailEvent {
  type: typeof EngineEvent.Fail;
  reason: string;
  /** The failing instance's `born`: an earlier instance's failure is not applied. */
  born?: number;
}

export function isFail(event: unknown): event is FailEvent {
  return typeOf(event) === EngineEvent.Fail && typeof (event as { reason?: unknown }).reason === 'string';
}

/** The XState event for the outcome of an invoked task or child workflow. */
export function actorOutcome(e: { invokeId: string; ok: boolean; output?: unknown; error?: unknown; secrets?: unknown }): { type: string } {
  // The paths sealing the output stay with it, so a copy of this event (an outbox entry) is sealed alike.
  const secrets: { secrets?: unknown } = Array.isArray(e.secrets) && e.secrets.length > 0 ? { secrets: e.secrets } : {};
  return e.ok
    ? ({ type: `xstate.done.actor.${e.invokeId}`, output: e.output, ...secrets } as unknown as { type: string })
    : ({ type: `xstate.error.actor.${e.invokeId}`, error: e.error } as { type: string });
}

/** A parent's invoke token as message ids carry it (with the parent's `born` when it has one). */
export const parentToken = (parent: ParentRef): string => (parent.born === undefined ? String(parent.token) : `${parent.born}.${parent.token}`);
