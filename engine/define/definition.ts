/**
 * `defineWorkflow`: a pure declaration of a durable workflow, checked when it is defined (at
 * import time) rather than at the first event.
 */
import type { AnyStateMachine, AnyStateNode } from 'xstate';
import type { z } from 'zod';
import { ErrorCode, fail } from '../errors.js';
import { NAME_PATTERN, checkName } from '../protocol/names.js';
import { activitiesOf } from './activity.js';
import { checkKeys } from './keys.js';
import { actorKind, whyNotDurable } from './actor-kinds.js';
import { actionsOf, builtinType } from './machine-walk.js';
import type { PermissionRule } from '../security/roles.js';
import { checkSecretPaths } from '../security/secrets.js';
import type { DefinitionCheck } from './event-types.js';

/** A zod schema, structurally (so any zod 4 schema instance fits). */
export type SchemaLike<T = unknown> = z.ZodType<T>;

export interface WorkflowOptions<
  TMachine extends AnyStateMachine,
  TInput extends SchemaLike,
  TEvents extends Record<string, SchemaLike>,
  TInternal extends string = never,
> {
  /** Stable name: part of every key and subject. 1-128 of A-Z a-z 0-9 _ -. */
  name: string;
  /** Positive integer. Instances stay on the version that started them. */
  version: number;
  machine: TMachine;
  /** Schema of the start input; the parsed value becomes the machine's `input`. */
  input: TInput;
  /** Every event type a sender may send, mapped to the schema of its payload (without `type`). */
  events: TEvents;
  /**
   * Event types the machine declares in `setup({ types: { events } })` but only raises itself
   * (`raise`, delayed or not): no sender may send them, so they have no schema in `events`.
   * Listing them here exempts them from the compile-time check that the machine's event types and
   * `events` agree.
   */
  internalEvents?: readonly TInternal[];
  /**
   * Who may start instances and send each event: a list of roles (any of them), `{ anyOf, allOf }`,
   * or a predicate over the verified identity. Events without a rule of their own fall back to
   * `default`; with neither, anyone may send them (unless `requireIdentity`).
   */
  permissions?: Permissions<keyof TEvents & string>;
  /** Every start and event must carry a token the engine verifies. */
  requireIdentity?: boolean;
  /**
   * Dotted paths of fields to encrypt (AES-256-GCM) before anything reaches KV or a stream, e.g.
   * `['card.number', 'cards.*.cvc']`. They apply to the input, the context, event payloads and task
   * inputs alike. Needs a key ring: `secrets: { keyRing }` in the client and engine options.
   */
  secrets?: readonly string[];
  /** Limits of this workflow, over the engine's defaults. */
  limits?: WorkflowLimits;
}

export interface Permissions<TEventType extends string = string> {
  start?: PermissionRule;
  /** Who may cancel an instance (`cancel()`); falls back to `default`. */
  cancel?: PermissionRule;
  /** Who may terminate one (`terminate()`); falls back to `default`. */
  terminate?: PermissionRule;
  /** Who may delete a finished one (`delete()`); falls back to `default`. */
  delete?: PermissionRule;
  events?: Partial<Record<TEventType, PermissionRule>>;
  default?: PermissionRule;
}

export interface WorkflowLimits {
  /** Largest encoded event payload accepted, in bytes. */
  maxEventBytes?: number;
  /** Largest encoded instance record written, in bytes. */
  maxSnapshotBytes?: number;
  /** Most events per second one instance accepts (a token bucket with a burst of one second). */
  maxEventsPerSecond?: number;
}

/** The security settings of a definition, resolved. */
export interface WorkflowSecurity {
  readonly permissions: Permissions | undefined;
  readonly requireIdentity: boolean;
  readonly secrets: readonly string[];
  readonly limits: WorkflowLimits;
}

export interface WorkflowDefinition<
  TMachine extends AnyStateMachine = AnyStateMachine,
  TInput extends SchemaLike = SchemaLike,
  TEvents extends Record<string, SchemaLike> = Record<string, SchemaLike>,
