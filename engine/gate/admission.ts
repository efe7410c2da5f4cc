/**
 * Admission of a start or an event: who sent it (a verified token) and whether the workflow's
 * `permissions` let them. The same check runs in the client, so `send()` and `start()` reject at
 * once with a clear error, and in the engine, which is the authority: it also sees what a client
 * that bypasses `send()` publishes straight to the stream subjects.
 *
 * Rejection reasons start with a bracketed category (`[identity.expired]`, `[permission.denied]`,
 * `[limit.event_size]`...), which the history records and the rejection metric counts by.
 */
import type { WorkflowDefinition } from '../define/definition.js';
import { ErrorCode, JetstateError } from '../errors.js';
import type { Identity, IdentityVerifier } from '../security/identity.js';
import type { IdentitySummary } from '../protocol/identity.js';
import { IdentityError } from '../security/identity-error.js';
import { permits, type PermissionRule } from '../security/roles.js';

export type Admission = { ok: true; identity: Identity | undefined } | { ok: false; code: ErrorCode; reason: string; retryable: boolean };

export type Action = { kind: 'start' | 'cancel' | 'terminate' | 'delete' } | { kind: 'event'; type: string };

export const summarize = (i: Identity): IdentitySummary => ({ method: i.method, subject: i.subject, issuer: i.issuer, roles: [...i.roles] });

function ruleFor(def: WorkflowDefinition, action: Action): PermissionRule | undefined {
  const p = def.security.permissions;
  if (!p) return undefined;
  if (action.kind === 'start') return p.start;
  if (action.kind === 'event') return (p.events as Record<string, PermissionRule | undefined> | undefined)?.[action.type] ?? p.default;
  return p[action.kind] ?? p.default;
}

const what = (def: WorkflowDefinition, action: Action): string =>
  action.kind === 'event'
    ? `send '${action.type}' to workflow '${def.name}'`
    : `${action.kind} ${action.kind === 'start' ? 'workflow' : 'instances of workflow'} '${def.name}'`;

function describeRule(rule: PermissionRule): string {
  if (typeof rule === 'function') return 'to pass its permission predicate';
  if (Array.isArray(rule)) return `one of the roles ${rule.map((r) => `'${r}'`).join(', ')}`;
  const { anyOf, allOf } = rule as { anyOf?: readonly string[]; allOf?: readonly string[] };
  return [anyOf && `one of ${anyOf.map((r) => `'${r}'`).join(', ')}`, allOf && `all of ${allOf.map((r) => `'${r}'`).join(', ')}`].filter(Boolean).join(' and ');
}

/**
 * Admits a start or an event. On the client side (`side: 'client'`), a token it cannot verify (no
 * `identity` options) is passed on for the engine to judge; the engine always decides. The engine
 * gives `atMs`, the time the stream accepted the event: the token is judged as of then, so an
 * event that waited in a backlog while its token expired is still the sender's.
 */
export function admit(
  verifier: IdentityVerifier | undefined,
  def: WorkflowDefinition,
  action: Action,
  token: string | undefined,
  side: 'client' | 'engine' = 'engine',
  atMs?: number,
): Admission | Promise<Admission> {
  // The common case, answered without a promise: an anonymous event to a workflow without rules.
  if (admitsAnonymously(def, token)) return ANONYMOUS;
  return judge(verifier, def, action, token, side, atMs);
}

/** True when no token came and the workflow has no rules: admitted, with no identity, and nothing to judge. */
export function admitsAnonymously(def: WorkflowDefinition, token: string | undefined): boolean {
  return (token === undefined || token === '') && !def.security.requireIdentity && def.security.permissions === undefined;
}

const ANONYMOUS: Admission = Object.freeze({ ok: true, identity: undefined }) as Admission;

async function judge(
  verifier: IdentityVerifier | undefined,
  def: WorkflowDefinition,
  action: Action,
  token: string | undefined,
  side: 'client' | 'engine',
  atMs: number | undefined,
): Promise<Admission> {
  const rule = ruleFor(def, action);
  const needsIdentity = def.security.requireIdentity || rule !== undefined;
  const deny = (code: ErrorCode, reason: string, retryable = false): Admission => ({ ok: false, code, reason, retryable });
  let identity: Identity | undefined;
  if (token !== undefined && token !== '') {
    if (!verifier && side === 'client') return { ok: true, identity: undefined };
    if (!verifier) {
      return deny(
        ErrorCode.InvalidOptions,
        `[identity.not_configured] a token was given to ${what(def, action)}, but no identity options are configured to verify it; configure 'identity' (OIDC issuers or AWS IAM) in createClient and createEngine`,
      );
    }
    try {
      identity = await verifier.verify(token, atMs === undefined ? undefined : { atMs });
    } catch (e) {
      if (e instanceof IdentityError)
        return deny(ErrorCode.Unauthenticated, `[${e.reason}] ${e.message.replace(`${e.reason}: `, '')}; cannot ${what(def, action)}`, e.retryable);
      return deny(ErrorCode.Unauthenticated, `[identity.internal] ${(e as Error).message}`, true);
    }
  } else if (needsIdentity) {
    return deny(ErrorCode.Unauthenticated, `[identity.missing] ${what(def, action)} needs a verified identity; pass a token: { token }`);
  }
  if (rule !== undefined && !permits(rule, identity)) {
    const who = identity ? `'${identity.subject}' (roles: ${identity.roles.length > 0 ? identity.roles.join(', ') : 'none'})` : 'an anonymous sender';
    return deny(ErrorCode.PermissionDenied, `[permission.denied] ${who} may not ${what(def, action)}; it needs ${describeRule(rule)}`);
  }
  return { ok: true, identity };
}

/** Throws the admission's error (for the client side). */
export function check(admission: Admission, suffix: string): Identity | undefined {
  if (admission.ok) return admission.identity;
  throw new JetstateError(admission.code, `${admission.reason}; ${suffix}`);
}

/** The effective limits of a workflow: its own over the runtime's (computed once per workflow and runtime). */
export function limitsOf(defaults: DefaultLimits, def: WorkflowDefinition): Limits {
  let byDef = limitsCache.get(defaults);
  if (!byDef) limitsCache.set(defaults, (byDef = new WeakMap()));
  let l = byDef.get(def);
  if (!l) {
    const own = def.security.limits;
    l = Object.freeze({
      maxEventBytes: own.maxEventBytes ?? defaults.maxEventBytes,
      maxSnapshotBytes: own.maxSnapshotBytes ?? defaults.maxSnapshotBytes,
      maxEventsPerSecond: own.maxEventsPerSecond ?? defaults.maxEventsPerSecond,
    });
    byDef.set(def, l);
  }
  return l;
}

/** The limits every workflow gets unless it sets its own (the `limits` option). */
export interface DefaultLimits {
  readonly maxEventBytes: number;
  readonly maxSnapshotBytes: number;
  readonly maxEventsPerSecond?: number | undefined;
}

export interface Limits {
  readonly maxEventBytes: number;
  readonly maxSnapshotBytes: number;
  readonly maxEventsPerSecond: number | undefined;
}

const limitsCache = new WeakMap<object, WeakMap<WorkflowDefinition, Limits>>();
