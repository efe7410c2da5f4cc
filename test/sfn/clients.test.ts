/** The client pool: one client per target, assumed roles whose short-lived credentials rotate, clear denials, throttling. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ListStateMachinesCommand } from '@aws-sdk/client-sfn';
import { ErrorCode, JetstateError } from '../../engine/errors.js';
import { createStepFunctionsClients, resolveStepFunctionsClient } from '../../adapters/step-functions/clients.js';
import { ACCOUNT, startSfnWorld, type SfnWorld } from './world.js';

const ROLE = `arn:aws:iam::${ACCOUNT}:role/orders-sfn`;
const OTHER_ROLE = `arn:aws:iam::${ACCOUNT}:role/billing-sfn`;

describe('createStepFunctionsClients', () => {
  let world: SfnWorld;
  before(async () => {
    // Credentials that live 3 s (2-3 s, as STS truncates to the second) rotate several times per test.
    world = await startSfnWorld({ nats: false, assumedDurationSeconds: 3 });
    world.sts.addRole(ROLE, { externalId: 'ext-1' });
    world.sts.addRole(OTHER_ROLE);
  });
  after(async () => {
    await world?.close();
  });

  it('keeps one client per region, role and external id', () => {
    const pool = world.clients();
    const own = pool.get();
    assert.equal(pool.get(), own);
    assert.equal(pool.get({ region: 'us-east-1' }), own);
    assert.notEqual(pool.get({ region: 'eu-west-1' }), own);
    const role = pool.get({ roleArn: ROLE, externalId: 'ext-1' });
    assert.equal(pool.get({ roleArn: ROLE, externalId: 'ext-1' }), role);
    assert.notEqual(pool.get({ roleArn: ROLE, externalId: 'ext-2' }), role);
    assert.notEqual(pool.get({ roleArn: OTHER_ROLE }), role);
    assert.notEqual(pool.get({ roleArn: ROLE, externalId: 'ext-1', longPoll: true }), role);
    assert.equal(resolveStepFunctionsClient({ clients: pool, target: { roleArn: ROLE, externalId: 'ext-1' } }, 'test'), role);
    pool.destroy();
    pool.destroy();
    assert.throws(
      () => pool.get(),
      (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.Closed,
    );
  });

  it('checks its options and targets', () => {
    assert.throws(
      () => createStepFunctionsClients({ region: '' }),
      (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.InvalidOptions && /region/.test(e.message),
    );
    const pool = world.clients();
    assert.throws(() => pool.get({ roleArn: 'orders-sfn' }), /roleArn must look like/);
    assert.throws(() => resolveStepFunctionsClient({}, 'startTrigger'), /startTrigger: give 'client'/);
  });

  it('assumes a role and rotates its short-lived credentials while calls keep succeeding', async () => {
    const pool = world.clients();
    const sfn = pool.get({ roleArn: ROLE, externalId: 'ext-1', sessionName: 'rotation-test' });
    world.endpoint.resetStats();
    const issuedBefore = world.sts.issued.length;
    let calls = 0;
    const until = Date.now() + 8_000; // about three lifetimes
    while (Date.now() < until) {
      await sfn.send(new ListStateMachinesCommand({})); // each one must succeed: none signed with expired keys
      calls++;
      await new Promise((r) => setTimeout(r, 100));
    }
    const issued = world.sts.issued.slice(issuedBefore).filter((c) => c.roleArn === ROLE);
    assert.ok(issued.length >= 3, `expected at least 3 credentials over 8 s of 3-second credentials, got ${issued.length}`);
    assert.ok(issued.every((c) => c.externalId === 'ext-1' && c.sessionName === 'rotation-test'));
    // Cached, not one AssumeRole per call.
    assert.ok(issued.length < calls / 4, `${issued.length} AssumeRole calls for ${calls} calls`);
    // The endpoint saw calls signed by successive keys, and only by keys the STS issued.
    const byKey = world.endpoint.stats().byAccessKey;
    const used = issued.filter((c) => (byKey[c.accessKeyId] ?? 0) > 0);
    assert.ok(used.length >= 3, `calls were signed by ${used.length} distinct issued keys`);
    assert.equal(
      Object.values(byKey).reduce((a, b) => a + b, 0),
      calls,
    );
    assert.equal(byKey.test, undefined);
  });

  it('shares one role credential between regions and uses the base credentials without a role', async () => {
    const pool = world.clients();
    await pool.get().send(new ListStateMachinesCommand({}));
    const before = world.sts.issued.length;
    world.endpoint.resetStats();
    await pool.get({ roleArn: OTHER_ROLE }).send(new ListStateMachinesCommand({}));
    // Another region's client of the same role reuses the credentials (its call itself is signed for eu-west-1, which this endpoint refuses).
    await pool
      .get({ roleArn: OTHER_ROLE, region: 'eu-west-1' })
      .send(new ListStateMachinesCommand({}))
      .catch(() => {});
    assert.equal(world.sts.issued.length - before, 1);
  });

  it('names the role when AssumeRole is denied', async () => {
    const pool = world.clients({ maxAttempts: 1 });
    const unknown = `arn:aws:iam::${ACCOUNT}:role/nobody`;
    await assert.rejects(
      pool.get({ roleArn: unknown }).send(new ListStateMachinesCommand({})),
      (e: unknown) =>
        e instanceof JetstateError &&
        e.code === ErrorCode.InvalidOptions &&
        e.message.includes(`'${unknown}'`) &&
        /AccessDenied/.test(e.message) &&
        /trust policy/.test(e.message),
    );
    await assert.rejects(
      pool.get({ roleArn: ROLE, externalId: 'wrong' }).send(new ListStateMachinesCommand({})),
      (e: unknown) => e instanceof JetstateError && e.message.includes(`'${ROLE}'`) && /external id matches/.test(e.message),
    );
  });

  it('answers throttling with backoff: three throttled attempts, then success', async () => {
    const pool = world.clients();
    const sfn = pool.get();
    world.endpoint.resetStats();
    world.endpoint.throttle({ count: 3, actions: ['ListStateMachines'] });
    await sfn.send(new ListStateMachinesCommand({}));
    assert.equal(world.endpoint.stats().byAction.ListStateMachines, 4);
  });
});