> {
  readonly name: string;
  readonly version: number;
  readonly machine: TMachine;
  readonly input: TInput;
  readonly events: TEvents;
  readonly security: WorkflowSecurity;
  readonly kind: 'jetstate.workflow';
}

/** The event a sender passes to `send()`: a declared `type` plus its payload fields. */
export type WorkflowEvent<W extends WorkflowDefinition> = {
  [K in keyof W['events'] & string]: { type: K } & Payload<z.input<W['events'][K]>>;
}[keyof W['events'] & string];

/** `z.object({})` infers `Record<string, never>`, which would forbid the `type` field. */
type Payload<T> = string extends keyof T ? object : T;

export type WorkflowInput<W extends WorkflowDefinition> = z.input<W['input']>;

const RESERVED_EVENT_PREFIXES = ['xstate.', 'jetstate.'];

/**
 * Declares a durable workflow. Throws a `JetstateError` (`INVALID_DEFINITION`) that says the fix
 * for anything that cannot be made durable: a missing name or version, an inline actor
 * implementation, an actor `src` that `setup()` does not provide, an invoked or spawned actor that
 * is neither an `activity()` nor a `childWorkflow()` (`fromPromise`, `fromCallback`,
 * `fromObservable`, `fromEventObservable`, `fromTransition`, a plain machine), or a declared event
 * the machine never handles.
 *
 * When the machine declares its types, they are checked against the schemas at compile time: an
 * event type the machine declares but `events` does not (other than `xstate.*`, `jetstate.*` and
 * `internalEvents`), one `events` declares but the machine does not, a payload whose fields
 * differ, or an input schema whose output does not fit the machine's input type fails to compile,
 * with a message in the type of the argument (`{ error: 'event PAY: zod schema and machine types
 * differ; ...' }`). Write them once with `eventsOf(events)` and `inputOf(input)`.
 *
 * @example
 * ```ts
 * const approval = defineWorkflow({
 *   name: 'approval', version: 1,
 *   input: z.object({ requestId: z.string() }),
 *   events: { APPROVE: z.object({ by: z.string() }) },
 *   machine: setup({}).createMachine({ initial: 'pending', states: {
 *     pending: { on: { APPROVE: 'approved' } }, approved: { type: 'final' } } }),
 * });
 * ```
 */
export function defineWorkflow<
  TMachine extends AnyStateMachine,
  TInput extends SchemaLike,
  TEvents extends Record<string, SchemaLike>,
  const TInternal extends string = never,
>(
  given: WorkflowOptions<TMachine, TInput, TEvents, TInternal> & DefinitionCheck<TMachine, TInput, TEvents, TInternal>,
): WorkflowDefinition<TMachine, TInput, TEvents> {
  if (given === null || typeof given !== 'object') {
    fail(ErrorCode.InvalidDefinition, 'defineWorkflow needs an object { name, version, machine, input, events }');
  }
  const options = fromDefinition(given);
  const label = typeof options.name === 'string' ? `workflow '${options.name}'` : 'workflow';
  // A misspelt option would be dropped silently: 'secret' would store card numbers in the clear.
  checkKeys(label, '', options, WORKFLOW_OPTIONS);
  if (options.name === undefined) {
    fail(ErrorCode.InvalidDefinition, `${label}: name is missing; give it a stable name such as 'order'`);
  }
  checkName(`${label}: name`, options.name, ErrorCode.InvalidDefinition);
  if (!Number.isSafeInteger(options.version) || options.version < 1) {
    fail(
      ErrorCode.InvalidDefinition,
      `${label}: version must be a positive integer (got ${JSON.stringify(options.version)}); start at 1 and raise it when the machine changes`,
    );
  }
  const machine = options.machine as AnyStateMachine | undefined;
  if (!machine || typeof machine !== 'object' || !('root' in machine) || typeof machine.transition !== 'function') {
    fail(ErrorCode.InvalidDefinition, `${label}: machine must be an XState v5 machine made with setup({...}).createMachine({...})`);
  }
  if (!isSchema(options.input)) {
    fail(ErrorCode.InvalidDefinition, `${label}: input must be a zod schema, e.g. z.object({ orderId: z.string() })`);
  }
  if (!options.events || typeof options.events !== 'object') {
    fail(ErrorCode.InvalidDefinition, `${label}: events must map each event type to a zod schema, e.g. { PAY: z.object({ amount: z.number() }) }`);
  }
  for (const [type, schema] of Object.entries(options.events)) {
    if (RESERVED_EVENT_PREFIXES.some((p) => type.startsWith(p))) {
      fail(ErrorCode.InvalidDefinition, `${label}: event type '${type}' uses a reserved prefix (xstate., jetstate.); rename it`);
    }
    if (!isSchema(schema)) {
      fail(ErrorCode.InvalidDefinition, `${label}: events.${type} must be a zod schema of the payload, e.g. z.object({})`);
    }
  }
  checkInternalEvents(label, options.internalEvents, options.events);
  checkMachine(label, machine, Object.keys(options.events));
  const security = checkSecurity(label, options);
  return Object.freeze({
    name: options.name,
    version: options.version,
    machine: options.machine,
    input: options.input,
    events: options.events,
    security,
    kind: 'jetstate.workflow' as const,
  });
}

