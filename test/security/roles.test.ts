import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Identity } from '../../engine/security/identity.js';
import { arnGlob, claimAt, permits, rolesFor } from '../../engine/security/roles.js';

const oidc = (claims: Record<string, unknown>, subject = 'u-1'): Omit<Identity, 'roles'> => ({ method: 'oidc', subject, issuer: 'https://idp', claims });
const aws = (arn: string, roleArn?: string): Omit<Identity, 'roles'> => ({
  method: 'aws-iam',
  subject: arn,
  issuer: 'aws-iam',
  claims: roleArn ? { arn, roleArn } : { arn },
});

describe('claimAt', () => {
  it('walks dotted paths and finds keys that contain dots or colons', () => {
    const claims = {
      realm_access: { roles: ['a'] },
      resource_access: { 'my.app': { roles: ['b'] } },
      'cognito:groups': ['c'],
      'https://example.com/roles': ['d'],
      'https://example.com/ns': { roles: ['e'] },
    };
    assert.deepEqual(claimAt(claims, 'realm_access.roles'), ['a']);
    assert.deepEqual(claimAt(claims, 'resource_access.my.app.roles'), ['b']);
    assert.deepEqual(claimAt(claims, 'cognito:groups'), ['c']);
    assert.deepEqual(claimAt(claims, 'https://example.com/roles'), ['d']);
    assert.deepEqual(claimAt(claims, 'https://example.com/ns.roles'), ['e']);
    assert.equal(claimAt(claims, 'realm_access.missing'), undefined);
    assert.equal(claimAt(claims, 'realm_access.roles.0'), undefined, 'arrays are values, not objects to walk');
    assert.equal(claimAt(claims, 'toString'), undefined, 'inherited keys are not claims');
  });
});

describe('rolesFor', () => {
  it('maps claim values, with prefixes and value tables, without duplicates', () => {
    const roles = rolesFor(oidc({ groups: ['billing', 'ops', 42], scope: 'admin' }), {
      claims: [
        { claim: 'groups', prefix: 'role:' },
        { claim: 'groups', values: { billing: ['role:billing', 'role:reader'], nope: ['role:x'] } },
        { claim: 'scope', values: { admin: ['role:admin'] } },
        { claim: 'absent' },
      ],
    });
    assert.deepEqual(roles, ['role:billing', 'role:ops', 'role:reader', 'role:admin']);
  });
  it("ignores a value table's inherited keys", () => {
    assert.deepEqual(rolesFor(oidc({ g: ['constructor', 'toString'] }), { claims: [{ claim: 'g', values: {} }] }), []);
  });
  it('matches AWS principals by ARN glob, by session ARN or role ARN', () => {
    const mapping = {
      principals: [
        { match: 'arn:aws:sts::123456789012:assumed-role/deployer/*', roles: ['deploy'] },
        { match: 'arn:aws:iam::123456789012:role/reader', roles: ['read'] },
        { match: 'arn:aws:iam::123456789012:user/ci-?', roles: ['ci'] },
      ],
    };
    assert.deepEqual(rolesFor(aws('arn:aws:sts::123456789012:assumed-role/deployer/alice', 'arn:aws:iam::123456789012:role/deployer'), mapping), ['deploy']);
    assert.deepEqual(rolesFor(aws('arn:aws:sts::123456789012:assumed-role/reader/bob', 'arn:aws:iam::123456789012:role/reader'), mapping), ['read']);
    assert.deepEqual(rolesFor(aws('arn:aws:iam::123456789012:user/ci-1'), mapping), ['ci']);
    assert.deepEqual(rolesFor(aws('arn:aws:iam::123456789012:user/ci-12'), mapping), []);
    assert.deepEqual(rolesFor(aws('arn:aws:sts::999999999999:assumed-role/deployer/alice'), mapping), []);
    // An OIDC subject that looks like an ARN is not an AWS principal.
    assert.deepEqual(rolesFor(oidc({}, 'arn:aws:iam::123456789012:user/ci-1'), mapping), []);
  });
  it('maps subjects exactly', () => {
    assert.deepEqual(rolesFor(oidc({}, 'auth0|42'), { subjects: { 'auth0|42': ['owner'] } }), ['owner']);
    assert.deepEqual(rolesFor(oidc({}, 'auth0|4'), { subjects: { 'auth0|42': ['owner'] } }), []);
    assert.deepEqual(rolesFor(oidc({}, '__proto__'), { subjects: {} }), []);
  });
  it('gives no roles without a mapping', () => {
    assert.deepEqual(rolesFor(oidc({ groups: ['a'] }), undefined), []);
  });
});

describe('arnGlob', () => {
  it('treats only * and ? as wildcards', () => {
    assert.ok(arnGlob('arn:aws:iam::1:role/a.b').test('arn:aws:iam::1:role/a.b'));
    assert.ok(!arnGlob('arn:aws:iam::1:role/a.b').test('arn:aws:iam::1:role/aXb'));
    assert.ok(arnGlob('arn:aws:iam::1:role/(x)+*').test('arn:aws:iam::1:role/(x)+/y/z'));
    assert.ok(!arnGlob('arn:aws:iam::1:*').test('arn:aws:iam::2:role/x'));
  });
});

describe('permits', () => {
  const who: Identity = { method: 'oidc', subject: 's', issuer: 'i', roles: ['billing', 'eu'], claims: { email_verified: true } };
  it('allows any of a list of roles', () => {
    assert.equal(permits(['admin', 'billing'], who), true);
    assert.equal(permits({ anyOf: ['admin', 'billing'] }, who), true);
    assert.equal(permits(['admin'], who), false);
    assert.equal(permits([], who), false);
  });
  it('allows all of a list of roles', () => {
    assert.equal(permits({ allOf: ['billing', 'eu'] }, who), true);
    assert.equal(permits({ allOf: ['billing', 'us'] }, who), false);
    assert.equal(permits({ allOf: [] }, who), false);
    assert.equal(permits({ anyOf: ['billing'], allOf: ['eu'] }, who), true);
    assert.equal(permits({}, who), false);
  });
  it('asks a predicate, and denies when it throws or returns a non-boolean', () => {
    assert.equal(
      permits((id) => id.claims.email_verified === true, who),
      true,
    );
    assert.equal(
      permits(() => false, who),
      false,
    );
    assert.equal(
      permits(() => {
        throw new Error('bug');
      }, who),
      false,
    );
    assert.equal(permits((() => 'yes') as never, who), false);
  });
  it('denies without an identity', () => {
    assert.equal(permits(['billing'], null), false);
    assert.equal(
      permits(() => true, undefined),
      false,
    );
  });
});
