import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { fromTemporaryCredentials } from '@aws-sdk/credential-providers';
import { startLocalSts, type LocalSts } from '../../adapters/local/aws/sts.js';
import { presignRequest, replay, signRequest, xmlField } from './signing.js';

const ROLE = 'arn:aws:iam::123456789012:role/deployer';
const ROOT = { accessKeyId: 'AKIAROOTEXAMPLE00001', secretAccessKey: 'root-secret', arn: 'arn:aws:iam::123456789012:user/ci' };
const CALLER_IDENTITY = 'Action=GetCallerIdentity&Version=2011-06-15';
const FORM = { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' };

describe('loopback STS', () => {
  let sts: LocalSts;
  before(async () => {
    sts = await startLocalSts({ rootCredentials: [ROOT], assumedDurationSeconds: 2 });
    sts.addRole(ROLE, { externalId: 'ext-123' });
  });
  after(async () => {
    await sts?.close();
  });

  it('issues short-lived credentials to fromTemporaryCredentials, which refreshes them', async () => {
    const provider = fromTemporaryCredentials({
      masterCredentials: { accessKeyId: ROOT.accessKeyId, secretAccessKey: ROOT.secretAccessKey },
      params: { RoleArn: ROLE, RoleSessionName: 'test-session', ExternalId: 'ext-123' },
      clientConfig: { endpoint: sts.endpoint, region: 'us-east-1' },
    });
    const first = await provider();
    assert.match(first.accessKeyId, /^ASIA[A-Z2-7]{16}$/);
    assert.ok(first.sessionToken);
    assert.ok(first.expiration && first.expiration.getTime() - Date.now() <= 2_000);
    const issued = sts.issued.find((c) => c.accessKeyId === first.accessKeyId);
    assert.equal(issued?.roleArn, ROLE);
    assert.equal(issued?.externalId, 'ext-123');
    assert.equal(issued?.arn, 'arn:aws:sts::123456789012:assumed-role/deployer/test-session');

    // The issued credentials sign a GetCallerIdentity that names the assumed role.
    const who = await replay(await signRequest(sts.endpoint, first, { service: 'sts', region: 'us-east-1', headers: FORM, body: CALLER_IDENTITY }));
    assert.equal(who.status, 200, who.text);
    assert.equal(xmlField(who.text, 'Arn'), issued!.arn);
    assert.equal(xmlField(who.text, 'UserId'), issued!.userId);
    assert.equal(xmlField(who.text, 'Account'), '123456789012');

    // Once they expire they are refused, and the provider gets new ones.
    await new Promise((r) => setTimeout(r, Math.max(0, first.expiration!.getTime() - Date.now()) + 50));
    const expired = await replay(await signRequest(sts.endpoint, first, { service: 'sts', region: 'us-east-1', headers: FORM, body: CALLER_IDENTITY }));
    assert.equal(expired.status, 400);
    assert.equal(xmlField(expired.text, 'Code'), 'ExpiredToken');
    const second = await provider();
    assert.notEqual(second.accessKeyId, first.accessKeyId);
    assert.ok(second.expiration! > first.expiration!);
    assert.ok(sts.requests.some((r) => r.action === 'AssumeRole' && r.accessKeyId === ROOT.accessKeyId));
  });

  it('refuses a role it does not know, a wrong external id, an unknown key and a bad signature', async () => {
    const assume = (params: Record<string, string>, creds = ROOT) =>
      fromTemporaryCredentials({
        masterCredentials: creds,
        params: { RoleArn: ROLE, RoleSessionName: 's1', ...params },
        clientConfig: { endpoint: sts.endpoint, region: 'us-east-1', maxAttempts: 1 },
      })();
    await assert.rejects(
      assume({ RoleArn: 'arn:aws:iam::123456789012:role/other' }),
      (e: Error) => e.name === 'AccessDenied' && /not authorized to perform: sts:AssumeRole/.test(e.message),
    );
    await assert.rejects(assume({ ExternalId: 'wrong-1' }), { name: 'AccessDenied' });
    await assert.rejects(assume({}), { name: 'AccessDenied' });
    await assert.rejects(assume({ ExternalId: 'ext-123' }, { ...ROOT, accessKeyId: 'AKIANOBODY0000000000' }), { name: 'InvalidClientTokenId' });
    await assert.rejects(assume({ ExternalId: 'ext-123' }, { ...ROOT, secretAccessKey: 'wrong' }), { name: 'SignatureDoesNotMatch' });

    const old = await replay(
      await signRequest(sts.endpoint, ROOT, {
        service: 'sts',
        region: 'us-east-1',
        headers: FORM,
        body: CALLER_IDENTITY,
        signingDate: new Date(Date.now() - 16 * 60_000),
      }),
    );
    assert.equal(old.status, 403);
    assert.equal(xmlField(old.text, 'Code'), 'SignatureDoesNotMatch');
    assert.match(xmlField(old.text, 'Message')!, /Signature expired/);
    const unsigned = await fetch(sts.endpoint, { method: 'POST', headers: FORM, body: CALLER_IDENTITY });
    assert.equal(unsigned.status, 403);
    assert.match(
      await unsigned.text(),
      /<ErrorResponse xmlns="https:\/\/sts.amazonaws.com\/doc\/2011-06-15\/"><Error><Type>Sender<\/Type><Code>MissingAuthenticationToken<\/Code>/,
    );
  });

  it('answers a header-signed GetCallerIdentity replayed by a third party, audience header included, and refuses a tampered one', async () => {
    const signed = await signRequest(sts.endpoint, ROOT, {
      service: 'sts',
      region: 'us-east-1',
      headers: { ...FORM, 'x-jetstate-audience': 'jetstate-prod' },
      body: CALLER_IDENTITY,
    });
    assert.match(signed.headers['authorization']!, /SignedHeaders=[^,]*x-jetstate-audience/);
    const ok = await replay(signed);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(xmlField(ok.text, 'Arn'), ROOT.arn);
    assert.match(ok.text, /^<GetCallerIdentityResponse xmlns="https:\/\/sts.amazonaws.com\/doc\/2011-06-15\/"><GetCallerIdentityResult>/);

    const otherAudience = await replay({ ...signed, headers: { ...signed.headers, 'x-jetstate-audience': 'jetstate-dev' } });
    assert.equal(otherAudience.status, 403);
    assert.equal(xmlField(otherAudience.text, 'Code'), 'SignatureDoesNotMatch');
    const otherBody = await replay({ ...signed, body: 'Action=AssumeRole&Version=2011-06-15&RoleArn=x&RoleSessionName=yy' });
    assert.equal(xmlField(otherBody.text, 'Code'), 'SignatureDoesNotMatch');
  });

  it('answers a presigned GetCallerIdentity replayed by a third party, and refuses it tampered or expired', async () => {
    const presigned = await presignRequest(sts.endpoint, ROOT, {
      service: 'sts',
      region: 'us-east-1',
      headers: { 'x-jetstate-audience': 'jetstate-prod' },
      query: { Action: 'GetCallerIdentity', Version: '2011-06-15' },
      expiresIn: 60,
    });
    assert.match(presigned.url, /X-Amz-Signature=[0-9a-f]{64}/);
    assert.match(presigned.url, /X-Amz-SignedHeaders=host%3Bx-jetstate-audience/);
    const ok = await replay(presigned);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(xmlField(ok.text, 'Arn'), ROOT.arn);

    const tampered = await replay({ ...presigned, url: presigned.url.replace('Action=GetCallerIdentity', 'Action=AssumeRole') });
    assert.equal(tampered.status, 403);
    assert.equal(xmlField(tampered.text, 'Code'), 'SignatureDoesNotMatch');
    const noAudience = await replay({ ...presigned, headers: {} });
    assert.equal(xmlField(noAudience.text, 'Code'), 'SignatureDoesNotMatch');
    const flipped = presigned.url.replace(/X-Amz-Signature=([0-9a-f])/, (_, c: string) => `X-Amz-Signature=${c === '0' ? '1' : '0'}`);
    assert.equal(xmlField((await replay({ ...presigned, url: flipped })).text, 'Code'), 'SignatureDoesNotMatch');

    const shortLived = await presignRequest(sts.endpoint, ROOT, {
      service: 'sts',
      region: 'us-east-1',
      query: { Action: 'GetCallerIdentity', Version: '2011-06-15' },
      expiresIn: 1,
    });
    await new Promise((r) => setTimeout(r, 2_100));
    const late = await replay(shortLived);
    assert.equal(late.status, 403);
    assert.match(xmlField(late.text, 'Message')!, /expired/);
  });
});