export function isWorkflowDefinition(value: unknown): value is WorkflowDefinition {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'jetstate.workflow';
}

/**
 * Options with a definition spread in (`defineWorkflow({ ...order, version: 2 })`): its secrets,
 * permissions, identity rule and limits carry over unless given again.
 */
function fromDefinition<T extends object>(given: T): T {
  const { kind, security, ...rest } = given as T & { kind?: unknown; security?: WorkflowSecurity };
  if (kind !== 'jetstate.workflow' || typeof security !== 'object' || security === null) return given;
  const carried = {
    ...(security.permissions !== undefined ? { permissions: security.permissions } : {}),
    ...(security.requireIdentity ? { requireIdentity: true } : {}),
    ...(security.secrets.length > 0 ? { secrets: security.secrets } : {}),
    ...(Object.keys(security.limits).length > 0 ? { limits: security.limits } : {}),
  };
  return { ...carried, ...rest } as T;
}

const WORKFLOW_OPTIONS = ['name', 'version', 'machine', 'input', 'events', 'internalEvents', 'permissions', 'requireIdentity', 'secrets', 'limits'];
const PERMISSION_KEYS = ['start', 'cancel', 'terminate', 'delete', 'events', 'default'];

const isRoleList = (r: unknown): boolean => Array.isArray(r) && r.every((x) => typeof x === 'string' && x.length > 0);

/** A list of roles (any of them), `{ anyOf, allOf }` with at least one non-empty list, or a function of the identity. */
const isRule = (r: unknown): boolean => {
  if (typeof r === 'function' || isRoleList(r)) return true;
  if (typeof r !== 'object' || r === null || Array.isArray(r)) return false;
  const { anyOf, allOf, ...other } = r as Record<string, unknown>;
  if (Object.keys(other).length > 0 || (anyOf === undefined && allOf === undefined)) return false;
  return [anyOf, allOf].every((l) => l === undefined || (isRoleList(l) && (l as unknown[]).length > 0));
};

