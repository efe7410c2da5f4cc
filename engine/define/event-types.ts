/**
 * Event and input types from a workflow's zod schemas, and the compile-time check that the
 * machine's declared types (`setup({ types: { events, input } })`) agree with those schemas. The
 * schemas are what the engine enforces at runtime; the machine's types are what its guards and
 * actions are checked against; a disagreement between the two is a bug the compiler can catch.
 */
import type { AnyStateMachine, EventFromLogic, InputFrom } from 'xstate';
import type { z } from 'zod';
import type { IdentitySummary } from '../protocol/identity.js';

type Schema = z.ZodType;

/** Flattens an intersection into one object type, so editors show `{ type: 'PAY'; amount: number }`. */
type Simplify<T> = { [K in keyof T]: T[K] } & {};

/** A payload's fields: `z.object({})` infers an index signature of `never`, which means "no fields". */
export type PayloadFields<T> = string extends keyof T ? {} : T;

/**
 * The events a workflow's schemas admit, as the engine hands them to the machine: the declared
 * `type` plus the parsed payload (zod output: defaults filled in), and `$identity` when the sender
 * carried a verified token. Use it as the machine's event type so events are written once:
 * `setup({ types: { events: eventsOf(schemas) } })`.
 *
 * @example
 * ```ts
 * const events = { PAY: z.object({ amount: z.number() }), CANCEL: z.object({}) };
 * type OrderEvent = EventsFrom<typeof events>;
 * // { type: 'PAY'; amount: number; $identity?: IdentitySummary } | { type: 'CANCEL'; $identity?: IdentitySummary }
 * ```
 */
export type EventsFrom<TSchemas extends Record<string, Schema>> = {
  [K in keyof TSchemas & string]: Simplify<{ type: K } & PayloadFields<z.output<TSchemas[K]>> & { $identity?: IdentitySummary }>;
}[keyof TSchemas & string];

/**
 * The events as the history records them: like `EventsFrom`, without `$identity` (the history
 * keeps who sent an event in the entry's `identity`).
 */
export type RecordedEventsFrom<TSchemas extends Record<string, Schema>> = {
  [K in keyof TSchemas & string]: Simplify<{ type: K } & PayloadFields<z.output<TSchemas[K]>>>;
}[keyof TSchemas & string];

/**
 * The machine's event type from the workflow's event schemas, for `setup({ types: { events } })`.
 * It returns an empty object typed as the events (the `{} as T` idiom of XState's `types`):
 * only its type matters.
 *
 * @example
 * ```ts
 * const events = { PAY: z.object({ amount: z.number() }), CANCEL: z.object({}) };
 * defineWorkflow({ name: 'order', version: 1, input, events,
 *   machine: setup({ types: { events: eventsOf(events), input: inputOf(input) } }).createMachine({ ... }) });
 * ```
 */
export function eventsOf<TSchemas extends Record<string, Schema>>(_schemas: TSchemas): EventsFrom<TSchemas> {
  return {} as EventsFrom<TSchemas>;
}

/**
 * The machine's input type from the workflow's input schema (its zod output: the engine hands the
 * machine the parsed input, defaults filled in), for `setup({ types: { input } })`. Like
 * `eventsOf`, only its type matters.
 *
 * @example
 * ```ts
 * setup({ types: { input: inputOf(OrderInput), context: {} as OrderContext } })
 * ```
 */
export function inputOf<TSchema extends Schema>(_schema: TSchema): z.output<TSchema> {
  return {} as z.output<TSchema>;
}

/** Event types of the engine and XState; never declared in `events`. */
type ReservedType = `xstate.${string}` | `jetstate.${string}`;

/** The `type`s of an event union (distributive). */
type TypesOf<E> = E extends { type: infer T extends string } ? T : never;

/** The payload of the machine's event(s) of one type, without `type` and the engine's `$identity`. */
type MachinePayload<E, K extends string> = E extends { type: K } ? Omit<E, 'type' | '$identity'> : never;

/** Mutually assignable and with the same field names (so an optional field on one side only counts). */
type SameShape<A, B> = [A] extends [B]
  ? [B] extends [A]
    ? [keyof A] extends [keyof B]
      ? [keyof B] extends [keyof A]
        ? true
        : false
      : false
    : false
  : false;

type MismatchedTypes<E, TSchemas extends Record<string, Schema>> = {
  [K in keyof TSchemas & TypesOf<E> & string]: SameShape<MachinePayload<E, K>, PayloadFields<z.output<TSchemas[K]>>> extends true ? never : K;
}[keyof TSchemas & TypesOf<E> & string];

/**
 * `unknown` when the machine's declared event types and the zod `events` agree, else an object
 * type `{ error: '...' }` whose message names the event and what differs. `defineWorkflow`
 * intersects its argument with it, so a disagreement fails to compile with that message.
 * A machine without declared event types (`setup({})`) is not checked.
 */
export type EventsCheck<TMachine extends AnyStateMachine, TSchemas extends Record<string, Schema>, TInternal extends string> =
  string extends TypesOf<EventFromLogic<TMachine>>
    ? unknown
    : [Exclude<TypesOf<EventFromLogic<TMachine>>, ReservedType | TInternal | keyof TSchemas>] extends [never]
      ? [Exclude<keyof TSchemas & string, TypesOf<EventFromLogic<TMachine>>>] extends [never]
        ? [MismatchedTypes<EventFromLogic<TMachine>, TSchemas>] extends [never]
          ? unknown
          : {
              error: `event ${MismatchedTypes<EventFromLogic<TMachine>, TSchemas>}: zod schema and machine types differ; make the payload in setup({ types: { events } }) match the schema in events, or use events: eventsOf(events)`;
            }
        : {
            error: `event ${Exclude<keyof TSchemas & string, TypesOf<EventFromLogic<TMachine>>>}: declared in events but missing from the machine's types; add it to setup({ types: { events } }), or use events: eventsOf(events)`;
          }
      : {
          error: `event ${Exclude<TypesOf<EventFromLogic<TMachine>>, ReservedType | TInternal | keyof TSchemas>}: in the machine's types but not declared in events; add its zod schema to events, or list it in internalEvents if only the machine raises it`;
        };

/**
 * `unknown` when the parsed input (the zod output of `input`) fits the machine's declared input
 * type, else `{ error: '...' }`. A machine without a declared input type is not checked.
 */
export type InputCheck<TMachine extends AnyStateMachine, TInput extends Schema> = [z.output<TInput>] extends [InputFrom<TMachine>]
  ? unknown
  : { error: "input: the zod schema's output does not fit the machine's input type; make setup({ types: { input } }) match it, or use input: inputOf(schema)" };

/** The first disagreement between a machine's declared types and a workflow's schemas, or `unknown`. */
export type DefinitionCheck<TMachine extends AnyStateMachine, TInput extends Schema, TSchemas extends Record<string, Schema>, TInternal extends string> = [
  keyof EventsCheck<TMachine, TSchemas, TInternal>,
] extends [never]
  ? InputCheck<TMachine, TInput>
  : EventsCheck<TMachine, TSchemas, TInternal>;
