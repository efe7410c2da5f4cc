/**
 * The Step Functions adapter's helpers on a stream in another JetStream domain: from the hub's
 * NATS, the task-token stream, the forwarder and the callback server work on a stream kept in an
 * edge site's own JetStream (domain `edge`), and a trigger consumes a site stream. Before the
 * `domain` option they reached only the connection's own JetStream (the hub's).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { StartExecutionCommand } from '@aws-sdk/client-sfn';
import { jetstream, jetstreamManager, RetentionPolicy } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { ensureTaskTokenStream, serveCallbackTasks, taskTokenForwarder, type TaskTokenForwarder } from '../../adapters/step-functions/callback.js';
import { startTrigger } from '../../adapters/step-functions/trigger.js';
import { eventually } from '../helpers.js';
import { startSfnWorld, type SfnWorld } from '../sfn/world.js';
import { startTopology, type Topology } from './topology.js';

const DOMAIN = 'edge';
const TOKENS = 'SITE_TOKENS';

describe('Step Functions helpers with a JetStream domain', () => {
  let topo: Topology | undefined;
  let hubNc: NatsConnection | undefined;
  let siteNc: NatsConnection | undefined;
  let world: SfnWorld | undefined;
  let forward: TaskTokenForwarder | undefined;

  before(async () => {
    topo = await startTopology({ leafJetStream: true });
    hubNc = await connect({ servers: topo.hub.url });
    siteNc = await connect({ servers: topo.leaf.url });
    const nc = hubNc;
    forward = taskTokenForwarder({ connection: nc, domain: DOMAIN, subject: 'site.tokens.cb', stream: TOKENS });
    world = await startSfnWorld({ nats: false, taskHandlers: () => ({ forward: (payload) => forward!(payload) }) });
  });
  after(async () => {
    await world?.close();
    await hubNc?.close();
    await siteNc?.close();
    await topo?.dispose();
  });

  it('keeps task tokens in the site stream and answers them from the hub', async () => {
    await ensureTaskTokenStream({ connection: hubNc!, domain: DOMAIN, stream: TOKENS, subjects: ['site.tokens.>'] });
    // The stream is the site's, not the hub's.
    assert.equal((await (await jetstreamManager(siteNc!)).streams.info(TOKENS)).config.name, TOKENS);
    await assert.rejects((await jetstreamManager(hubNc!)).streams.info(TOKENS), /not found/i);

    const arn = await world!.createStateMachine('site-callback', {
      StartAt: 'Callback',
      States: {
        Callback: {
          Type: 'Task',
          Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken',
          Parameters: { FunctionName: 'forward', Payload: { 'taskToken.$': '$$.Task.Token', 'input.$': '$' } },
          TimeoutSeconds: 30,
          End: true,
        },
      },
    });
    const server = await serveCallbackTasks({
      connection: hubNc!,
      domain: DOMAIN,
      stream: TOKENS,
      subject: 'site.tokens.cb',
      durable: 'cb',
      clients: world!.clients(),
      handler: async ({ input }) => ({ doubled: (input as { n: number }).n * 2 }),
    });
    try {
      const execution = await world!.client().send(new StartExecutionCommand({ stateMachineArn: arn, input: JSON.stringify({ n: 21 }) }));
      const ended = await world!.waitForEnd(execution.executionArn!, 30_000);
      assert.equal(ended.status, 'SUCCEEDED');
      assert.deepEqual(JSON.parse(ended.output!), { doubled: 42 });
      assert.equal(server.stats.succeeded, 1);
      // Answered and acknowledged: the work queue at the site is empty.
      await eventually(async () => assert.equal((await (await jetstreamManager(siteNc!)).streams.info(TOKENS)).state.messages, 0));
    } finally {
      await server.stop();
    }
  });

  it('refuses a token stored in another domain than the forwarder names, and a domain without a stream', async () => {
    await ensureTaskTokenStream({ connection: hubNc!, domain: DOMAIN, stream: TOKENS, subjects: ['site.tokens.>'] });
    const wrong = taskTokenForwarder({ connection: hubNc!, domain: 'hub', subject: 'site.tokens.elsewhere' });
    await assert.rejects(wrong({ taskToken: 'tok-1', input: {} }), /stored by stream 'SITE_TOKENS' in JetStream domain 'edge', not in 'hub'/);
    assert.throws(() => taskTokenForwarder({ connection: hubNc!, domain: 'a.b', subject: 'site.tokens.x' }), /domain 'a\.b' is not a JetStream domain name/);
    await assert.rejects(
      startTrigger({
        connection: hubNc!,
        domain: DOMAIN,
        subject: 'site.core',
        queue: 'q',
        stateMachineArn: 'arn:aws:states:us-east-1:123456789012:stateMachine:x',
        clients: world!.clients(),
      }),
      /'domain' is the JetStream domain of 'stream'/,
    );
  });

  it('starts executions from a site stream with a trigger in the hub', async () => {
    const siteJsm = await jetstreamManager(siteNc!);
    await siteJsm.streams.add({ name: 'SITE_STARTS', subjects: ['site.starts.>'], retention: RetentionPolicy.Limits });
    const arn = await world!.createStateMachine('site-echo', { StartAt: 'Echo', States: { Echo: { Type: 'Pass', End: true } } });
    const trigger = await startTrigger({
      connection: hubNc!,
      domain: DOMAIN,
      stream: 'SITE_STARTS',
      durable: 'starts',
      subject: 'site.starts.>',
      stateMachineArn: arn,
      clients: world!.clients(),
    });
    try {
      const h = headers();
      h.set('Nats-Msg-Id', 'order-7');
      await jetstream(siteNc!).publish('site.starts.order', JSON.stringify({ orderId: 'o-7' }), { headers: h });
      await eventually(() => assert.equal(trigger.stats.started, 1), 15_000);
    } finally {
      await trigger.stop();
    }
  });
});
