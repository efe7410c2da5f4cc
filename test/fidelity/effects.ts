/**
 * The observable side effects of corpus machines: custom actions (named or inline) record each
 * call, with the context and event they were given, into a sink. In memory and in an in-process
 * engine the sink is an array; an engine process prints each call as a line its test parses.
 * Calls are told apart by `context.run`, which every corpus machine copies from its input.
 */

export interface EffectCall {
  run: string;
  /** 'action' (named in setup), 'inline' (a function in the config), 'log', 'emit'. */
  kind: string;
  name: string;
  params?: unknown;
  /** The context the action was given (JSON). */
  context?: unknown;
  /** The type of the event the action was given. */
  event?: string;
  /** jetstate's idempotency key (absent in memory). */
  key?: string;
}

type Sink = (call: EffectCall) => void;

const calls: EffectCall[] = [];
let sink: Sink = (c) => calls.push(c);

/** Where calls go (an engine process prints them). */
export function setEffectSink(fn: Sink): void {
  sink = fn;
}

/** The calls recorded in this process for one run, and forgets them. */
export function takeEffects(run: string): EffectCall[] {
  const mine: EffectCall[] = [];
  for (let i = calls.length - 1; i >= 0; i--) {
    if (calls[i]!.run === run) mine.unshift(...calls.splice(i, 1));
  }
  return mine;
}

/** Adds calls that came from elsewhere (an engine process). */
export function addEffect(call: EffectCall): void {
  calls.push(call);
}

const json = (v: unknown): unknown => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));

interface ActionArgs {
  context?: { run?: string } & Record<string, unknown>;
  event?: { type?: string };
  idempotencyKey?: string;
}

/** Records one call. */
export function record(kind: string, name: string, args: ActionArgs, params?: unknown): void {
  const call: EffectCall = { run: String(args.context?.run ?? '?'), kind, name, context: json(args.context), event: args.event?.type ?? '?' };
  if (params !== undefined) call.params = json(params);
  if (args.idempotencyKey !== undefined) call.key = args.idempotencyKey;
  sink(call);
}

/**
 * XState's `log` as the reference records it (its logger gets `(label, value)` or `(value)`): the
 * engine's side records the engine's log line the same way.
 */
export function recordLog(run: string, label: unknown, value: unknown): void {
  record('log', 'log', { context: { run }, event: { type: '?' } }, (label ? [label, value] : [value]).map(String).join(' '));
}

/** An emitted event, as the reference records it (`actor.on('*')`) and the engine's side (its emit subject). */
export function recordEmit(run: string, type: string): void {
  record('emit', type, { context: { run }, event: { type: '?' } });
}

/** A custom action for `setup({ actions })` that records its calls. */
export function effect(name: string): (args: ActionArgs, params?: unknown) => void {
  return (args, params) => record('action', name, args, params);
}

/** An inline action function (not registered by name) that records its calls. */
export function inline(name: string): (args: ActionArgs) => void {
  const fn = (args: ActionArgs): void => record('inline', name, args);
  Object.defineProperty(fn, 'name', { value: `inline_${name}` });
  return fn;
}
