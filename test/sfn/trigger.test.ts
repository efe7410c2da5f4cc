/** The trigger end to end: NATS messages start executions idempotently and get their outcome as a reply. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DescribeExecutionCommand, ListExecutionsCommand, StartExecutionCommand, type SFNClient } from '@aws-sdk/client-sfn';
import { AckPolicy, RetentionPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { createInbox, headers, type Msg } from '@nats-io/transport-node';
import { REPLY_TO_HEADER, WAIT_HEADER, startTrigger, type TriggerReply } from '../../adapters/step-functions/trigger.js';
import { MAX_PAYLOAD_BYTES } from '../../adapters/step-functions/payload.js';
import { eventually, labelledLogger } from '../helpers.js';
import { startSfnWorld, type SfnWorld } from './world.js';

/** Doubles `n`, after `waitSeconds` (0 by default). */
const DOUBLER = {
  StartAt: 'Wait',
  States: {
    Wait: { Type: 'Wait', SecondsPath: '$.waitSeconds', Next: 'Double' },
    Double: { Type: 'Pass', Parameters: { 'doubled.$': 'States.MathAdd($.n, $.n)' }, End: true },
  },
};

const withHeaders = (entries: Record<string, string>) => {
  const h = headers();
  for (const [k, v] of Object.entries(entries)) h.set(k, v);
  return h;
};

