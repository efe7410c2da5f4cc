/**
 * Roles: what a verified identity may do, derived from its claims (OIDC groups and roles), its
 * AWS principal ARN, or its subject. Identity providers put groups in different places (Cognito
 * `cognito:groups`, Keycloak `realm_access.roles`, Okta and Auth0 a custom claim), so the
 * mapping names the claim by path instead of assuming one shape.
 */
import { z } from 'zod';
import type { Identity } from './identity-types.js';

const ROLE = z.string().min(1).max(256);

export const RoleMappingSchema = z
  .object({
    /**
     * Claims that carry groups or roles. `claim` is a dotted path (`realm_access.roles`); a key that
     * itself contains dots or colons (`https://example.com/roles`, `cognito:groups`) is found whole.
     * With `values`, each claim value maps to the roles listed (unlisted values give none);
     * without, each value becomes a role, after `prefix`.
     */
    claims: z
      .array(
        z
          .object({
            claim: z.string().min(1).max(512),
            values: z.record(z.string(), z.array(ROLE)).optional(),
            prefix: z.string().max(128).optional(),
          })
          .strict(),
      )
      .optional(),
    /**
     * AWS principals by ARN glob (`*` any run of characters, `?` one). An assumed role matches by
     * its session ARN (`arn:aws:sts::<acct>:assumed-role/<role>/<session>`) or by its role ARN
     * (`arn:aws:iam::<acct>:role/<role>`).
     */
    principals: z.array(z.object({ match: z.string().min(1).max(2048), roles: z.array(ROLE) }).strict()).optional(),
    /** Roles of one subject (OIDC `sub` or AWS ARN), matched exactly. */
    subjects: z.record(z.string(), z.array(ROLE)).optional(),
  })
  .strict();

export type RoleMapping = z.input<typeof RoleMappingSchema>;

/**
 * The value at a dotted path of a claims object. At each level the longest run of path segments
 * that is an own key wins, so `https://example.com/roles` and `resource_access.my-app.roles` both
 * resolve.
 */
export function claimAt(claims: unknown, path: string): unknown {
  return walk(claims, path.split('.'));
}

function walk(value: unknown, parts: string[]): unknown {
  if (parts.length === 0) return value;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  for (let i = parts.length; i >= 1; i--) {
    const key = parts.slice(0, i).join('.');
    if (!Object.hasOwn(value, key)) continue;
    const found = walk((value as Record<string, unknown>)[key], parts.slice(i));
    if (found !== undefined) return found;
  }
  return undefined;
}

/** A claim's values as strings: a string is one value, an array gives its strings, anything else none. */
function valuesOf(claim: unknown): string[] {
  if (typeof claim === 'string') return [claim];
  if (Array.isArray(claim)) return claim.filter((v): v is string => typeof v === 'string');
  return [];
}

const globCache = new Map<string, RegExp>();

/** `*` matches any run of characters (slashes too), `?` one character; everything else literally. */
export function arnGlob(pattern: string): RegExp {
  let re = globCache.get(pattern);
  if (!re) {
    const body = pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.');
    re = new RegExp(`^${body}$`, 's');
    if (globCache.size > 1_000) globCache.clear();
    globCache.set(pattern, re);
  }
  return re;
}

/**
 * The roles of a verified identity under a mapping, without duplicates, in mapping order.
 *
 * @example
 * ```ts
 * rolesFor(identity, {
 *   claims: [{ claim: 'realm_access.roles', prefix: 'role:' }],
 *   principals: [{ match: 'arn:aws:sts::123456789012:assumed-role/deployer/*', roles: ['role:deploy'] }],
 *   subjects: { 'auth0|42': ['role:admin'] },
 * }); // ['role:billing', ...]
 * ```
 */
export function rolesFor(identity: Omit<Identity, 'roles'>, mapping: RoleMapping | undefined): string[] {
  if (!mapping) return [];
  const out = new Set<string>();
  for (const rule of mapping.claims ?? []) {
    for (const value of valuesOf(claimAt(identity.claims, rule.claim))) {
      if (rule.values) {
        if (Object.hasOwn(rule.values, value)) for (const role of rule.values[value] ?? []) out.add(role);
      } else {
        out.add(`${rule.prefix ?? ''}${value}`);
      }
    }
  }
  if (identity.method === 'aws-iam') {
    const roleArn = typeof identity.claims.roleArn === 'string' ? identity.claims.roleArn : undefined;
    for (const rule of mapping.principals ?? []) {
      const re = arnGlob(rule.match);
      if (re.test(identity.subject) || (roleArn !== undefined && re.test(roleArn))) for (const role of rule.roles) out.add(role);
    }
  }
  if (mapping.subjects && Object.hasOwn(mapping.subjects, identity.subject)) {
    for (const role of mapping.subjects[identity.subject] ?? []) out.add(role);
  }
  return [...out];
}

/**
 * Who may do something: any of a list of roles (`['billing', 'admin']`, or the same as
 * `{ anyOf }`), all of a list (`{ allOf }`), or a predicate on the identity.
 */
export type PermissionRule = readonly string[] | { anyOf?: readonly string[]; allOf?: readonly string[] } | ((identity: Identity) => boolean);

/**
 * Whether an identity satisfies a rule. No identity, an empty role list, or a predicate that
 * throws all deny: a rule never fails open.
 *
 * @example
 * ```ts
 * permits(['billing'], identity);                          // has role 'billing'
 * permits({ allOf: ['billing', 'eu'] }, identity);         // has both
 * permits((id) => id.claims.email_verified === true, identity);
 * ```
 */
export function permits(rule: PermissionRule, identity: Identity | null | undefined): boolean {
  if (!identity) return false;
  if (typeof rule === 'function') {
    try {
      return rule(identity) === true;
    } catch {
      return false;
    }
  }
  const has = (role: string): boolean => identity.roles.includes(role);
  if (Array.isArray(rule)) return (rule as readonly string[]).some(has);
  const { anyOf, allOf } = rule as { anyOf?: readonly string[]; allOf?: readonly string[] };
  if (anyOf === undefined && allOf === undefined) return false;
  if (anyOf !== undefined && !anyOf.some(has)) return false;
  if (allOf !== undefined && (allOf.length === 0 || !allOf.every(has))) return false;
  return true;
}
