/**
 * Shared pieces of the corpus: the context every machine has (`run`, a `log` of what happened in
 * order, a counter), the input and event schemas, and small actions that write to the log, so
 * the order of entries, exits, transitions and timers shows in the compared context.
 */
import { assign } from 'xstate';
import { z } from 'zod';

export interface Ctx {
  run: string;
  log: string[];
  n: number;
  [key: string]: unknown;
}

export interface Ev {
  type: string;
  k?: number;
}

export type In = { run: string } & Record<string, unknown>;

/**
 * The kit's actions fit every corpus machine, whatever actors its setup provides; XState types an
 * action by the actors of its machine, so they are typed loosely here.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyAction = any;

export interface Types {
  context: Ctx;
  events: Ev;
  input: In;
}

/** The input schema: `run` and whatever else a case passes. */
export const input = (extra: z.ZodRawShape = {}): z.ZodType<In> => z.object({ run: z.string(), ...extra }) as unknown as z.ZodType<In>;

/** Event schemas: each type with an optional number `k`. */
export function events(...types: string[]): Record<string, z.ZodType> {
  return Object.fromEntries(types.map((t) => [t, z.object({ k: z.number().optional() })]));
}

/** The usual context factory. */
export const ctx =
  (extra: (input: In) => Record<string, unknown> = () => ({})) =>
  ({ input }: { input: In }): Ctx => ({ run: input.run, log: [], n: 0, ...extra(input) });

/** Appends a label to `context.log`. */
export const note = (label: string): AnyAction => assign(({ context }: { context: Ctx }) => ({ log: [...context.log, label] }));

/** Appends the event type (and `k`) to the log. */
export const noteEvent: AnyAction = assign(({ context, event }: { context: Ctx; event: Ev }) => ({
  log: [...context.log, event.k === undefined ? event.type : `${event.type}:${event.k}`],
}));

/** Adds `event.k` (or 1) to `n`. */
export const bump: AnyAction = assign(({ context, event }: { context: Ctx; event: Ev }) => ({ n: context.n + (event.k ?? 1) }));

/** entry and exit notes for a state. */
export const traced = (label: string): { entry: AnyAction; exit: AnyAction } => ({ entry: note(`+${label}`), exit: note(`-${label}`) });
