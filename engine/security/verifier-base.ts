/**
 * What every identity verifier shares, around its method-specific check: the size limit before
 * any parsing, a bounded LRU of verified identities keyed by token hash (the hot path of an
 * engine that sees the same token on every event of a session), one check in flight per token,
 * role mapping, and the rule that only an {@link IdentityError} ever leaves `verify`.
 */
import { createHash } from 'node:crypto';

import { IdentityError, IdentityReason, reject } from './identity-error.js';
import type { Identity, IdentityVerifier } from './identity-types.js';
import { rolesFor, type RoleMapping } from './roles.js';
import type { Clock } from '../clock.js';

/** What a method-specific check returns: the identity without roles, and how long it may be reused. */
export interface CheckedToken {
  identity: Omit<Identity, 'roles'>;
  /** Epoch ms after which the result must be checked again (never after the token expires). */
  cacheUntilMs: number;
}

/**
 * A method-specific check; `audience` is the one this call requires (already resolved), `nowMs`
 * the time to judge expiry and not-before at.
 */
export type TokenCheck = (token: string, audience: string | undefined, nowMs: number) => Promise<CheckedToken>;

interface Entry {
  identity: Identity;
  untilMs: number;
}

/** A bounded LRU of verified identities; shared by the verifiers of one engine. */
export class IdentityCache {
  private readonly entries = new Map<string, Entry>();
  constructor(readonly maxEntries: number) {}

  get(key: string, nowMs: number): Identity | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    if (entry.untilMs <= nowMs) return undefined;
    this.entries.set(key, entry); // most recently used goes last
    return entry.identity;
  }

  set(key: string, identity: Identity, untilMs: number): void {
    if (this.maxEntries === 0) return;
    this.entries.delete(key);
    while (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
    this.entries.set(key, { identity, untilMs });
  }

  get size(): number {
    return this.entries.size;
  }
}

export interface VerifierBaseOptions {
  roles?: RoleMapping | undefined;
  cache: IdentityCache;
  clock: Clock;
  maxTokenBytes: number;
  /** Separates the cache entries of verifiers that share one cache. */
  cacheScope: string;
  /** The audience a call requires when its context names none. */
  defaultAudience?: string | undefined;
}

/** Wraps a method-specific check into an {@link IdentityVerifier}. */
export function verifierFrom(check: TokenCheck, options: VerifierBaseOptions): IdentityVerifier {
  const inFlight = new Map<string, Promise<Identity>>();
  return {
    async verify(token, context) {
      if (typeof token !== 'string' || token.length === 0) reject(IdentityReason.Malformed, 'the token is empty; send the token string itself');
      if (token.length > options.maxTokenBytes) {
        reject(IdentityReason.TooLarge, `the token has ${token.length} characters, more than maxTokenBytes (${options.maxTokenBytes})`);
      }
      const audience = context?.audience ?? options.defaultAudience;
      const nowMs = context?.atMs ?? options.clock.now();
      const key = `${options.cacheScope}\n${audience ?? ''}\n${createHash('sha256').update(token).digest('base64url')}`;
      const cached = options.cache.get(key, nowMs);
      if (cached) return cached;
      // Checks judged at different times may disagree about expiry: share only those of the same time.
      const flightKey = context?.atMs === undefined ? key : `${key}\n${context.atMs}`;
      const pending = inFlight.get(flightKey);
      if (pending) return pending;
      const run = (async () => {
        try {
          const { identity, cacheUntilMs } = await check(token, audience, nowMs);
          const full = deepFreeze({ ...identity, roles: rolesFor(identity, options.roles) });
          const untilMs = Math.min(cacheUntilMs, full.expiresAt ?? Number.POSITIVE_INFINITY);
          if (untilMs > options.clock.now()) options.cache.set(key, full, untilMs);
          return full;
        } catch (e) {
          throw asIdentityError(e);
        } finally {
          inFlight.delete(flightKey);
        }
      })();
      inFlight.set(flightKey, run);
      return run;
    },
  };
}

function asIdentityError(e: unknown): IdentityError {
  if (e instanceof IdentityError) return e;
  return new IdentityError(IdentityReason.Internal, `the verifier failed unexpectedly: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}

const UNSAFE_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
const MAX_DEPTH = 6;

/**
 * A copy of token claims that guards can read safely: JSON values only, no prototype keys, depth
 * limited, frozen. Claims are attacker-shaped until the signature is checked, and guards run user
 * code, so they get plain data and nothing else.
 */
export function safeClaims(claims: Record<string, unknown>): Record<string, unknown> {
  return (copy(claims, 0) ?? {}) as Record<string, unknown>;
}

function copy(value: unknown, depth: number): unknown {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (depth >= MAX_DEPTH || typeof value !== 'object') return undefined;
  if (Array.isArray(value)) return value.map((v) => copy(v, depth + 1)).filter((v) => v !== undefined);
  const entries: Array<[string, unknown]> = [];
  for (const [k, v] of Object.entries(value)) {
    if (UNSAFE_KEYS.has(k)) continue;
    const c = copy(v, depth + 1);
    if (c !== undefined) entries.push([k, c]);
  }
  return Object.fromEntries(entries);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