describe('trigger', () => {
  let world: SfnWorld;
  let n = 0;
  const machine = (): Promise<string> => world.createStateMachine(`trigger-${++n}`, DOUBLER);
  const executions = async (stateMachineArn: string) => (await world.client().send(new ListExecutionsCommand({ stateMachineArn }))).executions ?? [];
  const ask = async (subject: string, body: string, h: Record<string, string>): Promise<TriggerReply> =>
    (await world.nc.request(subject, body, { timeout: 10_000, headers: withHeaders(h) })).json<TriggerReply>();

  before(async () => {
    world = await startSfnWorld();
  });
  after(async () => {
    await world?.close();
  });

  it('starts one execution per message id and replies with its outcome', async () => {
    const stateMachineArn = await machine();
    const trigger = await startTrigger({ connection: world.nc, subject: 'orders.double', queue: 'double', stateMachineArn, clients: world.clients() });
    try {
      const input = JSON.stringify({ n: 21, waitSeconds: 0 });
      const first = await ask('orders.double', input, { 'Nats-Msg-Id': 'order-17' });
      assert.equal(first.status, 'SUCCEEDED');
      assert.deepEqual(first.output, { doubled: 42 });
      assert.match(first.executionArn!, /:execution:trigger-\d+:order-17$/);
      // The same message again (a retry, a redelivery): the same execution, no second one.
      const again = await ask('orders.double', input, { 'Nats-Msg-Id': 'order-17' });
      assert.deepEqual(again, first);
      const listed = await executions(stateMachineArn);
      assert.equal(listed.length, 1);
      assert.equal(listed[0]!.name, 'order-17');
      // An id Step Functions would not take as a name is mapped to a safe one, the same each time.
      const odd = await ask('orders.double', input, { 'Nats-Msg-Id': 'orders/18 #2' });
      assert.equal(odd.status, 'SUCCEEDED');
      assert.equal((await ask('orders.double', input, { 'Nats-Msg-Id': 'orders/18 #2' })).executionArn, odd.executionArn);
      assert.equal((await executions(stateMachineArn)).length, 2);
      assert.equal(trigger.stats.started, 4);
    } finally {
      await trigger.stop();
    }
  });

  it("passes the sender's trace context into the execution input, and a retry with another one finds the same execution", async () => {
    const stateMachineArn = await machine();
    const trigger = await startTrigger({ connection: world.nc, subject: 'orders.traced', queue: 'traced', stateMachineArn, clients: world.clients() });
    try {
      const traceparent = `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01`;
      const input = JSON.stringify({ n: 2, waitSeconds: 0 });
      const first = await ask('orders.traced', input, { 'Nats-Msg-Id': 'traced-1', traceparent });
      assert.equal(first.status, 'SUCCEEDED');
      const d = await world.client().send(new DescribeExecutionCommand({ executionArn: first.executionArn! }));
      assert.deepEqual(JSON.parse(d.input!), { n: 2, waitSeconds: 0, _jetstate: { traceparent } });
      const retry = await ask('orders.traced', input, { 'Nats-Msg-Id': 'traced-1', traceparent: `00-${'3'.repeat(32)}-${'4'.repeat(16)}-01` });
      assert.equal(retry.executionArn, first.executionArn);
      assert.equal((await executions(stateMachineArn)).length, 1);
    } finally {
      await trigger.stop();
    }
  });

  it('replies at once with RUNNING when asked not to wait', async () => {
    const stateMachineArn = await machine();
    const trigger = await startTrigger({ connection: world.nc, subject: 'orders.nowait', stateMachineArn, clients: world.clients() });
    try {
      const r = await ask('orders.nowait', JSON.stringify({ n: 1, waitSeconds: 5 }), { 'Nats-Msg-Id': 'slow-1', [WAIT_HEADER]: 'false' });
      assert.equal(r.status, 'RUNNING');
      assert.match(r.executionArn!, /:slow-1$/);
    } finally {
      await trigger.stop();
    }
  });

  it('answers bad messages with an error naming the problem', async () => {
    const stateMachineArn = await machine();
    const trigger = await startTrigger({ connection: world.nc, subject: 'orders.bad', stateMachineArn, clients: world.clients() });
    try {
      const noId = await ask('orders.bad', '{}', {});
      assert.equal(noId.error, 'jetstate.MissingMessageId');
      assert.match(noId.cause!, /Nats-Msg-Id/);
      const notJson = await ask('orders.bad', '{"n":', { 'Nats-Msg-Id': 'bad-1' });
      assert.equal(notJson.error, 'jetstate.InvalidInput');
      assert.match(notJson.cause!, /'bad-1' is not JSON/);
      const big = await ask('orders.bad', JSON.stringify({ blob: 'x'.repeat(MAX_PAYLOAD_BYTES) }), { 'Nats-Msg-Id': 'bad-2' });
      assert.equal(big.error, 'jetstate.InputTooLarge');
      assert.match(big.cause!, /262144 bytes.*S3 key/);
      await ask('orders.bad', JSON.stringify({ n: 1, waitSeconds: 0 }), { 'Nats-Msg-Id': 'taken' });
      const other = await ask('orders.bad', JSON.stringify({ n: 2, waitSeconds: 0 }), { 'Nats-Msg-Id': 'taken' });
      assert.equal(other.error, 'ExecutionAlreadyExists');
      assert.match(other.cause!, /different input/);
      assert.equal((await executions(stateMachineArn)).length, 1);
      assert.equal(trigger.stats.rejected, 4);
    } finally {
      await trigger.stop();
    }
  });

  it('consumes a stream: names from stream and sequence, replies to Jetstate-Reply-To, and a replay starts nothing new', async () => {
    const stateMachineArn = await machine();
    const jsm = await jetstreamManager(world.nc);
    await jsm.streams.add({ name: 'TRIGGERS', subjects: ['trig.>'], retention: RetentionPolicy.Limits });
    const js = jetstream(world.nc);
    const inbox = createInbox();
    const replies: TriggerReply[] = [];
    const sub = world.nc.subscribe(inbox, { callback: (_e, m: Msg) => void replies.push(m.json<TriggerReply>()) });
    await js.publish('trig.double', JSON.stringify({ n: 2, waitSeconds: 0 }), { headers: withHeaders({ [REPLY_TO_HEADER]: inbox }) });
    await js.publish('trig.double', JSON.stringify({ n: 3, waitSeconds: 0 }), { headers: withHeaders({ [REPLY_TO_HEADER]: inbox }) });
    await js.publish('trig.double', JSON.stringify({ n: 4, waitSeconds: 0 }), { msgID: 'with-id', headers: withHeaders({ [REPLY_TO_HEADER]: inbox }) });
    const first = await startTrigger({
      connection: world.nc,
      subject: 'trig.double',
      stream: 'TRIGGERS',
      durable: 'first',
      stateMachineArn,
      clients: world.clients(),
    });
    try {
      await eventually(() => assert.equal(replies.length, 3));
      assert.deepEqual(replies.map((r) => [r.status, r.output]).sort(), [
        ['SUCCEEDED', { doubled: 4 }],
        ['SUCCEEDED', { doubled: 6 }],
        ['SUCCEEDED', { doubled: 8 }],
      ]);
      assert.deepEqual((await executions(stateMachineArn)).map((e) => e.name!.replace(/^TRIGGERS-[A-Za-z0-9_]+-/, 'TRIGGERS-<stream>-')).sort(), [
        'TRIGGERS-<stream>-1',
        'TRIGGERS-<stream>-2',
        'with-id',
      ]);
    } finally {
      await first.stop();
    }
    // Another consumer reading the same messages again (as after a lost acknowledgement): same names, same executions.
    const replay = await startTrigger({
      connection: world.nc,
      subject: 'trig.double',
      stream: 'TRIGGERS',
      durable: 'replay',
      stateMachineArn,
      clients: world.clients(),
    });
    try {
      await eventually(() => assert.equal(replies.length, 6));
      assert.equal(replay.stats.started, 3);
      assert.equal((await executions(stateMachineArn)).length, 3);
      await eventually(async () => assert.equal((await jsm.consumers.info('TRIGGERS', 'replay')).num_ack_pending, 0));
    } finally {
      await replay.stop();
      sub.unsubscribe();
    }
  });

  it('consumes a stream deleted and made again as a new stream: its messages start new executions, also in a trigger that kept running', async () => {
    const stateMachineArn = await machine();
    const jsm = await jetstreamManager(world.nc);
    const js = jetstream(world.nc);
    const inbox = createInbox();
    const replies: TriggerReply[] = [];
    const sub = world.nc.subscribe(inbox, { callback: (_e, m: Msg) => void replies.push(m.json<TriggerReply>()) });
    const send = (n: number) => js.publish('anew.double', JSON.stringify({ n, waitSeconds: 0 }), { headers: withHeaders({ [REPLY_TO_HEADER]: inbox }) });
    await jsm.streams.add({ name: 'ANEW', subjects: ['anew.>'], retention: RetentionPolicy.Limits });
    await send(5);
    const options = { connection: world.nc, subject: 'anew.double', stream: 'ANEW', durable: 'anew', stateMachineArn, clients: world.clients() };
    let trigger = await startTrigger(options);
    try {
      await eventually(() => assert.equal(replies.length, 1));
      assert.match((await executions(stateMachineArn))[0]!.name!, /^ANEW-[A-Za-z0-9_]{1,16}-1$/, 'the name tells which stream of that name');
      // The stream is deleted and made again under the trigger: its sequences start at 1 again.
      await jsm.streams.delete('ANEW');
      await jsm.streams.add({ name: 'ANEW', subjects: ['anew.>'], retention: RetentionPolicy.Limits });
      await send(5); // the same input at the same sequence: a new request all the same
      await send(6);
      await eventually(() => assert.equal(replies.length, 3), 20_000);
    } finally {
      await trigger.stop();
    }
    // A trigger started on the new stream reads the same messages again: nothing new.
    await jsm.consumers.delete('ANEW', 'anew');
    trigger = await startTrigger(options);
    try {
      await eventually(() => assert.equal(replies.length, 5), 20_000);
    } finally {
      await trigger.stop();
      sub.unsubscribe();
    }
    assert.ok(
      replies.every((r) => r.status === 'SUCCEEDED'),
      JSON.stringify(replies),
    );
    assert.deepEqual(
      replies.map((r) => r.output),
      [{ doubled: 10 }, { doubled: 10 }, { doubled: 12 }, { doubled: 10 }, { doubled: 12 }],
    );
    assert.equal(new Set(replies.slice(0, 3).map((r) => r.executionArn)).size, 3, 'three executions for three messages');
    assert.deepEqual(
      replies.slice(3).map((r) => r.executionArn),
      replies.slice(1, 3).map((r) => r.executionArn),
      'the replay found them',
    );
    assert.equal((await executions(stateMachineArn)).length, 3);
  });

  it('finds the execution a redelivered stream message started under the name of earlier versions (<stream>-<seq>)', async () => {
    const stateMachineArn = await machine();
    const jsm = await jetstreamManager(world.nc);
    const js = jetstream(world.nc);
    await jsm.streams.add({ name: 'OLDNAMES', subjects: ['oldnames.>'], retention: RetentionPolicy.Limits });
    await jsm.consumers.add('OLDNAMES', { durable_name: 'old', ack_policy: AckPolicy.Explicit, filter_subject: 'oldnames.double' });
    const input = JSON.stringify({ n: 7, waitSeconds: 0 });
    await js.publish('oldnames.double', input);
    // An earlier version took the message, started its execution, and stopped before acknowledging it.
    const taken = await (await js.consumers.get('OLDNAMES', 'old')).next({ expires: 5_000 });
    assert.ok(taken);
    await world.client().send(new StartExecutionCommand({ stateMachineArn, name: 'OLDNAMES-1', input }));
    taken.nak();
    const trigger = await startTrigger({
      connection: world.nc,
      subject: 'oldnames.double',
      stream: 'OLDNAMES',
      durable: 'old',
      stateMachineArn,
      clients: world.clients(),
    });
    try {
      await eventually(async () => assert.equal((await jsm.consumers.info('OLDNAMES', 'old')).num_ack_pending, 0));
      assert.equal(trigger.stats.started, 1);
      assert.deepEqual(
        (await executions(stateMachineArn)).map((e) => e.name),
        ['OLDNAMES-1'],
        'no second execution',
      );
    } finally {
      await trigger.stop();
    }
  });

  it('finds an existing execution of a state machine named by an alias or version ARN', async () => {
    const stateMachineArn = await machine();
    const real = world.client();
    for (const qualified of [`${stateMachineArn}:live`, `${stateMachineArn}:3`]) {
      // As AWS does: a start through an alias or version runs the state machine, and the
      // execution's ARN names the state machine alone (the local endpoint has no aliases).
      const client = {
        send: (command: { input: { stateMachineArn?: string } }) => {
          if (command instanceof StartExecutionCommand && command.input.stateMachineArn === qualified)
            return real.send(new StartExecutionCommand({ ...command.input, stateMachineArn }));
          return real.send(command as StartExecutionCommand);
        },
      } as unknown as SFNClient;
      const subject = `orders.qualified.${qualified.endsWith('live') ? 'alias' : 'version'}`;
      const trigger = await startTrigger({ connection: world.nc, subject, stateMachineArn: qualified, client });
      try {
        const input = JSON.stringify({ n: 1, waitSeconds: 0 });
        const id = `q-${qualified.endsWith('live') ? 'alias' : 'version'}`;
        const first = await ask(subject, input, { 'Nats-Msg-Id': id });
        assert.equal(first.status, 'SUCCEEDED');
        // Its retry: Step Functions says it exists, and the trigger describes it under the right ARN.
        const again = await ask(subject, input, { 'Nats-Msg-Id': id });
        assert.deepEqual(again, first);
        assert.equal(again.executionArn, `${stateMachineArn.replace(':stateMachine:', ':execution:')}:${id}`);
      } finally {
        await trigger.stop();
      }
    }
  });

  it('warns when the outcome cannot be read (a missing states:DescribeExecution), and still replies once it can', async () => {
    const stateMachineArn = await machine();
    const lines: string[] = [];
    const logger = labelledLogger('trigger', lines);
    world.endpoint.deny({ actions: ['DescribeExecution'] });
    const trigger = await startTrigger({ connection: world.nc, subject: 'orders.denied', stateMachineArn, clients: world.clients(), logger });
    try {
      const reply = ask('orders.denied', JSON.stringify({ n: 5, waitSeconds: 0 }), { 'Nats-Msg-Id': 'denied-1' });
      const refused = () => lines.filter((l) => /^trigger warn: .*DescribeExecution.*AccessDeniedException.*states:DescribeExecution/.test(l));
      await eventually(() => assert.equal(refused().length, 1, lines.join('\n')), 8_000, 20);
      world.endpoint.deny(null);
      const r = await reply;
      assert.equal(r.status, 'SUCCEEDED');
      assert.deepEqual(r.output, { doubled: 10 });
    } finally {
      world.endpoint.deny(null);
      await trigger.stop();
    }
  });

  it('starts through throttling, backing off', async () => {
    const stateMachineArn = await machine();
    const trigger = await startTrigger({ connection: world.nc, subject: 'orders.thr', stateMachineArn, clients: world.clients() });
    try {
      world.endpoint.resetStats();
      world.endpoint.throttle({ count: 3, actions: ['StartExecution'] });
      const r = await ask('orders.thr', JSON.stringify({ n: 5, waitSeconds: 0 }), { 'Nats-Msg-Id': 'thr-1' });
      assert.equal(r.status, 'SUCCEEDED');
      assert.equal(world.endpoint.stats().byAction.StartExecution, 4);
      assert.equal((await executions(stateMachineArn)).length, 1);
    } finally {
      await trigger.stop();
    }
  });
});
