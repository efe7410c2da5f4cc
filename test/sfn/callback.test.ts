/**
 * Callback tasks end to end: a `.waitForTaskToken` state calls the forwarder (as the endpoint's
 * stand-in for a Lambda function), the token goes through JetStream, serveCallbackTasks answers
 * over HTTP with the real SDK.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { StartExecutionCommand } from '@aws-sdk/client-sfn';
import { jetstreamManager } from '@nats-io/jetstream';
import type { Msg } from '@nats-io/transport-node';
import { ensureTaskTokenStream, serveCallbackTasks, taskTokenForwarder, TaskFailedError } from '../../adapters/step-functions/callback.js';
import { natsServiceHandler, respondWithTaskError, TOKEN_HASH_HEADER } from '../../adapters/step-functions/nats-service.js';
import { memoryLogger } from '../helpers.js';
import { startSfnWorld, type SfnWorld } from './world.js';

const STREAM = 'SFN_TOKENS';

/** A state machine with one callback task routed to `sfn.tokens.<route>`. */
const callbackMachine = (route: string, extra: Record<string, unknown> = {}) => ({
  StartAt: 'Callback',
  States: {
    Callback: {
      Type: 'Task',
      Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken',
      Parameters: { FunctionName: 'forward', Payload: { route, 'taskToken.$': '$$.Task.Token', 'input.$': '$' } },
      TimeoutSeconds: 30,
      End: true,
      ...extra,
    },
  },
});