function checkSecurity(label: string, options: WorkflowOptions<AnyStateMachine, SchemaLike, Record<string, SchemaLike>, string>): WorkflowSecurity {
  const p = options.permissions;
  if (p !== undefined) {
    if (typeof p !== 'object' || p === null || Array.isArray(p)) {
      fail(ErrorCode.InvalidDefinition, `${label}: permissions must be an object such as { start: ['clerk'], events: { APPROVE: ['manager'] } }`);
    }
    checkKeys(label, 'permissions.', p, PERMISSION_KEYS);
    if (p.events !== undefined && (typeof p.events !== 'object' || p.events === null || Array.isArray(p.events))) {
      fail(ErrorCode.InvalidDefinition, `${label}: permissions.events must map event types to rules, e.g. { APPROVE: ['manager'] }`);
    }
    const rules: Array<[string, unknown]> = [
      ['start', p.start],
      ['cancel', p.cancel],
      ['terminate', p.terminate],
      ['delete', p.delete],
      ['default', p.default],
      ...Object.entries(p.events ?? {}).map(([t, r]) => [`events.${t}`, r] as [string, unknown]),
    ];
    for (const [where, rule] of rules) {
      if (rule !== undefined && !isRule(rule)) {
        fail(
          ErrorCode.InvalidDefinition,
          `${label}: permissions.${where} must be a list of roles such as ['clerk'], { anyOf: [...], allOf: [...] } with at least one non-empty list of roles, or a function of the identity`,
        );
      }
    }
    for (const t of Object.keys(p.events ?? {})) {
      if (!(t in options.events))
        fail(
          ErrorCode.InvalidDefinition,
          `${label}: permissions.events.${t} names an event the workflow does not declare; declare it in events or remove the rule`,
        );
    }
  }
  if (options.requireIdentity !== undefined && typeof options.requireIdentity !== 'boolean') {
    fail(ErrorCode.InvalidDefinition, `${label}: requireIdentity must be true or false`);
  }
  const secrets = options.secrets ?? [];
  if (!Array.isArray(secrets) || secrets.some((s) => typeof s !== 'string' || s.length === 0)) {
    fail(ErrorCode.InvalidDefinition, `${label}: secrets must be a list of dotted paths such as 'card.number'`);
  }
  checkSecretPaths(secrets);
  const limits = options.limits ?? {};
  if (typeof limits !== 'object' || limits === null || Array.isArray(limits)) {
    fail(ErrorCode.InvalidDefinition, `${label}: limits must be an object such as { maxEventBytes: 65536 }`);
  }
  for (const [k, v] of Object.entries(limits)) {
    if (!['maxEventBytes', 'maxSnapshotBytes', 'maxEventsPerSecond'].includes(k) || typeof v !== 'number' || !(v > 0)) {
      fail(ErrorCode.InvalidDefinition, `${label}: limits.${k} must be a positive number (known limits: maxEventBytes, maxSnapshotBytes, maxEventsPerSecond)`);
    }
  }
  return Object.freeze({
    permissions: p,
    requireIdentity: options.requireIdentity === true,
    secrets: Object.freeze([...secrets]),
    limits: Object.freeze({ ...limits }),
  });
}

function checkInternalEvents(label: string, internal: unknown, events: Record<string, SchemaLike>): void {
  if (internal === undefined) return;
  if (!Array.isArray(internal) || internal.some((t) => typeof t !== 'string' || t.length === 0)) {
    fail(ErrorCode.InvalidDefinition, `${label}: internalEvents must be a list of event types the machine raises itself, e.g. ['CHECK']`);
  }
  for (const type of internal as string[]) {
    if (Object.hasOwn(events, type))
      fail(
        ErrorCode.InvalidDefinition,
        `${label}: event type '${type}' is both in events (senders may send it) and in internalEvents (only the machine raises it); keep it in one`,
      );
  }
}

function isSchema(value: unknown): value is SchemaLike {
  return typeof value === 'object' && value !== null && typeof (value as { safeParse?: unknown }).safeParse === 'function';
}

