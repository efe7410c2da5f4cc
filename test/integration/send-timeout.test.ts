/**
 * A start or send that JetStream does not acknowledge in time (here: its server is down) fails with
 * a JetstateError `TIMEOUT` that says it may have been stored and how to retry safely, not with the
 * NATS client's bare "timeout" (every error the library throws is a JetstateError).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ErrorCode, JetstateError, createClient } from '../../engine/index.js';
import { startNats, uniqueNamespace } from '../helpers.js';
import { toggle } from '../toggle-workflow.js';

describe('a start or send without an acknowledgement', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  before(async () => (nats = await startNats()));
  after(async () => nats?.dispose());

  it('fails with TIMEOUT, saying it may be stored and how to retry', { timeout: 60_000 }, async () => {
    const client = await createClient({ servers: nats.url, namespace: uniqueNamespace('acktimeout'), workflows: [toggle] });
    try {
      // No engine: the start is only published (and the client now knows the instance).
      await client.start(toggle, { id: 't1', input: {}, wait: false });
      await nats.kill();
      const [start, send, cancel] = await Promise.allSettled([
        client.start(toggle, { id: 't2', input: {}, wait: false }),
        client.send(toggle, 't1', { type: 'FLIP' }),
        client.cancel(toggle, 't1'),
      ]);
      for (const r of [start, send, cancel]) {
        assert.equal(r.status, 'rejected');
        assert.ok(r.reason instanceof JetstateError, String(r.reason));
        assert.equal(r.reason.code, ErrorCode.Timeout);
      }
      const why = (r: PromiseSettledResult<unknown>) => String((r as PromiseRejectedResult).reason.message);
      assert.match(why(start), /the start of workflow 'toggle' instance 't2' got no acknowledgement from JetStream .*may have been stored: start it again/);
      assert.match(why(send), /event 'FLIP' for workflow 'toggle' instance 't1' .*send it again with the same idempotencyKey \(give one/);
      // cancel() takes no idempotency key: a second cancel is what to do.
      assert.match(why(cancel), /the cancel of workflow 'toggle' instance 't1' .*may have been stored: cancel it again/);
    } finally {
      await client.close().catch(() => {});
    }
  });
});
