// The example workflows behave as the README says.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createEngine, type Engine } from '../../engine/index.js';
import { approval } from '../../workflows/approval.js';
import { workflows } from '../../workflows/index.js';
import { startNats, uniqueNamespace } from '../helpers.js';

describe('the approval example', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  before(async () => {
    nats = await startNats();
    // The payment example seals its card fields: it needs a key ring.
    engine = await createEngine({
      servers: nats.url,
      namespace: uniqueNamespace('examples'),
      workflows,
      secrets: { keyRing: `test:${Buffer.alloc(32, 7).toString('base64')}` },
    });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('approves and provisions through a retried task', async () => {
    await engine.start(approval, { id: 'a-1', input: { requester: 'ada', resource: 'db-prod', simulateOutage: true } });
    await engine.send(approval, 'a-1', { type: 'APPROVE', by: 'grace' });
    const granted = await engine.waitFor(approval, 'a-1', (s) => s.status === 'done', { timeoutMs: 10_000 });
    assert.equal(granted.value, 'granted');
    assert.equal((granted.output as { decidedBy: string }).decidedBy, 'grace');
    assert.match((granted.output as { grantId: string }).grantId, /^approval\.a-1@\d+\.provision\./);
  });

  it('expires when nobody decides in time', async () => {
    await engine.start(approval, { id: 'a-2', input: { requester: 'ada', resource: 'db-prod', expiresInMs: 200 } });
    const expired = await engine.waitFor(approval, 'a-2', (s) => s.status === 'done', { timeoutMs: 5_000 });
    assert.equal(expired.value, 'expired');
  });

  it('fails at once on a terminal error', async () => {
    await engine.start(approval, { id: 'a-3', input: { requester: 'ada', resource: 'forbidden-vault' } });
    await engine.send(approval, 'a-3', { type: 'APPROVE', by: 'grace' });
    const failed = await engine.waitFor(approval, 'a-3', (s) => s.status === 'done', { timeoutMs: 5_000 });
    assert.equal(failed.value, 'failed');
    assert.match((failed.output as { error: string }).error, /cannot be granted/);
  });
});
