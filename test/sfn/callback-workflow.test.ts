// A jetstate workflow answers a `.waitForTaskToken` callback task: the execution waits while a
// durable instance (here a review that a person approves) runs, and gets its output, or fails with
// its error.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { StartExecutionCommand } from '@aws-sdk/client-sfn';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { ensureTaskTokenStream, serveCallbackTasks, taskTokenForwarder, type CallbackTaskServer } from '../../adapters/step-functions/callback.js';
import { workflowHandler } from '../../adapters/step-functions/workflow-answer.js';
import { activity, createEngine, defineWorkflow, TerminalError, type Engine } from '../../engine/index.js';
import { eventually, uniqueNamespace } from '../helpers.js';
import { startSfnWorld, type SfnWorld } from './world.js';

const STREAM = 'SFN_REVIEW_TOKENS';

const review = defineWorkflow({
  name: 'review',
  version: 1,
  input: z.object({ claim: z.string(), amount: z.number() }),
  events: { APPROVE: z.object({ by: z.string() }) },
  machine: setup({
    types: { context: {} as { claim: string; amount: number; by?: string }, input: {} as { claim: string; amount: number } },
    actors: {
      // Large claims are refused outright; nothing handles the error, so the instance fails.
      screen: activity<{ amount: number }, { ok: true }>(async ({ input }) => {
        if (input.amount > 1_000) throw new TerminalError(`claim of ${input.amount} is over the limit`);
        return { ok: true };
      }),
    },
  }).createMachine({
    context: ({ input }) => ({ ...input }),
    initial: 'screening',
    states: {
      screening: { invoke: { src: 'screen', input: ({ context }) => ({ amount: context.amount }), onDone: 'waiting' } },
      waiting: { on: { APPROVE: { target: 'approved', actions: assign({ by: ({ event }) => event.by }) } } },
      approved: { type: 'final' },
    },
    output: ({ context }) => ({ claim: context.claim, approvedBy: context.by }),
  }),
});

const machine = {
  StartAt: 'Review',
  States: {
    Review: {
      Type: 'Task',
      Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken',
      Parameters: { FunctionName: 'forward', Payload: { 'taskToken.$': '$$.Task.Token', 'input.$': '$' } },
      TimeoutSeconds: 60,
      End: true,
    },
  },
};

describe('a jetstate workflow answers a callback task', () => {
  let world: SfnWorld;
  let engine: Engine;
  let server: CallbackTaskServer;
  let stateMachineArn: string;

  before(async () => {
    world = await startSfnWorld({
      taskHandlers: (nc) => ({ forward: (payload) => taskTokenForwarder({ connection: nc!, subject: 'sfn.review', stream: STREAM })(payload) }),
    });
    await ensureTaskTokenStream({ connection: world.nc, stream: STREAM, subjects: ['sfn.review'] });
    engine = await createEngine({ servers: world.nats!.url, namespace: uniqueNamespace('cbwf'), workflows: [review] });
    server = await serveCallbackTasks({
      connection: world.nc,
      stream: STREAM,
      subject: 'sfn.review',
      durable: 'review',
      clients: world.clients(),
      heartbeatIntervalMs: 500,
      handler: workflowHandler({ client: engine, workflow: review, input: (i) => i as { claim: string; amount: number }, pollIntervalMs: 100 }),
    });
    stateMachineArn = await world.createStateMachine('review', machine);
  });
  after(async () => {
    await server?.stop();
    await engine?.close();
    await world?.close();
  });

  const start = async (input: object): Promise<string> =>
    (await world.client().send(new StartExecutionCommand({ stateMachineArn, input: JSON.stringify(input) }))).executionArn!;

  it('answers with the instance output once a person approved it', async () => {
    const executionArn = await start({ claim: 'c-1', amount: 200 });
    // The instance waits for a person; the execution waits for the instance.
    const instance = await eventually(async () => {
      let found: { id: string } | undefined;
      for await (const i of engine.list(review, { state: 'waiting' })) found = i;
      assert.ok(found, 'the review instance waits for approval');
      return found;
    });
    assert.equal((await world.client().send(new (await import('@aws-sdk/client-sfn')).DescribeExecutionCommand({ executionArn }))).status, 'RUNNING');
    await engine.send(review, instance.id, { type: 'APPROVE', by: 'grace' });
    const d = await world.waitForEnd(executionArn, 15_000);
    assert.equal(d.status, 'SUCCEEDED', d.cause);
    assert.deepEqual(JSON.parse(d.output!), { claim: 'c-1', approvedBy: 'grace' });
  });

  it('fails the task with the instance error when it fails', async () => {
    const d = await world.waitForEnd(await start({ claim: 'c-2', amount: 5_000 }), 15_000);
    assert.equal(d.status, 'FAILED');
    assert.equal(d.error, 'jetstate.WorkflowFailed');
    assert.match(d.cause ?? '', /over the limit/);
  });
});
