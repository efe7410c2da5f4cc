// A client's reads that NATS does not answer in time (a server stalled, an election, a reconnect)
// are a JetstateError with code TIMEOUT naming the instance and what happened, as a publish without
// an acknowledgement is (README: "no acknowledgement in time: TIMEOUT"); before, the raw nats.js
// `TimeoutError` ("timeout") escaped from the record read send() makes first, and from get().
// The server is stopped for real (SIGSTOP), then let go on (SIGCONT).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createClient, createEngine, ErrorCode, JetstateError, type Engine } from '../../engine/index.js';
import { order } from '../../workflows/order.js';
import { startNats, uniqueNamespace } from '../helpers.js';

describe('client reads NATS does not answer in time', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  const namespace = uniqueNamespace('readtimeout');

  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [order] });
    await engine.start(order, { id: 'o-1', input: { orderId: 'o-1', customer: 'ada', amount: 5 } });
    await engine.start(order, { id: 'o-2', input: { orderId: 'o-2', customer: 'bo', amount: 5 } });
  });
  after(async () => {
    if (nats?.pid) process.kill(nats.pid, 'SIGCONT');
    await engine?.close();
    await nats?.dispose();
  });

  it('send() and get() say TIMEOUT, naming the instance, and send() that nothing was sent', { timeout: 60_000 }, async () => {
    const client = await createClient({ servers: nats.url, namespace });
    try {
      // The client has read the namespace's secret paths (it uses them when a read fails), and
      // has not seen o-2 yet: send() reads its record first.
      await client.send(order, 'o-1', { type: 'PAY', amount: 1 });
      process.kill(nats.pid!, 'SIGSTOP');
      try {
        // The record read before the publish times out (nothing was sent); on a loaded machine one
        // run read the record before the stop took hold, and the publish timed out instead: TIMEOUT
        // naming the instance either way, each saying what it knows of the event.
        await assert.rejects(
          client.send(order, 'o-2', { type: 'PAY', amount: 5 }),
          (e: unknown) =>
            e instanceof JetstateError && e.code === ErrorCode.Timeout && /'o-2'/.test(e.message) && /nothing was sent|it may have been stored/.test(e.message),
        );
        await assert.rejects(client.get(order, 'o-2'), (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.Timeout && /'o-2'/.test(e.message));
      } finally {
        process.kill(nats.pid!, 'SIGCONT');
      }
      // Served again once the server goes on.
      assert.equal((await client.get(order, 'o-2'))?.id, 'o-2');
    } finally {
      await client.close();
    }
  });
});
