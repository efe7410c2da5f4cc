/**
 * The types a workflow definition gives what is read back: the instance view (context, state
 * value, output, tags, from the machine's types) and the history (events from the zod schemas plus
 * the engine's own). The client's `get`, `list`, `waitFor`, `start` and `history` return these.
 */
import type { ContextFrom, EventFrom, OutputFrom, SnapshotFrom, StateValue, TagsFrom } from 'xstate';
import type { z } from 'zod';
import type { EngineEvent, TaskResultEvent, ChildResultEvent, TimerFireEvent, SelfEvent, FailEvent } from '../protocol/events.js';
import type { Instance, StateMatch, TypedHistoryEntry } from '../protocol/record.js';
import type { WorkflowDefinition } from './definition.js';
import type { RecordedEventsFrom } from './event-types.js';

type IsAny<T> = 0 extends 1 & T ? true : false;
/** `T`, or `Fallback` when `T` is `any` (a definition typed only as `WorkflowDefinition`). */
type Known<T, Fallback> = IsAny<T> extends true ? Fallback : T;
/** `unknown` for XState's "not declared" (`NonReducibleUnknown`, which is `{} | null | undefined`). */
type Declared<T> = IsAny<T> extends true ? unknown : unknown extends T ? unknown : T;

/**
 * The machine's context type (`setup({ types: { context } })`).
 *
 * @example
 * ```ts
 * const paid: number = ((await client.get(order, 'o-1'))!.context satisfies ContextOf<typeof order>).paid;
 * ```
 */
export type ContextOf<W extends WorkflowDefinition> = Known<ContextFrom<W['machine']>, unknown>;

/**
 * The machine's state value type: a union of its top-level state names, with objects for the
 * states that have children (`'paid' | { shipping: 'packed' | 'sent' }`).
 *
 * @example
 * ```ts
 * const value: StateValueOf<typeof order> = (await client.get(order, 'o-1'))!.value;
 * ```
 */
export type StateValueOf<W extends WorkflowDefinition> =
  Known<SnapshotFrom<W['machine']>['value'], StateValue> extends infer V extends StateValue ? V : StateValue;

/**
 * The machine's output type (`setup({ types: { output } })`), set once an instance is done;
 * `unknown` when the machine does not declare it (XState does not infer it from `output`).
 *
 * @example
 * ```ts
 * const out: OutputOf<typeof order> | undefined = (await client.get(order, 'o-1'))!.output;
 * ```
 */
export type OutputOf<W extends WorkflowDefinition> = Declared<OutputFrom<W['machine']>>;

/**
 * The machine's tags (`setup({ types: { tags } })`), or `string` when it does not declare them.
 *
 * @example
 * ```ts
 * const busy = (await client.get(order, 'o-1'))!.hasTag('busy' satisfies TagOf<typeof order>);
 * ```
 */
export type TagOf<W extends WorkflowDefinition> = Known<TagsFrom<W['machine']>, string> extends infer T extends string ? T : string;

/**
 * An instance of workflow `W` as the client shows it: `get()`, `list()`, `waitFor()`, `start()`.
 *
 * @example
 * ```ts
 * const inst: WorkflowInstance<typeof order> | null = await client.get(order, 'o-1');
 * if (inst?.matches('paid')) console.log(inst.context.paid);
 * ```
 */
export type WorkflowInstance<W extends WorkflowDefinition> = Instance<
  ContextOf<W>,
  StateValueOf<W>,
  OutputOf<W>,
  TagOf<W>,
  StateMatch<StateValueOf<W>>,
  EventOf<W>
>;

/** The events the machine takes (`setup({ types: { events } })`), for `can()`; any event when it does not declare them. */
export type EventOf<W extends WorkflowDefinition> = Known<EventFrom<W['machine']>, AnyEvent> extends infer E extends { type: string } ? E : AnyEvent;

type AnyEvent = { type: string; [key: string]: unknown };

/** The start event a history records: the parsed input. */
export interface StartEventOf<W extends WorkflowDefinition> {
  type: typeof EngineEvent.Start;
  input: z.output<W['input']>;
}

/** The parent left the state that invoked this child workflow instance: it stopped where it was. */
export interface StopEvent {
  type: typeof EngineEvent.Stop;
  token?: number;
  /** The parent that sent it, as the child knows its parent: a stop from any other is ignored. */
  parent?: { workflow: string; id: string; invokeId: string; token: number; born?: number };
}

/**
 * The engine's own events, as the history records them: a durable timer came due, a task
 * (activity) or a child workflow finished, the parent stopped this child, the instance sent
 * itself an event (`sendTo` self), an inline action threw after the write (the instance failed).
 */
export type EngineHistoryEvent = TimerFireEvent | TaskResultEvent | ChildResultEvent | StopEvent | SelfEvent | FailEvent;

/**
 * What the `event` of a history entry of kind `'event'` can be for workflow `W`: one of its
 * declared events (parsed: zod output) or one of the engine's own; narrow it by `type`.
 *
 * @example
 * ```ts
 * function describe(e: WorkflowHistoryEvent<typeof order>): string {
 *   switch (e.type) {
 *     case 'PAY': return `paid ${e.amount}`;
 *     case 'jetstate.timer': return `timer ${e.timerId}`;
 *     default: return e.type;
 *   }
 * }
 * ```
 */
export type WorkflowHistoryEvent<W extends WorkflowDefinition> = RecordedEventsFrom<W['events']> | EngineHistoryEvent;

/**
 * An entry of the history of an instance of workflow `W`, discriminated by `kind` (see
 * `TypedHistoryEntry`); what `client.history(workflow, id)` returns.
 *
 * @example
 * ```ts
 * const amounts = (await client.history(order, 'o-1')).flatMap((e) => (e.kind === 'event' && e.event.type === 'PAY' ? [e.event.amount] : []));
 * ```
 */
export type WorkflowHistoryEntry<W extends WorkflowDefinition> = TypedHistoryEntry<WorkflowHistoryEvent<W>, StartEventOf<W>, StateValueOf<W>>;
