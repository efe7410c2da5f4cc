import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  ActivityDoesNotExist,
  CreateActivityCommand,
  CreateStateMachineCommand,
  DescribeActivityCommand,
  DescribeExecutionCommand,
  GetActivityTaskCommand,
  GetExecutionHistoryCommand,
  InvalidOutput,
  InvalidToken,
  ListActivitiesCommand,
  SendTaskFailureCommand,
  SendTaskHeartbeatCommand,
  SendTaskSuccessCommand,
  StartExecutionCommand,
  StopExecutionCommand,
  TaskTimedOut,
  type SFNClient,
} from '@aws-sdk/client-sfn';
import { startLocalStepFunctions, type LocalStepFunctions, type TaskHandlerContext } from '../../adapters/local/step-functions/server.js';
import { eventually } from '../helpers.js';
import { ROLE, asl, sfnClient, waitForStatus } from './sfn-local-helpers.js';

const ACTIVITY = 'arn:aws:states:us-east-1:123456789012:activity:pack';

describe('sfn-local: activities, callback tasks and Lambda handlers', () => {
  let local: LocalStepFunctions;
  let sfn: SFNClient;
  const calls: Array<{ fn: string; payload: unknown; ctx: TaskHandlerContext }> = [];
  let approvals: Array<{ token: string; payload: unknown }> = [];
  const machine = async (name: string, definition: object): Promise<string> =>
    (await sfn.send(new CreateStateMachineCommand({ name, definition: asl(definition), roleArn: ROLE }))).stateMachineArn!;
  const start = async (stateMachineArn: string, name: string, input: unknown = {}): Promise<string> =>
    (await sfn.send(new StartExecutionCommand({ stateMachineArn, name, input: JSON.stringify(input) }))).executionArn!;
  const poll = (workerName = 'w1') => sfn.send(new GetActivityTaskCommand({ activityArn: ACTIVITY, workerName }));

  before(async () => {
    local = await startLocalStepFunctions({
      activityPollTimeoutMs: 1_000,
      taskHandlers: {
        price: (payload, ctx) => {
          calls.push({ fn: 'price', payload, ctx });
          const p = payload as { qty: number };
          if (p.qty < 0) throw Object.assign(new Error('qty must be ≥ 0'), { name: 'Pricing.BadQuantity' });
          return { total: p.qty * 3 };
        },
        requestApproval: (payload, ctx) => {
          calls.push({ fn: 'requestApproval', payload, ctx });
          approvals.push({ token: (payload as { token: string }).token, payload });
          return 'ignored';
        },
      },
    });
    sfn = sfnClient(local);
    const created = await sfn.send(new CreateActivityCommand({ name: 'pack' }));
    assert.equal(created.activityArn, ACTIVITY);
  });
  after(async () => {
    sfn?.destroy();
    await local?.close();
  });

  it('hands an activity task to GetActivityTask and completes it with SendTaskSuccess', async () => {
    assert.equal((await sfn.send(new CreateActivityCommand({ name: 'pack' }))).activityArn, ACTIVITY, 'CreateActivity is idempotent');
    assert.equal((await sfn.send(new DescribeActivityCommand({ activityArn: ACTIVITY }))).name, 'pack');
    assert.deepEqual(
      (await sfn.send(new ListActivitiesCommand({}))).activities?.map((a) => a.activityArn),
      [ACTIVITY],
    );
    const m = await machine('packing', {
      StartAt: 'Pack',
      States: {
        Pack: { Type: 'Task', Resource: ACTIVITY, Parameters: { 'order.$': '$.orderId', 'execution.$': '$$.Execution.Id' }, ResultPath: '$.packed', End: true },
      },
    });
    const executionArn = await start(m, 'pack-1', { orderId: 'o-1' });
    const task = await poll();
    assert.ok(task.taskToken && task.taskToken.length > 40);
    assert.deepEqual(JSON.parse(task.input!), { order: 'o-1', execution: executionArn });
    await sfn.send(new SendTaskSuccessCommand({ taskToken: task.taskToken, output: '{"box":"B7"}' }));
    const done = await waitForStatus(sfn, executionArn);
    assert.equal(done.status, 'SUCCEEDED');
    assert.deepEqual(JSON.parse(done.output!), { orderId: 'o-1', packed: { box: 'B7' } });
    const types = (await sfn.send(new GetExecutionHistoryCommand({ executionArn }))).events!.map((e) => e.type);
    assert.deepEqual(types, [
      'ExecutionStarted',
      'TaskStateEntered',
      'ActivityScheduled',
      'ActivityStarted',
      'ActivitySucceeded',
      'TaskStateExited',
      'ExecutionSucceeded',
    ]);
    await assert.rejects(sfn.send(new SendTaskSuccessCommand({ taskToken: task.taskToken, output: '{}' })), TaskTimedOut, 'an answered token is gone');
  });

  it('answers an empty poll after the poll timeout, and refuses unknown activities and tokens', async () => {
    const empty = await poll();
    assert.equal(empty.taskToken, undefined);
    assert.equal(empty.input, undefined);
    await assert.rejects(sfn.send(new GetActivityTaskCommand({ activityArn: `${ACTIVITY}-nope` })), ActivityDoesNotExist);
    await assert.rejects(sfn.send(new SendTaskSuccessCommand({ taskToken: 'AQCnot-a-token', output: '{}' })), InvalidToken);
    await assert.rejects(sfn.send(new SendTaskHeartbeatCommand({ taskToken: 'AQCnot-a-token' })), InvalidToken);
  });

  it('fails an activity task with SendTaskFailure: Catch sees the error, or the execution fails with it', async () => {
    const m = await machine('packing-fails', {
      StartAt: 'Pack',
      States: {
        Pack: { Type: 'Task', Resource: ACTIVITY, Catch: [{ ErrorEquals: ['Pack.NoBoxes'], ResultPath: '$.why', Next: 'Backorder' }], End: true },
        Backorder: { Type: 'Pass', End: true },
      },
    });
    const caught = await start(m, 'fails-1', { orderId: 'o-2' });
    const t1 = await poll();
    await assert.rejects(sfn.send(new SendTaskSuccessCommand({ taskToken: t1.taskToken, output: 'not json' })), InvalidOutput);
    await sfn.send(new SendTaskFailureCommand({ taskToken: t1.taskToken, error: 'Pack.NoBoxes', cause: 'shelf empty' }));
    const d1 = await waitForStatus(sfn, caught);
    assert.equal(d1.status, 'SUCCEEDED');
    assert.deepEqual(JSON.parse(d1.output!), { orderId: 'o-2', why: { Error: 'Pack.NoBoxes', Cause: 'shelf empty' } });

    const uncaught = await start(m, 'fails-2');
    const t2 = await poll();
    await sfn.send(new SendTaskFailureCommand({ taskToken: t2.taskToken, error: 'Pack.Jammed', cause: 'belt stuck' }));
    const d2 = await waitForStatus(sfn, uncaught);
    assert.equal(d2.status, 'FAILED');
    assert.equal(d2.error, 'Pack.Jammed');
    assert.equal(d2.cause, 'belt stuck');
  });

  it('keeps an activity task alive with SendTaskHeartbeat and times it out when heartbeats stop', async () => {
    const m = await machine('packing-heartbeat', { StartAt: 'Pack', States: { Pack: { Type: 'Task', Resource: ACTIVITY, HeartbeatSeconds: 2, End: true } } });
    const executionArn = await start(m, 'hb-1');
    const task = await poll();
    // Heartbeats half a second apart keep it alive past its 2 s.
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 500));
      await sfn.send(new SendTaskHeartbeatCommand({ taskToken: task.taskToken }));
    }
    assert.equal((await sfn.send(new DescribeExecutionCommand({ executionArn }))).status, 'RUNNING');
    const d = await waitForStatus(sfn, executionArn, undefined, 6_000);
    assert.equal(d.status, 'FAILED');
    assert.equal(d.error, 'States.Timeout');
    assert.match(d.cause!, /HeartbeatSeconds \(2 s\)/);
    await assert.rejects(sfn.send(new SendTaskHeartbeatCommand({ taskToken: task.taskToken })), TaskTimedOut);
    await assert.rejects(sfn.send(new SendTaskSuccessCommand({ taskToken: task.taskToken, output: '{}' })), TaskTimedOut);
    const types = (await sfn.send(new GetExecutionHistoryCommand({ executionArn }))).events!.map((e) => e.type);
    assert.ok(types.includes('ActivityTimedOut'), types.join());
  });

  it('calls a taskHandler for lambda:invoke.waitForTaskToken with $$.Task.Token and waits for SendTaskSuccess', async () => {
    approvals = [];
    const m = await machine('approval', {
      StartAt: 'Ask',
      States: {
        Ask: {
          Type: 'Task',
          Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken',
          Parameters: {
            FunctionName: 'arn:aws:lambda:us-east-1:123456789012:function:requestApproval:live',
            Payload: { 'token.$': '$$.Task.Token', 'who.$': '$.who' },
          },
          HeartbeatSeconds: 30,
          ResultPath: '$.decision',
          End: true,
        },
      },
    });
    const a = await start(m, 'approve-1', { who: 'ada' });
    const b = await start(m, 'approve-2', { who: 'bo' });
    await eventually(() => assert.equal(approvals.length, 2));
    const [ada, bo] = [
      approvals.find((x) => (x.payload as { who: string }).who === 'ada')!,
      approvals.find((x) => (x.payload as { who: string }).who === 'bo')!,
    ];
    assert.notEqual(ada.token, bo.token, 'each task gets its own token');
    const call = calls.find((c) => c.fn === 'requestApproval' && c.ctx.executionArn === a)!;
    assert.equal(call.ctx.taskToken, ada.token);
    assert.equal(call.ctx.stateName, 'Ask');
    assert.equal(call.ctx.functionName, 'requestApproval');
    await sfn.send(new SendTaskHeartbeatCommand({ taskToken: ada.token }));
    await sfn.send(new SendTaskSuccessCommand({ taskToken: ada.token, output: '{"approved":true}' }));
    await sfn.send(new SendTaskFailureCommand({ taskToken: bo.token, error: 'Approval.Denied', cause: 'no budget' }));
    const da = await waitForStatus(sfn, a);
    assert.equal(da.status, 'SUCCEEDED');
    assert.deepEqual(JSON.parse(da.output!), { who: 'ada', decision: { approved: true } });
    const db = await waitForStatus(sfn, b);
    assert.equal(db.status, 'FAILED');
    assert.equal(db.error, 'Approval.Denied');
    const types = (await sfn.send(new GetExecutionHistoryCommand({ executionArn: a }))).events!.map((e) => e.type);
    assert.deepEqual(types, ['ExecutionStarted', 'TaskStateEntered', 'TaskScheduled', 'TaskSucceeded', 'TaskStateExited', 'ExecutionSucceeded']);
  });

  it('times a callback task out after its TimeoutSeconds; the token is then gone', async () => {
    approvals = [];
    const m = await machine('approval-timeout', {
      StartAt: 'Ask',
      States: {
        Ask: {
          Type: 'Task',
          Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken',
          Parameters: { FunctionName: 'requestApproval', Payload: { 'token.$': '$$.Task.Token', who: 'cy' } },
          TimeoutSeconds: 1,
          Catch: [{ ErrorEquals: ['States.TaskFailed'], Next: 'WronglyCaught' }],
          End: true,
        },
        WronglyCaught: { Type: 'Pass', End: true },
      },
    });
    const executionArn = await start(m, 'timeout-1');
    await eventually(() => assert.equal(approvals.length, 1));
    const d = await waitForStatus(sfn, executionArn, undefined, 5_000);
    assert.equal(d.status, 'FAILED', 'States.TaskFailed does not catch States.Timeout');
    assert.equal(d.error, 'States.Timeout');
    await assert.rejects(sfn.send(new SendTaskSuccessCommand({ taskToken: approvals[0]!.token, output: '{}' })), TaskTimedOut);
  });

  it('runs lambda:invoke and Lambda function ARNs through taskHandlers; a thrown error is Retry/Catch-able by name', async () => {
    const m = await machine('pricing', {
      StartAt: 'Price',
      States: {
        Price: {
          Type: 'Task',
          Resource: 'arn:aws:states:::lambda:invoke',
          Parameters: { FunctionName: 'price', 'Payload.$': '$' },
          ResultSelector: { 'total.$': '$.Payload.total', 'code.$': '$.StatusCode' },
          Catch: [{ ErrorEquals: ['Pricing.BadQuantity'], ResultPath: '$.error', Next: 'Rejected' }],
          Next: 'Again',
        },
        Again: { Type: 'Task', Resource: 'arn:aws:lambda:us-east-1:123456789012:function:price', Parameters: { 'qty.$': '$.total' }, End: true },
        Rejected: { Type: 'Pass', End: true },
      },
    });
    const ok = await waitForStatus(sfn, await start(m, 'price-1', { qty: 2 }));
    assert.equal(ok.status, 'SUCCEEDED');
    assert.deepEqual(JSON.parse(ok.output!), { total: 18 });
    const bad = await waitForStatus(sfn, await start(m, 'price-2', { qty: -1 }));
    assert.equal(bad.status, 'SUCCEEDED');
    const error = JSON.parse(bad.output!).error as { Error: string; Cause: string };
    assert.equal(error.Error, 'Pricing.BadQuantity');
    assert.deepEqual(JSON.parse(error.Cause), { errorMessage: 'qty must be ≥ 0', errorType: 'Pricing.BadQuantity' });
  });

  it('fails the execution, naming the resource, for a service integration or function it does not run; no Catch hides it', async () => {
    const m = await machine('notify', {
      StartAt: 'Notify',
      States: {
        Notify: {
          Type: 'Task',
          Resource: 'arn:aws:states:::sqs:sendMessage',
          Parameters: { QueueUrl: 'https://sqs.us-east-1.amazonaws.com/123456789012/q', MessageBody: 'hi' },
          Catch: [{ ErrorEquals: ['States.ALL'], Next: 'Hidden' }],
          End: true,
        },
        Hidden: { Type: 'Pass', End: true },
      },
    });
    const d = await waitForStatus(sfn, await start(m, 'sqs-1'));
    assert.equal(d.status, 'FAILED');
    assert.equal(d.error, 'States.Runtime');
    assert.match(d.cause!, /sfn-local does not run the Task resource 'arn:aws:states:::sqs:sendMessage' \(state 'Notify'/);

    const f = await machine('unknown-fn', {
      StartAt: 'Call',
      States: { Call: { Type: 'Task', Resource: 'arn:aws:lambda:us-east-1:123456789012:function:nobody', End: true } },
    });
    const d2 = await waitForStatus(sfn, await start(f, 'fn-1'));
    assert.equal(d2.status, 'FAILED');
    assert.match(d2.cause!, /does not run the Lambda function 'nobody'.*no taskHandler named 'nobody'/);

    const noToken = await machine('no-token', {
      StartAt: 'Ask',
      States: {
        Ask: {
          Type: 'Task',
          Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken',
          Parameters: { FunctionName: 'requestApproval', Payload: {} },
          End: true,
        },
      },
    });
    const d3 = await waitForStatus(sfn, await start(noToken, 'nt-1'));
    assert.equal(d3.status, 'FAILED');
    assert.match(d3.cause!, /do not pass \$\$\.Task\.Token/);
  });

  it('runs Task states nested in Map and Parallel, each iteration with its own handler call and token', async () => {
    approvals = [];
    const m = await machine('fan-out', {
      StartAt: 'Each',
      States: {
        Each: {
          Type: 'Map',
          ItemsPath: '$.items',
          ItemSelector: { 'qty.$': '$$.Map.Item.Value', 'index.$': '$$.Map.Item.Index' },
          ItemProcessor: {
            StartAt: 'Both',
            States: {
              Both: {
                Type: 'Parallel',
                Branches: [
                  { StartAt: 'PriceIt', States: { PriceIt: { Type: 'Task', Resource: 'arn:aws:lambda:us-east-1:123456789012:function:price', End: true } } },
                  {
                    StartAt: 'AskIt',
                    States: {
                      AskIt: {
                        Type: 'Task',
                        Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken',
                        Parameters: { FunctionName: 'requestApproval', Payload: { 'token.$': '$$.Task.Token', 'who.$': "States.Format('item {}', $.index)" } },
                        End: true,
                      },
                    },
                  },
                ],
                End: true,
              },
            },
          },
          End: true,
        },
      },
    });
    const executionArn = await start(m, 'fan-1', { items: [1, 2, 3] });
    await eventually(() => assert.equal(approvals.length, 3));
    assert.equal(new Set(approvals.map((a) => a.token)).size, 3);
    for (const a of approvals) await sfn.send(new SendTaskSuccessCommand({ taskToken: a.token, output: JSON.stringify((a.payload as { who: string }).who) }));
    const d = await waitForStatus(sfn, executionArn);
    assert.equal(d.status, 'SUCCEEDED', d.cause);
    assert.deepEqual(JSON.parse(d.output!), [
      [{ total: 3 }, 'item 0'],
      [{ total: 6 }, 'item 1'],
      [{ total: 9 }, 'item 2'],
    ]);
  });

  it('closes the tasks of a stopped execution: its activity task is no longer handed out and its token is gone', async () => {
    const m = await machine('packing-stopped', { StartAt: 'Pack', States: { Pack: { Type: 'Task', Resource: ACTIVITY, End: true } } });
    const first = await start(m, 'stopped-1');
    const task = await poll();
    const second = await start(m, 'stopped-2');
    await sfn.send(new StopExecutionCommand({ executionArn: first }));
    await sfn.send(new StopExecutionCommand({ executionArn: second }));
    await assert.rejects(sfn.send(new SendTaskSuccessCommand({ taskToken: task.taskToken, output: '{}' })), TaskTimedOut);
    assert.equal((await poll()).taskToken, undefined, "the stopped execution's queued task is withdrawn");
  });
});

describe('sfn-local close', () => {
  it('closes at once with a long poll in flight and executions waiting, answering the poll with no task', async () => {
    const local = await startLocalStepFunctions({ activityPollTimeoutMs: 60_000 });
    const sfn = sfnClient(local);
    try {
      const { activityArn } = await sfn.send(new CreateActivityCommand({ name: 'idle' }));
      const { stateMachineArn } = await sfn.send(
        new CreateStateMachineCommand({
          name: 'waiting',
          definition: asl({ StartAt: 'W', States: { W: { Type: 'Wait', Seconds: 600, Next: 'T' }, T: { Type: 'Task', Resource: activityArn!, End: true } } }),
          roleArn: ROLE,
        }),
      );
      await sfn.send(new StartExecutionCommand({ stateMachineArn }));
      const polling = sfn.send(new GetActivityTaskCommand({ activityArn }));
      await new Promise((r) => setTimeout(r, 100));
      await local.close();
      assert.equal((await polling).taskToken, undefined);
    } finally {
      sfn.destroy();
      await local.close();
    }
  });
});
