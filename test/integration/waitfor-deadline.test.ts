// waitFor opened its watch without a bound: while the server could not answer, the open waited
// for the JetStream request timeout (5 s) whatever the caller's timeoutMs, and the error then said
// "within 300 ms". (A generous bound below: the open without one takes at least 5 s.)
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createClient, ErrorCode, JetstateError, type Client } from '../../engine/index.js';
import { order } from '../../workflows/order.js';
import { startNats, uniqueNamespace } from '../helpers.js';

describe('waitFor while the server cannot answer', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let client: Client;
  before(async () => {
    nats = await startNats();
    client = await createClient({ servers: nats.url, namespace: uniqueNamespace('wfdeadline'), workflows: [order] });
  });
  after(async () => {
    await client?.close().catch(() => {});
    await nats?.dispose();
  });

  it('gives up at its timeout', async () => {
    await nats.stop();
    const started = Date.now();
    const error = await client
      .waitFor(order, 'o-1', (i) => i.matches('paid'), { timeoutMs: 300 })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    const took = Date.now() - started;
    assert.ok(error instanceof JetstateError && error.code === ErrorCode.Timeout, String(error));
    assert.ok(took < 4_000, `waitFor({ timeoutMs: 300 }) took ${took} ms`);
  });
});
