/** The activity bridge end to end: GetActivityTask long polls over HTTP, a NATS service doing the work. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { StartExecutionCommand } from '@aws-sdk/client-sfn';
import type { Msg, Subscription } from '@nats-io/transport-node';
import { ACTIVITY_ARN_HEADER, startActivityBridge } from '../../adapters/step-functions/activity-bridge.js';
import { respondWithTaskError, TOKEN_HASH_HEADER } from '../../adapters/step-functions/nats-service.js';
import { eventually, labelledLogger } from '../helpers.js';
import { startSfnWorld, type SfnWorld } from './world.js';

describe('activity bridge', () => {
  let world: SfnWorld;
  let n = 0;
  /** A fresh activity and a state machine whose one Task is that activity. */
  const setup = async (extra: Record<string, unknown> = {}): Promise<{ activityArn: string; start(input: unknown): Promise<string> }> => {
    const id = ++n;
    const activityArn = await world.createActivity(`work-${id}`);
    const stateMachineArn = await world.createStateMachine(`activity-${id}`, {
      StartAt: 'Work',
      States: { Work: { Type: 'Task', Resource: activityArn, TimeoutSeconds: 30, End: true, ...extra } },
    });
    return {
      activityArn,
      start: async (input) => (await world.client().send(new StartExecutionCommand({ stateMachineArn, input: JSON.stringify(input) }))).executionArn!,
    };
  };
  /** A NATS service on `subject` that answers with `reply(input, msg)` (or not at all for undefined) after `delayMs`. */
  const service = (subject: string, reply: (input: { n: number }, msg: Msg) => unknown, delayMs = 0): Subscription =>
    world.nc.subscribe(subject, {
      callback: (_e, msg) => {
        setTimeout(() => {
          const out = reply(msg.json(), msg);
          if (out !== undefined) msg.respond(JSON.stringify(out));
        }, delayMs);
      },
    });

  before(async () => {
    world = await startSfnWorld({ activityPollTimeoutMs: 2_000 });
  });
  after(async () => {
    await world?.close();
  });

  it('hands the input to the service and answers with its reply', async () => {
    const { activityArn, start } = await setup();
    const headers: Array<Record<string, string | undefined>> = [];
    const sub = service('svc.pack', (input, msg) => {
      headers.push({ hash: msg.headers?.get(TOKEN_HASH_HEADER), activity: msg.headers?.get(ACTIVITY_ARN_HEADER) });
      return { packed: input.n * 2 };
    });
    const bridge = await startActivityBridge({
      clients: world.clients(),
      activityArn,
      connection: world.nc,
      serviceSubject: 'svc.pack',
      requestTimeoutMs: 5_000,
      heartbeatIntervalMs: 1_000,
    });
    try {
      const d = await world.waitForEnd(await start({ n: 21 }));
      assert.equal(d.status, 'SUCCEEDED');
      assert.deepEqual(JSON.parse(d.output!), { packed: 42 });
      assert.match(headers[0]!.hash!, /^[0-9a-f]{32}$/); // a hash, never the token
      assert.equal(headers[0]!.activity, activityArn);
      assert.equal(bridge.stats.succeeded, 1);
    } finally {
      await bridge.stop();
      sub.unsubscribe();
    }
  });

  it('fails the task when the service replies with an error, or does not reply in time', async () => {
    const { activityArn, start } = await setup();
    const sub = service('svc.check', (input, msg) => {
      if (input.n === 1) return void respondWithTaskError(msg, 'Check.Refused', 'n is 1');
      return undefined; // n === 2: never answers
    });
    const bridge = await startActivityBridge({
      clients: world.clients(),
      activityArn,
      connection: world.nc,
      serviceSubject: 'svc.check',
      requestTimeoutMs: 500,
      heartbeatIntervalMs: 0,
      concurrency: 2,
    });
    try {
      const [refused, silent] = await Promise.all([start({ n: 1 }), start({ n: 2 })]);
      const r = await world.waitForEnd(refused);
      assert.equal(r.status, 'FAILED');
      assert.equal(r.error, 'Check.Refused');
      assert.equal(r.cause, 'n is 1');
      const s = await world.waitForEnd(silent);
      assert.equal(s.status, 'FAILED');
      assert.equal(s.error, 'jetstate.ServiceTimeout');
      assert.match(s.cause!, /svc\.check.*500 ms/);
      assert.equal(bridge.stats.failed, 2);
    } finally {
      await bridge.stop();
      sub.unsubscribe();
    }
  });

  it('keeps a task with HeartbeatSeconds alive while the service works', async () => {
    const { activityArn, start } = await setup({ HeartbeatSeconds: 1 });
    const sub = service('svc.slow', (input) => ({ slow: input.n }), 2_500);
    const bridge = await startActivityBridge({
      clients: world.clients(),
      activityArn,
      connection: world.nc,
      serviceSubject: 'svc.slow',
      requestTimeoutMs: 10_000,
      heartbeatIntervalMs: 300,
    });
    try {
      const d = await world.waitForEnd(await start({ n: 3 }));
      assert.equal(d.status, 'SUCCEEDED');
      assert.ok(bridge.stats.heartbeats >= 4, `${bridge.stats.heartbeats} heartbeats`);
    } finally {
      await bridge.stop();
      sub.unsubscribe();
    }
  });

  it('warns when heartbeats keep being refused (a missing states:SendTaskHeartbeat), and says when they pass again', async () => {
    const { activityArn, start } = await setup({ HeartbeatSeconds: 10 });
    const sub = service('svc.denied', (input) => ({ denied: input.n }), 2_500);
    const lines: string[] = [];
    const logger = labelledLogger('bridge', lines);
    world.endpoint.deny({ actions: ['SendTaskHeartbeat'] });
    const bridge = await startActivityBridge({
      clients: world.clients(),
      activityArn,
      connection: world.nc,
      serviceSubject: 'svc.denied',
      requestTimeoutMs: 10_000,
      heartbeatIntervalMs: 200,
      logger,
    });
    try {
      const executionArn = await start({ n: 4 });
      const refused = () => lines.filter((l) => /^bridge warn: .*heartbeat.*AccessDeniedException.*states:SendTaskHeartbeat/.test(l));
      await eventually(() => assert.equal(refused().length, 1, lines.join('\n')), 5_000, 20);
      world.endpoint.deny(null);
      await eventually(() => assert.ok(bridge.stats.heartbeats >= 1, 'a heartbeat passes once allowed'), 5_000, 20);
      assert.ok(
        lines.some((l) => /^bridge info: .*heartbeats are accepted again after \d+ refused/.test(l)),
        lines.join('\n'),
      );
      assert.equal((await world.waitForEnd(executionArn)).status, 'SUCCEEDED');
      assert.equal(refused().length, 1, 'one warning for the run of refusals, not one per beat');
    } finally {
      world.endpoint.deny(null);
      await bridge.stop();
      sub.unsubscribe();
    }
  });

  it('stop() starts no new poll but processes a task that a poll in flight takes', async () => {
    const { activityArn, start } = await setup();
    const sub = service('svc.late', (input) => ({ late: input.n }), 200);
    world.endpoint.resetStats();
    const bridge = await startActivityBridge({
      clients: world.clients(),
      activityArn,
      connection: world.nc,
      serviceSubject: 'svc.late',
      requestTimeoutMs: 5_000,
      heartbeatIntervalMs: 0,
    });
    try {
      // One poll is held open by the endpoint (2 s) ...
      await eventually(() => assert.equal(world.endpoint.stats().byAction.GetActivityTask, 1));
      const stopped = bridge.stop();
      // ... and the task of an execution started after stop() goes to it.
      const arn = await start({ n: 5 });
      await stopped;
      assert.equal(bridge.stats.succeeded, 1, 'the task was answered before stop() resolved');
      const d = await world.waitForEnd(arn);
      assert.equal(d.status, 'SUCCEEDED');
      assert.deepEqual(JSON.parse(d.output!), { late: 5 });
      assert.equal(world.endpoint.stats().byAction.GetActivityTask, 1, 'no poll after stop()');
    } finally {
      await bridge.stop();
      sub.unsubscribe();
    }
  });

  it('backs off when polls are throttled, then takes the task', async () => {
    const { activityArn, start } = await setup();
    const sub = service('svc.thr', (input) => ({ n: input.n }));
    const client = world.client({ maxAttempts: 1 }); // no SDK retries: the bridge's own backoff
    world.endpoint.throttle({ count: 3, actions: ['GetActivityTask'] });
    const bridge = await startActivityBridge({
      client,
      activityArn,
      connection: world.nc,
      serviceSubject: 'svc.thr',
      requestTimeoutMs: 5_000,
      heartbeatIntervalMs: 0,
    });
    try {
      const d = await world.waitForEnd(await start({ n: 9 }));
      assert.equal(d.status, 'SUCCEEDED');
      assert.equal(bridge.stats.throttled, 3);
      assert.equal(bridge.stats.succeeded, 1);
    } finally {
      await bridge.stop();
      sub.unsubscribe();
    }
  });

  it('checks its options', async () => {
    await assert.rejects(
      startActivityBridge({
        clients: world.clients(),
        activityArn: 'pack',
        connection: world.nc,
        serviceSubject: 's',
        requestTimeoutMs: 1,
        heartbeatIntervalMs: 0,
      }),
      /activityArn must look like/,
    );
    await assert.rejects(
      startActivityBridge({
        activityArn: 'arn:aws:states:us-east-1:123456789012:activity:x',
        connection: world.nc,
        serviceSubject: 's',
        requestTimeoutMs: 1,
        heartbeatIntervalMs: 0,
      }),
      /give 'client'/,
    );
  });
});