describe('callback tasks', () => {
  let world: SfnWorld;
  let n = 0;
  const run = async (route: string, input: unknown, extra: Record<string, unknown> = {}): Promise<string> => {
    const arn = await world.createStateMachine(`cb-${route}-${++n}`, callbackMachine(route, extra));
    return (await world.client().send(new StartExecutionCommand({ stateMachineArn: arn, input: JSON.stringify(input) }))).executionArn!;
  };

  before(async () => {
    world = await startSfnWorld({
      // The endpoint's stand-in for the Lambda function: a forwarder per route.
      taskHandlers: (nc) => ({
        forward: (payload) => taskTokenForwarder({ connection: nc!, subject: `sfn.tokens.${(payload as { route: string }).route}`, stream: STREAM })(payload),
      }),
    });
    await ensureTaskTokenStream({ connection: world.nc, stream: STREAM, subjects: ['sfn.tokens.>'] });
  });
  after(async () => {
    await world?.close();
  });

  it('answers with the handler result (SendTaskSuccess)', async () => {
    const seen: Array<{ input: unknown; hash: string }> = [];
    const server = await serveCallbackTasks({
      connection: world.nc,
      stream: STREAM,
      subject: 'sfn.tokens.ok',
      durable: 'ok',
      clients: world.clients(),
      handler: async ({ input, taskTokenHash }) => {
        seen.push({ input, hash: taskTokenHash });
        return { charged: (input as { amount: number }).amount };
      },
    });
    try {
      const d = await world.waitForEnd(await run('ok', { amount: 10 }));
      assert.equal(d.status, 'SUCCEEDED');
      assert.deepEqual(JSON.parse(d.output!), { charged: 10 });
      assert.deepEqual(seen[0]?.input, { amount: 10 });
      assert.match(seen[0]!.hash, /^[0-9a-f]{32}$/);
      assert.equal(server.stats.succeeded, 1);
    } finally {
      await server.stop();
    }
  });

  it('stores a token once when it is forwarded twice, and refuses an event without a token', async () => {
    const forward = taskTokenForwarder({ connection: world.nc, subject: 'sfn.tokens.dedupe', stream: STREAM });
    assert.deepEqual(await forward({ taskToken: 'AQCsame', input: { a: 1 } }), { forwarded: true });
    await forward({ taskToken: 'AQCsame', input: { a: 1 } });
    const jsm = await jetstreamManager(world.nc);
    const info = await jsm.streams.info(STREAM, { subjects_filter: 'sfn.tokens.dedupe' });
    assert.equal(info.state.subjects?.['sfn.tokens.dedupe'], 1);
    await jsm.streams.purge(STREAM, { filter: 'sfn.tokens.dedupe' });
    await assert.rejects(forward({ input: {} }), /no taskToken.*"taskToken.\$": "\$\$.Task.Token"/s);
    // A stream that does not store the subject: the publish fails, so the state would fail, not wait.
    const lost = taskTokenForwarder({ connection: world.nc, subject: 'nowhere.tokens', stream: STREAM });
    await assert.rejects(lost({ taskToken: 'AQCx' }));
  });

  it('fails the task with the error the handler chose (SendTaskFailure)', async () => {
    const server = await serveCallbackTasks({
      connection: world.nc,
      subject: 'sfn.tokens.fail', // the stream is found from the subject
      durable: 'fail',
      clients: world.clients(),
      handler: async () => {
        throw new TaskFailedError('Payment.Declined', `card expired ${'!'.repeat(40_000)}`);
      },
    });
    try {
      const d = await world.waitForEnd(await run('fail', {}));
      assert.equal(d.status, 'FAILED');
      assert.equal(d.error, 'Payment.Declined');
      assert.ok(d.cause!.startsWith('card expired') && d.cause!.length <= 32_768);
      assert.equal(server.stats.failed, 1);
    } finally {
      await server.stop();
    }
  });

  it('keeps a task with HeartbeatSeconds alive by heartbeats; without them it times out', async () => {
    const slow = async (): Promise<unknown> => {
      await new Promise((r) => setTimeout(r, 3_000));
      return { done: true };
    };
    const logger = memoryLogger();
    const beating = await serveCallbackTasks({
      connection: world.nc,
      stream: STREAM,
      subject: 'sfn.tokens.hb',
      durable: 'hb',
      clients: world.clients(),
      heartbeatIntervalMs: 300,
      handler: slow,
    });
    const silent = await serveCallbackTasks({
      connection: world.nc,
      stream: STREAM,
      subject: 'sfn.tokens.nohb',
      durable: 'nohb',
      clients: world.clients(),
      heartbeatIntervalMs: 0,
      handler: slow,
      logger,
    });
    try {
      const [alive, dead] = await Promise.all([run('hb', {}, { HeartbeatSeconds: 1 }), run('nohb', {}, { HeartbeatSeconds: 1 })]);
      const [a, d] = await Promise.all([world.waitForEnd(alive), world.waitForEnd(dead)]);
      assert.equal(a.status, 'SUCCEEDED');
      assert.deepEqual(JSON.parse(a.output!), { done: true });
      assert.ok(beating.stats.heartbeats >= 5, `${beating.stats.heartbeats} heartbeats`);
      assert.equal(d.status, 'FAILED');
      // AWS reports a missed heartbeat as States.Timeout (States.HeartbeatTimeout in Catch/Retry).
      assert.match(d.error!, /^States\.(Heartbeat)?Timeout$/);
      assert.match(d.cause ?? '', /heartbeat/i);
      // The silent server's late answer is refused as gone: dropped, not retried.
      await waitFor(() => silent.stats.gone === 1);
      assert.ok(logger.lines.some((l) => /no longer waits/.test(l)));
    } finally {
      await Promise.all([beating.stop(), silent.stop()]);
    }
  });

  it('lets a plain NATS service answer by request/reply, with errors in a header', async () => {
    const headersSeen: string[] = [];
    const sub = world.nc.subscribe('svc.charge', {
      callback: (_err, msg: Msg) => {
        headersSeen.push(msg.headers?.get(TOKEN_HASH_HEADER) ?? '');
        const input = msg.json<{ amount: number }>();
        if (input.amount < 0) return void respondWithTaskError(msg, 'Charge.Negative', `amount ${input.amount} is below zero`);
        msg.respond(JSON.stringify({ charged: input.amount, error: 'none' }));
      },
    });
    const server = await serveCallbackTasks({
      connection: world.nc,
      stream: STREAM,
      subject: 'sfn.tokens.svc',
      durable: 'svc',
      clients: world.clients(),
      handler: natsServiceHandler({ connection: world.nc, subject: 'svc.charge', timeoutMs: 5_000 }),
    });
    try {
      const [ok, bad] = await Promise.all([run('svc', { amount: 7 }), run('svc', { amount: -1 })]);
      const okEnd = await world.waitForEnd(ok);
      assert.equal(okEnd.status, 'SUCCEEDED');
      assert.deepEqual(JSON.parse(okEnd.output!), { charged: 7, error: 'none' }); // an `error` field in an output stays output
      const badEnd = await world.waitForEnd(bad);
      assert.equal(badEnd.status, 'FAILED');
      assert.equal(badEnd.error, 'Charge.Negative');
      assert.equal(badEnd.cause, 'amount -1 is below zero');
      assert.ok(headersSeen.every((h) => /^[0-9a-f]{32}$/.test(h)));
    } finally {
      await server.stop();
      sub.unsubscribe();
    }
  });

  /**
   * A NATS service on `svc.<route>` (served through `sfn.tokens.<route>`) that does the work for
   * every request but answers the first one of each `keyOf(request)` too late: the task fails with
   * jetstate.ServiceTimeout and the state's Retry runs it again, with a new token. `seen` has the
   * idempotency keys and token hashes each key's requests carried.
   */
  async function lateFirstService(route: string, keyOf: (request: Record<string, unknown>) => string) {
    const seen = new Map<string, { keys: string[]; hashes: string[] }>();
    const sub = world.nc.subscribe(`svc.${route}`, {
      callback: (_err, msg: Msg) => {
        const request = msg.json<Record<string, unknown>>();
        const mine = seen.get(keyOf(request)) ?? { keys: [], hashes: [] };
        seen.set(keyOf(request), mine);
        mine.keys.push(msg.headers?.get('Jetstate-Idempotency-Key') ?? '');
        mine.hashes.push(msg.headers?.get(TOKEN_HASH_HEADER) ?? '');
        const reply = (): boolean => msg.respond(JSON.stringify({ ...request, handled: true }));
        if (mine.keys.length === 1) setTimeout(reply, 1_000);
        else reply();
      },
    });
    const server = await serveCallbackTasks({
      connection: world.nc,
      stream: STREAM,
      subject: `sfn.tokens.${route}`,
      durable: route,
      clients: world.clients(),
      handler: natsServiceHandler({ connection: world.nc, subject: `svc.${route}`, timeoutMs: 300 }),
    });
    return {
      seen,
      stop: async () => {
        await server.stop();
        sub.unsubscribe();
      },
    };
  }

  /** A callback task routed to `route` that names its execution, retried once on jetstate.ServiceTimeout. */
  const retriedCharge = (route: string) => ({
    Type: 'Task',
    Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken',
    Parameters: { FunctionName: 'forward', Payload: { route, 'taskToken.$': '$$.Task.Token', 'executionArn.$': '$$.Execution.Id', 'input.$': '$' } },
    TimeoutSeconds: 30,
    Retry: [{ ErrorEquals: ['jetstate.ServiceTimeout'], IntervalSeconds: 1, MaxAttempts: 2 }],
    End: true,
  });

  it('gives a NATS service one idempotency key for all retries of a state entry (a new token each)', async () => {
    const service = await lateFirstService('once', (r) => String(r['orderId']));
    try {
      const arn = await world.createStateMachine('cb-once', { StartAt: 'Charge', States: { Charge: retriedCharge('once') } });
      const orders = Array.from({ length: 12 }, (_, i) => `o-${i}`);
      const executions = await Promise.all(
        orders.map(
          async (orderId) => (await world.client().send(new StartExecutionCommand({ stateMachineArn: arn, input: JSON.stringify({ orderId }) }))).executionArn!,
        ),
      );
      for (const x of executions) assert.equal((await world.waitForEnd(x, 30_000)).status, 'SUCCEEDED');
      const byOrder = service.seen;
      const retried = orders.filter((o) => byOrder.get(o)!.keys.length === 2);
      assert.deepEqual(retried, orders, 'every order was sent twice');
      for (const o of orders) assert.notEqual(byOrder.get(o)!.hashes[0], byOrder.get(o)!.hashes[1], 'each attempt has its own token');
      const oneKey = orders.filter((o) => {
        const [a, b] = byOrder.get(o)!.keys;
        return a !== '' && a === b;
      });
      assert.deepEqual(oneKey, orders, `${oneKey.length} of ${orders.length} orders carried one key over their retry`);
      const keys = new Set(orders.map((o) => byOrder.get(o)!.keys[0]));
      assert.equal(keys.size, orders.length, 'each state entry has its own key');
    } finally {
      await service.stop();
    }
  });

  it('gives each concurrent Map iteration its own idempotency key, kept over its retry', async () => {
    // Items 0-3 run at once; each is answered too late the first time, so every iteration retries.
    const service = await lateFirstService('each', (r) => String(r['item']));
    try {
      const machine = {
        StartAt: 'Each',
        States: {
          Each: {
            Type: 'Map',
            ItemsPath: '$.items',
            MaxConcurrency: 4,
            ItemSelector: { 'item.$': '$$.Map.Item.Value' },
            ItemProcessor: { StartAt: 'Charge', States: { Charge: retriedCharge('each') } },
            End: true,
          },
        },
      };
      const arn = await world.createStateMachine('cb-each', machine);
      const items = ['0', '1', '2', '3'];
      const { executionArn } = await world
        .client()
        .send(new StartExecutionCommand({ stateMachineArn: arn, input: JSON.stringify({ items: items.map(Number) }) }));
      assert.equal((await world.waitForEnd(executionArn!, 30_000)).status, 'SUCCEEDED');
      for (const i of items) {
        const keys = service.seen.get(i)?.keys ?? [];
        assert.equal(keys.length, 2, `item ${i} was sent twice`);
        assert.ok(keys[0] !== '' && keys[0] === keys[1], `item ${i} carried one key over its retry: ${keys.join(', ')}`);
      }
      const firstKeys = items.map((i) => service.seen.get(i)!.keys[0]);
      assert.equal(new Set(firstKeys).size, items.length, `each iteration has its own key: ${firstKeys.join(', ')}`);
    } finally {
      await service.stop();
    }
  });

  it('fails the task, without running the handler, when the named execution does not show the token', async () => {
    let ran = 0;
    const server = await serveCallbackTasks({
      connection: world.nc,
      stream: STREAM,
      subject: 'sfn.tokens.wrongarn',
      durable: 'wrongarn',
      clients: world.clients(),
      handler: async () => ++ran,
    });
    try {
      const machine = {
        StartAt: 'Charge',
        States: {
          Charge: {
            Type: 'Task',
            Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken',
            Parameters: {
              FunctionName: 'forward',
              Payload: {
                route: 'wrongarn',
                'taskToken.$': '$$.Task.Token',
                executionArn: 'arn:aws:states:us-east-1:123456789012:execution:other:gone',
                'input.$': '$',
              },
            },
            TimeoutSeconds: 30,
            End: true,
          },
        },
      };
      const arn = await world.createStateMachine('cb-wrongarn', machine);
      const x = (await world.client().send(new StartExecutionCommand({ stateMachineArn: arn, input: '{}' }))).executionArn!;
      const end = await world.waitForEnd(x);
      assert.equal(end.status, 'FAILED');
      assert.equal(end.error, 'jetstate.IdempotencyKeyUnavailable');
      assert.match(end.cause!, /states:GetExecutionHistory/);
      assert.equal(ran, 0);
    } finally {
      await server.stop();
    }
  });

  it('retries a throttled answer with backoff and acknowledges the token only once AWS took it', async () => {
    // A client without SDK retries, so the server's own backoff does the work.
    const client = world.client({ maxAttempts: 1 });
    const server = await serveCallbackTasks({
      connection: world.nc,
      stream: STREAM,
      subject: 'sfn.tokens.thr',
      durable: 'thr',
      client,
      handler: async () => ({ ok: true }),
    });
    try {
      world.endpoint.resetStats();
      world.endpoint.throttle({ count: 3, actions: ['SendTaskSuccess'] });
      const d = await world.waitForEnd(await run('thr', {}));
      assert.equal(d.status, 'SUCCEEDED');
      assert.equal(world.endpoint.stats().byAction.SendTaskSuccess, 4);
      const jsm = await jetstreamManager(world.nc);
      await waitFor(async () => (await jsm.consumers.info(STREAM, 'thr')).num_ack_pending === 0);
      assert.equal((await jsm.streams.info(STREAM, { subjects_filter: 'sfn.tokens.thr' })).state.subjects?.['sfn.tokens.thr'] ?? 0, 0);
    } finally {
      await server.stop();
    }
  });

  it('stop() lets a running handler finish and answer', async () => {
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const server = await serveCallbackTasks({
      connection: world.nc,
      stream: STREAM,
      subject: 'sfn.tokens.stop',
      durable: 'stop',
      clients: world.clients(),
      handler: async () => {
        started();
        await new Promise((r) => setTimeout(r, 500));
        return { finished: true };
      },
    });
    const arn = await run('stop', {});
    await running;
    await server.stop();
    const d = await world.waitForEnd(arn);
    assert.equal(d.status, 'SUCCEEDED');
    assert.equal(server.stats.succeeded, 1);
  });
});

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