function checkMachine(label: string, machine: AnyStateMachine, declared: string[]): void {
  const handled = new Set<string>();
  const actors = (machine.implementations?.actors ?? {}) as Record<string, unknown>;
  for (const name of activitiesOf(machine).keys()) {
    if (!NAME_PATTERN.test(name)) {
      fail(
        ErrorCode.InvalidDefinition,
        `${label}: activity name '${name}' must use 1-128 of A-Z a-z 0-9 _ - (it becomes a NATS subject token); rename it in setup({ actors })`,
      );
    }
  }
  const visit = (node: AnyStateNode): void => {
    const on = (node.config.on ?? {}) as Record<string, unknown>;
    for (const type of Object.keys(on)) handled.add(type);
    const invokes = node.config.invoke === undefined ? [] : [node.config.invoke].flat();
    for (const inv of invokes as Array<{ src?: unknown; onSnapshot?: unknown }>) {
      if (typeof inv.src !== 'string') {
        fail(
          ErrorCode.InvalidDefinition,
          `${label}: state '${node.id}' invokes an inline actor implementation, which cannot be made durable; ` +
            `register it by name in setup({ actors: { myActor: ... } }) and use invoke: { src: 'myActor' }`,
        );
      }
      if (!(inv.src in actors)) {
        fail(ErrorCode.InvalidDefinition, `${label}: state '${node.id}' invokes '${inv.src}', which setup({ actors }) does not provide; add it there`);
      }
      checkDurable(label, machine, `state '${node.id}' invokes '${inv.src}'`, inv.src);
      if (inv.onSnapshot !== undefined) {
        fail(
          ErrorCode.InvalidDefinition,
          `${label}: state '${node.id}' invokes '${inv.src}' with onSnapshot, which the engine cannot deliver: a durable child's snapshots are not sent to its parent; ` +
            `have the child tell the parent what it needs with sendParent(...) and handle that event`,
        );
      }
    }
    for (const child of Object.values(node.states ?? {})) visit(child as AnyStateNode);
  };
  visit(machine.root);
  checkSpawns(label, machine, actors);
  const matches = (type: string): boolean => {
    if (handled.has(type) || handled.has('*')) return true;
    for (const h of handled) if (h.endsWith('.*') && type.startsWith(h.slice(0, -1))) return true;
    return false;
  };
  const unused = declared.filter((t) => !matches(t));
  if (unused.length > 0) {
    fail(
      ErrorCode.InvalidDefinition,
      `${label}: declared event${unused.length > 1 ? 's' : ''} ${unused.map((u) => `'${u}'`).join(', ')} ` +
        `${unused.length > 1 ? 'are' : 'is'} handled by no state of the machine; add an 'on' transition for ` +
        `${unused.length > 1 ? 'them' : 'it'} or remove ${unused.length > 1 ? 'them' : 'it'} from events`,
    );
  }
}

/** Refuses an actor the engine cannot make durable: only activity() and childWorkflow() are. */
function checkDurable(label: string, machine: AnyStateMachine, what: string, src: string): void {
  const kind = actorKind(machine, src);
  if (kind === 'activity' || kind === 'childWorkflow') return;
  fail(ErrorCode.InvalidDefinition, `${label}: ${what}, which cannot be made durable: ${whyNotDurable(kind)}`);
}

/**
 * `spawnChild` actions the configuration shows (named ones included): the spawned actor must be
 * durable too. `spawn` inside `assign`, and spawns chosen at run time (`enqueueActions`), are not
 * visible here: the step fails the instance when one happens (see step/plan.ts).
 */
function checkSpawns(label: string, machine: AnyStateMachine, actors: Record<string, unknown>): void {
  for (const { where, action } of actionsOf(machine)) {
    if (builtinType(action) !== 'xstate.spawnChild') continue;
    const src = (action as { src?: unknown }).src;
    if (typeof src !== 'string') {
      fail(
        ErrorCode.InvalidDefinition,
        `${label}: ${where} spawns an inline actor implementation (spawnChild), which cannot be made durable; ` +
          `register it by name in setup({ actors: { myActor: activity(...) } }) and use spawnChild('myActor')`,
      );
    }
    if (!(src in actors)) fail(ErrorCode.InvalidDefinition, `${label}: ${where} spawns '${src}', which setup({ actors }) does not provide; add it there`);
    checkDurable(label, machine, `${where} spawns '${src}' (spawnChild)`, src);
    const { id, syncSnapshot } = action as { id?: unknown; syncSnapshot?: unknown };
    if (id === undefined) {
      fail(
        ErrorCode.InvalidDefinition,
        `${label}: ${where} spawns '${src}' without an id, which cannot be made durable (XState would name it by a session id, not the same when the step is computed again); ` +
          `give it one: spawnChild('${src}', { id: '${src}-1' }) or an id function of the context`,
      );
    }
    if (syncSnapshot === true) {
      fail(
        ErrorCode.InvalidDefinition,
        `${label}: ${where} spawns '${src}' with syncSnapshot, which the engine cannot deliver: a durable child's snapshots are not sent to its parent; ` +
          `have the child tell the parent what it needs with sendParent(...)`,
      );
    }
  }
}
