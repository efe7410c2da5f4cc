import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect } from '@nats-io/transport-node';
import { createClient, createEngine, ErrorCode, JetstateError, type Engine } from '../../engine/index.js';
import { order } from '../../workflows/order.js';
import { memoryLogger, startNats, uniqueNamespace } from '../helpers.js';

const input = (id: string, amount = 10) => ({ orderId: id, customer: 'ada', amount });

describe('core API against a real nats-server', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  const namespace = uniqueNamespace('core');

  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [order], leaseTtlMs: 1_000 });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('starts, applies events in order, waits, and completes with output', async () => {
    const started = await engine.start(order, { id: 'o-1', input: input('o-1') });
    assert.equal(started.value, 'awaitingPayment');
    assert.equal(started.revision, 1);
    assert.equal(started.status, 'running');
    // XState's snapshot helpers on what get() reads: can() with the stored context, getMeta().
    const read = (await engine.get(order, 'o-1'))!;
    assert.equal(read.can({ type: 'PAY', amount: 4 }), true);
    assert.equal(read.can({ type: 'DELIVERED' }), false);
    assert.deepEqual(read.getMeta(), {});
    await engine.send(order, 'o-1', { type: 'PAY', amount: 4 });
    await engine.send(order, 'o-1', { type: 'PAY', amount: 6 });
    await engine.send(order, 'o-1', { type: 'SHIP', carrier: 'dhl', trackingId: 't1' });
    await engine.send(order, 'o-1', { type: 'DELIVERED' });
    const done = await engine.waitFor(order, 'o-1', (s) => s.status === 'done', { timeoutMs: 5_000 });
    assert.deepEqual(done.output, { orderId: 'o-1', paid: 10, cancelled: false, expired: false });
    assert.equal(done.can({ type: 'CANCEL', reason: 'late' }), false, 'a finished instance takes no events');
    assert.equal(done.revision, 5);
    const history = await engine.history(order, 'o-1');
    assert.deepEqual(
      history.map((h) => [h.kind, h.revision, h.from, h.to]),
      [
        ['start', 1, null, 'awaitingPayment'],
        ['event', 2, 'awaitingPayment', 'awaitingPayment'],
        ['event', 3, 'awaitingPayment', 'paid'],
        ['event', 4, 'paid', 'shipped'],
        ['event', 5, 'shipped', 'delivered'],
      ],
    );
    const report = await engine.verify(order, 'o-1');
    assert.equal(report.ok, true, report.problems.join('\n'));
    assert.equal(report.replayed, 4);
  });

  it('start is idempotent by id and refuses a different input', async () => {
    const a = await engine.start(order, { id: 'o-2', input: input('o-2') });
    const b = await engine.start(order, { id: 'o-2', input: input('o-2') });
    assert.equal(a.createdAtMs, b.createdAtMs);
    await assert.rejects(
      engine.start(order, { id: 'o-2', input: input('o-2', 99) }),
      (e: JetstateError) => e.code === ErrorCode.InstanceConflict && /different input/.test(e.message),
    );
  });

  it('rejects bad input and bad events with clear errors and writes nothing', async () => {
    await assert.rejects(
      engine.start(order, { id: 'o-3', input: { orderId: 'o-3', customer: 'x', amount: -1 } }),
      (e: JetstateError) => e.code === ErrorCode.InvalidInput && /amount/.test(e.message),
    );
    assert.equal(await engine.get(order, 'o-3'), null);
    await assert.rejects(engine.start(order, { id: 'bad id!', input: input('x') }), (e: JetstateError) => e.code === ErrorCode.InvalidId);
    await engine.start(order, { id: 'o-4', input: input('o-4') });
    await assert.rejects(
      engine.send(order, 'o-4', { type: 'REFUND' } as never),
      (e: JetstateError) => e.code === ErrorCode.InvalidEvent && /not declared/.test(e.message),
    );
    await assert.rejects(
      engine.send(order, 'o-4', { type: 'PAY', amount: 'ten' } as never),
      (e: JetstateError) => e.code === ErrorCode.InvalidEvent && /amount/.test(e.message),
    );
    await assert.rejects(engine.send(order, 'missing', { type: 'DELIVERED' }), (e: JetstateError) => e.code === ErrorCode.InstanceNotFound);
    const history = await engine.history(order, 'o-4');
    assert.equal(history.length, 1);
  });

  it('refuses a workflow that is not a definition and misspelt or wrong per-call options, naming the fix, and writes nothing', async () => {
    const invalid = (pattern: RegExp) => (e: JetstateError) => e instanceof JetstateError && e.code === ErrorCode.InvalidOptions && pattern.test(e.message);
    const notDefinition = /the workflow must be a definition made with defineWorkflow/;
    await assert.rejects(engine.get('order' as never, 'o-1'), invalid(/not the string 'order' \(import the definition/));
    await assert.rejects(engine.start(order.machine as never, { id: 'x', input: input('x') } as never), invalid(/not an XState machine/));
    await assert.rejects(engine.send(undefined as never, 'o-1', { type: 'DELIVERED' }), invalid(notDefinition));
    for (const call of [() => engine.history({} as never, 'o-1'), () => engine.verify(null as never, 'o-1'), () => engine.cancel(7 as never, 'o-1')])
      await assert.rejects(call(), invalid(notDefinition));
    await assert.rejects(engine.start(order, undefined as never), invalid(/start\(workflow, options\): options are missing; give \{ id, input/));
    await engine.start(order, { id: 'o-opts', input: input('o-opts') });
    const seq = (await engine.send(order, 'o-opts', { type: 'PAY', amount: 1 })).seq;
    // A misspelt idempotency key would send without deduplication: a retry applied twice.
    await assert.rejects(
      engine.send(order, 'o-opts', { type: 'PAY', amount: 1 }, { idempotency_key: 'pay-1' } as never),
      invalid(/unknown option 'idempotency_key'; did you mean 'idempotencyKey'\?/),
    );
    for (const idempotencyKey of ['', 'a\nb', 'x'.repeat(1_025), 5])
      await assert.rejects(
        engine.send(order, 'o-opts', { type: 'PAY', amount: 1 }, { idempotencyKey } as never),
        invalid(/idempotencyKey must be a string of 1 to 1024/),
      );
    await assert.rejects(
      engine.waitFor(order, 'o-opts', () => true, { timeout: 5_000 } as never),
      invalid(/did you mean 'timeoutMs'\?/),
    );
    await assert.rejects(engine.waitFor(order, 'o-opts', 'paid' as never), invalid(/predicate must be a function/));
    for (const timeoutMs of [-1, Number.NaN, '5'])
      await assert.rejects(
        engine.start(order, { id: 'o-t', input: input('o-t'), timeoutMs } as never),
        invalid(/start: timeoutMs must be a non-negative number/),
      );
    await assert.rejects(engine.start(order, { id: 'o-t', input: input('o-t'), wait: 'no' } as never), invalid(/wait must be true or false/));
    await assert.rejects(engine.start(order, { id: 'o-t', inputs: input('o-t') } as never), invalid(/unknown option 'inputs'; did you mean 'input'\?/));
    await assert.rejects(engine.cancel(order, 'o-opts', { reasons: 'x' } as never), invalid(/did you mean 'reason'\?/));
    await assert.rejects(engine.delete(order, 'o-opts', { reason: 'x' } as never), invalid(/unknown option 'reason' \(known: token\)/));
    await assert.rejects(
      engine
        .list(order, { status: 'finished' } as never)
        [Symbol.asyncIterator]()
        .next(),
      invalid(/status 'finished' is not one of running, done/),
    );
    await assert.rejects(
      engine
        .list(order, { staus: 'done' } as never)
        [Symbol.asyncIterator]()
        .next(),
      invalid(/did you mean 'status'\?/),
    );
    for (const limit of [0, Number.NaN, 10_001, 1.5])
      await assert.rejects(engine.deadLetters({ limit }), invalid(/limit must be a whole number from 1 to 10000/));
    await engine.waitFor(order, 'o-opts', (i) => i.revision >= 2, { timeoutMs: 10_000 });
    const history = await engine.history(order, 'o-opts');
    assert.equal(history.length, 2, 'the start and the one PAY: nothing else was written');
    assert.equal(history[1]!.seq, seq);
    assert.equal(await engine.get(order, 'o-t'), null);
  });

  it('a client without workers starts and sends; the engine applies', async () => {
    const client = await createClient({ servers: nats.url, namespace });
    try {
      await client.start(order, { id: 'o-5', input: input('o-5') });
      const r = await client.send(order, 'o-5', { type: 'CANCEL', reason: 'changed mind' }, { idempotencyKey: 'cancel-o-5' });
      const again = await client.send(order, 'o-5', { type: 'CANCEL', reason: 'changed mind' }, { idempotencyKey: 'cancel-o-5' });
      assert.equal(again.duplicate, true);
      assert.equal(again.seq, r.seq);
      const done = await client.waitFor(order, 'o-5', (s) => s.matches('cancelled'), { timeoutMs: 5_000 });
      assert.equal((done.context as { cancelReason: string }).cancelReason, 'changed mind');
      assert.equal(done.revision, 2);
    } finally {
      await client.close();
    }
  });

  it('lists instances by status and state', async () => {
    await engine.start(order, { id: 'l-1', input: input('l-1') });
    await engine.start(order, { id: 'l-2', input: input('l-2') });
    await engine.send(order, 'l-2', { type: 'PAY', amount: 10 });
    await engine.waitFor(order, 'l-2', (s) => s.matches('paid'), { timeoutMs: 5_000 });
    const paid: string[] = [];
    for await (const i of engine.list(order, { state: 'paid' })) paid.push(i.id);
    assert.ok(paid.includes('l-2') && !paid.includes('l-1'));
    const running: string[] = [];
    for await (const i of engine.list(order, { status: 'running' })) running.push(i.id);
    assert.ok(running.includes('l-1') && running.includes('l-2') && !running.includes('o-1'));
  });

  it('waitFor times out with the state it saw, and fails fast on a finished instance', async () => {
    await engine.start(order, { id: 'w-1', input: input('w-1') });
    await assert.rejects(
      engine.waitFor(order, 'w-1', (s) => s.matches('shipped'), { timeoutMs: 200 }),
      (e: JetstateError) => e.code === ErrorCode.Timeout && /awaitingPayment/.test(e.message),
    );
    await engine.send(order, 'w-1', { type: 'CANCEL', reason: 'x' });
    await assert.rejects(
      engine.waitFor(order, 'w-1', (s) => s.matches('shipped'), { timeoutMs: 5_000 }),
      (e: JetstateError) => /will not reach/.test(e.message),
    );
  });

  it("waitFor passes the predicate's own error on, and stops when its client closes (its connection shared or its own)", async () => {
    await engine.start(order, { id: 'w-2', input: input('w-2') });
    const mistake = new Error('the predicate has a bug');
    await assert.rejects(
      engine.waitFor(
        order,
        'w-2',
        () => {
          throw mistake;
        },
        { timeoutMs: 3_000 },
      ),
      (e) => e === mistake,
    );
    const shared = await connect({ servers: nats.url });
    try {
      for (const client of [await createClient({ servers: nats.url, namespace }), await createClient({ connection: shared, namespace })]) {
        const waiting = assert.rejects(
          client.waitFor(order, 'w-2', (s) => s.matches('shipped'), { timeoutMs: 3_000 }),
          (e: JetstateError) => e.code === ErrorCode.Closed && /closed while waiting/.test(e.message),
        );
        await new Promise((r) => setTimeout(r, 200));
        await client.close();
        await waiting;
      }
    } finally {
      await shared.close();
    }
  });

  it('an event published straight to the stream is validated by the engine and recorded as rejected', async () => {
    await engine.start(order, { id: 'r-1', input: input('r-1') });
    const nc = await connect({ servers: nats.url });
    try {
      const { jetstream } = await import('@nats-io/jetstream');
      const { partitionOf } = await import('../../engine/index.js');
      const subject = `${namespace}.evt.${partitionOf('order', 'r-1', engine.partitions)}.order.r-1`;
      const js = jetstream(nc);
      await js.publish(subject, new TextEncoder().encode('{"type":"PAY","amount":"lots"}'));
      await js.publish(subject, new TextEncoder().encode('not json'));
      await js.publish(subject, new TextEncoder().encode('{"type":"PAY","amount":10}'));
    } finally {
      await nc.close();
    }
    const paid = await engine.waitFor(order, 'r-1', (s) => s.matches('paid'), { timeoutMs: 5_000 });
    assert.equal(paid.revision, 2);
    const history = await engine.history(order, 'r-1');
    assert.deepEqual(
      history.map((h) => h.kind),
      ['start', 'rejected', 'rejected', 'event'],
    );
    assert.match(history[1]!.reason!, /amount/);
    assert.match(history[2]!.reason!, /not UTF-8 JSON/);
  });

  it('a user connection is used and left open', async () => {
    const nc = await connect({ servers: nats.url });
    const client = await createClient({ connection: nc, namespace });
    await client.get(order, 'o-1');
    await client.close();
    assert.equal(nc.isClosed(), false);
    await nc.close();
  });

  it('waitFor with timeoutMs 0 answers from the instance as it is, without waiting', async () => {
    await engine.start(order, { id: 'o-w0', input: input('o-w0') });
    const now = await engine.waitFor(order, 'o-w0', (i) => i.value === 'awaitingPayment', { timeoutMs: 0 });
    assert.equal(now.value, 'awaitingPayment');
    await assert.rejects(
      engine.waitFor(order, 'o-w0', (i) => i.value === 'shipped', { timeoutMs: 0 }),
      (e: JetstateError) => e.code === ErrorCode.Timeout && /'o-w0'/.test(e.message) && /awaitingPayment/.test(e.message),
    );
  });

  it('refuses invalid options with a message that names the fix', async () => {
    await assert.rejects(createEngine({ workflows: [order] } as never), (e: JetstateError) => e.code === ErrorCode.InvalidOptions && /servers/.test(e.message));
    await assert.rejects(createEngine({ servers: nats.url, workflows: [] }), (e: JetstateError) => /at least one workflow/.test(e.message));
    await assert.rejects(createClient({ servers: nats.url, namespace: 'has.dot' }), (e: JetstateError) => e.code === ErrorCode.InvalidOptions);
    await assert.rejects(
      createClient({ servers: nats.url, logger: console.log as never }),
      (e: JetstateError) =>
        e.code === ErrorCode.InvalidOptions && /logger must be an object with error, warn, info and debug functions, e.g. console/.test(e.message),
    );
    // A misspelt option names the one meant; a wrong type or pattern says what is expected.
    await assert.rejects(
      createEngine({ servers: nats.url, workflows: [order], leaseTTLMs: 2_000 } as never),
      (e: JetstateError) => e.code === ErrorCode.InvalidOptions && /'leaseTTLMs'.*did you mean 'leaseTtlMs'\?/.test(e.message),
    );
    await assert.rejects(
      createClient({ servers: 4222 } as never),
      (e: JetstateError) => e.code === ErrorCode.InvalidOptions && /servers: .*a URL or a list of URLs, e\.g\. 'nats:\/\/127\.0\.0\.1:4222'/.test(e.message),
    );
    await assert.rejects(
      createEngine({ servers: nats.url, workflows: [order], engineId: 'host 1' }),
      (e: JetstateError) => e.code === ErrorCode.InvalidOptions && /engineId: .*letters, digits, '_' and '-'/.test(e.message),
    );
    // Said before anything connects: nothing answers at this address, and the error is the option's.
    const nowhere = 'nats://127.0.0.1:1';
    await assert.rejects(
      createClient({ servers: nowhere, secrets: { keyRing: 'not-a-key' } }),
      (e: JetstateError) => e.code === ErrorCode.InvalidOptions && /secrets\.keyRing: entry 1 of 1 is not 'id:base64key'/.test(e.message),
    );
    await assert.rejects(
      createEngine({ servers: nowhere, workflows: [order], identity: { roles: 'admin' } as never }),
      (e: JetstateError) => e.code === ErrorCode.InvalidOptions && /identity options are not valid/.test(e.message),
    );
    // Two extensions of one name: said before connecting (a connection opened first was left open).
    const ext = { name: 'sfn', start: async () => ({ close: async () => {} }) } as never;
    await assert.rejects(
      createEngine({ servers: nowhere, workflows: [order], extensions: [ext, ext], openTimeoutMs: 1_000 }),
      (e: JetstateError) => e.code === ErrorCode.InvalidOptions && /extension 'sfn' is given twice/.test(e.message),
    );
    // A connection of yours comes with its own servers, credentials and reply prefix: one given beside it would be ignored.
    const nc = await connect({ servers: nats.url });
    try {
      for (const extra of [{ inboxPrefix: '_INBOX.billing' }, { servers: nats.url }, { auth: { token: 't' } }]) {
        const key = Object.keys(extra)[0]!;
        await assert.rejects(
          createClient({ connection: nc, ...extra } as never),
          (e: JetstateError) => e.code === ErrorCode.InvalidOptions && e.message.includes(`'${key}'`) && /connection/.test(e.message),
          key,
        );
      }
    } finally {
      await nc.close();
    }
  });

  it('close drains and is idempotent; closed() resolves', async () => {
    const logger = memoryLogger();
    const e2 = await createEngine({ servers: nats.url, namespace: uniqueNamespace('close'), workflows: [order], logger });
    await Promise.all([e2.close(), e2.close()]);
    await e2.closed();
    await assert.rejects(e2.get(order, 'x'), (e: JetstateError) => e.code === ErrorCode.Closed);
  });
});
