import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  CreateStateMachineCommand,
  DeleteStateMachineCommand,
  DescribeExecutionCommand,
  DescribeStateMachineCommand,
  ExecutionAlreadyExists,
  ExecutionDoesNotExist,
  GetExecutionHistoryCommand,
  InvalidDefinition,
  InvalidExecutionInput,
  InvalidName,
  ListExecutionsCommand,
  ListStateMachinesCommand,
  SFNServiceException,
  StartExecutionCommand,
  StateMachineDoesNotExist,
  StopExecutionCommand,
  UpdateStateMachineCommand,
  type SFNClient,
} from '@aws-sdk/client-sfn';
import { fromTemporaryCredentials } from '@aws-sdk/credential-providers';
import { startLocalSts, type LocalSts } from '../../adapters/local/aws/sts.js';
import { startLocalStepFunctions, type EventBridgeExecutionStatusEvent, type LocalStepFunctions } from '../../adapters/local/step-functions/server.js';
import { eventually } from '../helpers.js';
import { ROLE, asl, sfnClient, waitForStatus } from './sfn-local-helpers.js';

const HELLO = asl({
  StartAt: 'Greet',
  States: {
    Greet: {
      Type: 'Pass',
      Parameters: { 'greeting.$': "States.Format('hello {}', $.who)", 'execution.$': '$$.Execution.Name', 'machine.$': '$$.StateMachine.Name' },
      Next: 'Check',
    },
    Check: { Type: 'Choice', Choices: [{ Variable: '$.greeting', StringEquals: 'hello fail', Next: 'Boom' }], Default: 'Done' },
    Boom: { Type: 'Fail', Error: 'Greeting.Refused', Cause: 'nobody greets fail' },
    Done: { Type: 'Succeed' },
  },
});
const SLOW = asl({ StartAt: 'Nap', States: { Nap: { Type: 'Wait', Seconds: 30, End: true } } });
const SHORT_FUSE = asl({ TimeoutSeconds: 1, StartAt: 'Nap', States: { Nap: { Type: 'Wait', Seconds: 30, End: true } } });

describe('sfn-local: the Step Functions endpoint core, through @aws-sdk/client-sfn', () => {
  let local: LocalStepFunctions;
  let sfn: SFNClient;
  const events: EventBridgeExecutionStatusEvent[] = [];
  const arns: Record<string, string> = {};
  const create = async (name: string, definition: string): Promise<string> =>
    (await sfn.send(new CreateStateMachineCommand({ name, definition, roleArn: ROLE }))).stateMachineArn!;

  before(async () => {
    local = await startLocalStepFunctions({ onStatusChange: (e) => events.push(e) });
    sfn = sfnClient(local);
    arns['hello'] = await create('hello', HELLO);
    arns['slow'] = await create('slow', SLOW);
    arns['fuse'] = await create('fuse', SHORT_FUSE);
  });
  after(async () => {
    sfn?.destroy();
    await local?.close();
  });

  it('creates, describes and lists state machines with AWS ARNs; creating the same again is idempotent', async () => {
    assert.equal(arns['hello'], 'arn:aws:states:us-east-1:123456789012:stateMachine:hello');
    const d = await sfn.send(new DescribeStateMachineCommand({ stateMachineArn: arns['hello'] }));
    assert.equal(d.definition, HELLO);
    assert.equal(d.status, 'ACTIVE');
    assert.equal(d.type, 'STANDARD');
    assert.ok(d.creationDate instanceof Date);
    assert.equal(await create('hello', HELLO), arns['hello']);
    await assert.rejects(sfn.send(new CreateStateMachineCommand({ name: 'hello', definition: SLOW, roleArn: ROLE })), { name: 'StateMachineAlreadyExists' });
    const listed = await sfn.send(new ListStateMachinesCommand({}));
    assert.deepEqual(
      listed.stateMachines?.map((m) => m.name),
      ['fuse', 'hello', 'slow'],
    );
    await assert.rejects(
      sfn.send(new DescribeStateMachineCommand({ stateMachineArn: 'arn:aws:states:us-east-1:123456789012:stateMachine:nope' })),
      StateMachineDoesNotExist,
    );
    await assert.rejects(sfn.send(new DescribeStateMachineCommand({ stateMachineArn: 'not-an-arn' })), { name: 'InvalidArn' });
  });

  it('runs an execution to SUCCEEDED with its output, history and status events', async () => {
    const started = await sfn.send(new StartExecutionCommand({ stateMachineArn: arns['hello'], name: 'ok-1', input: '{"who":"ada"}' }));
    assert.equal(started.executionArn, 'arn:aws:states:us-east-1:123456789012:execution:hello:ok-1');
    const done = await waitForStatus(sfn, started.executionArn!);
    assert.equal(done.status, 'SUCCEEDED');
    assert.deepEqual(JSON.parse(done.output!), { greeting: 'hello ada', execution: 'ok-1', machine: 'hello' });
    assert.equal(done.input, '{"who":"ada"}');
    assert.ok(done.stopDate! >= done.startDate!);
    const history = await sfn.send(new GetExecutionHistoryCommand({ executionArn: started.executionArn }));
    const types = history.events!.map((e) => e.type);
    assert.deepEqual(types, [
      'ExecutionStarted',
      'PassStateEntered',
      'PassStateExited',
      'ChoiceStateEntered',
      'ChoiceStateExited',
      'SucceedStateEntered',
      'SucceedStateExited',
      'ExecutionSucceeded',
    ]);
    assert.deepEqual(
      history.events!.map((e) => e.id),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    const mine = await eventually(() => {
      const list = events.filter((e) => e.resources[0] === started.executionArn);
      assert.equal(list.length, 2);
      return list;
    });
    assert.deepEqual(
      mine.map((e) => e.detail.status),
      ['RUNNING', 'SUCCEEDED'],
    );
    const end = mine[1]!;
    assert.equal(end['detail-type'], 'Step Functions Execution Status Change');
    assert.equal(end.source, 'aws.states');
    assert.equal(end.account, '123456789012');
    assert.equal(end.region, 'us-east-1');
    assert.equal(end.detail.startDate, done.startDate!.getTime());
    assert.equal(end.detail.stopDate, done.stopDate!.getTime());
    assert.equal(end.detail.output, done.output);
    assert.equal(mine[0]!.detail.stopDate, null);
  });

  it('fails an execution at a Fail state with its error and cause', async () => {
    const { executionArn } = await sfn.send(new StartExecutionCommand({ stateMachineArn: arns['hello'], name: 'fail-1', input: '{"who":"fail"}' }));
    const done = await waitForStatus(sfn, executionArn!);
    assert.equal(done.status, 'FAILED');
    assert.equal(done.error, 'Greeting.Refused');
    assert.equal(done.cause, 'nobody greets fail');
    assert.equal(done.output, undefined);
    const history = await sfn.send(new GetExecutionHistoryCommand({ executionArn, reverseOrder: true, maxResults: 1 }));
    assert.equal(history.events![0]!.type, 'ExecutionFailed');
    assert.deepEqual(history.events![0]!.executionFailedEventDetails, { error: 'Greeting.Refused', cause: 'nobody greets fail' });
    assert.ok(history.nextToken);
  });

  it("times an execution out after the definition's TimeoutSeconds", async () => {
    const { executionArn } = await sfn.send(new StartExecutionCommand({ stateMachineArn: arns['fuse'], name: 'fuse-1' }));
    const done = await waitForStatus(sfn, executionArn!, undefined, 5_000);
    assert.equal(done.status, 'TIMED_OUT');
    assert.equal(done.error, 'States.Timeout');
    assert.ok(events.some((e) => e.resources[0] === executionArn && e.detail.status === 'TIMED_OUT'));
  });

  it('stops an execution: ABORTED with the given error and cause, at once', async () => {
    const { executionArn } = await sfn.send(new StartExecutionCommand({ stateMachineArn: arns['slow'], name: 'stop-1' }));
    const { stopDate } = await sfn.send(new StopExecutionCommand({ executionArn, error: 'Ops.Cancelled', cause: 'operator said so' }));
    const d = await sfn.send(new DescribeExecutionCommand({ executionArn }));
    assert.equal(d.status, 'ABORTED');
    assert.equal(d.error, 'Ops.Cancelled');
    assert.equal(d.cause, 'operator said so');
    assert.equal(d.stopDate?.getTime(), stopDate?.getTime());
    const last = await eventually(() => {
      const e = events.filter((x) => x.resources[0] === executionArn).at(-1);
      assert.equal(e?.detail.status, 'ABORTED');
      return e!;
    });
    assert.equal(last.detail.error, 'Ops.Cancelled');
    await assert.rejects(sfn.send(new DescribeExecutionCommand({ executionArn: `${executionArn}-nope` })), ExecutionDoesNotExist);
  });

  it('starts idempotently like AWS: same name and input while running is the same execution, anything else ExecutionAlreadyExists', async () => {
    const first = await sfn.send(new StartExecutionCommand({ stateMachineArn: arns['slow'], name: 'idem-1', input: '{"a":1}' }));
    await new Promise((r) => setTimeout(r, 20));
    const again = await sfn.send(new StartExecutionCommand({ stateMachineArn: arns['slow'], name: 'idem-1', input: '{"a":1}' }));
    assert.equal(again.executionArn, first.executionArn);
    assert.equal(again.startDate?.getTime(), first.startDate?.getTime());
    await assert.rejects(sfn.send(new StartExecutionCommand({ stateMachineArn: arns['slow'], name: 'idem-1', input: '{"a":2}' })), ExecutionAlreadyExists);
    await sfn.send(new StopExecutionCommand({ executionArn: first.executionArn }));
    await assert.rejects(sfn.send(new StartExecutionCommand({ stateMachineArn: arns['slow'], name: 'idem-1', input: '{"a":1}' })), ExecutionAlreadyExists);

    await assert.rejects(sfn.send(new StartExecutionCommand({ stateMachineArn: arns['slow'], name: 'has space' })), InvalidName);
    await assert.rejects(sfn.send(new StartExecutionCommand({ stateMachineArn: arns['slow'], name: 'x'.repeat(81) })), InvalidName);
    await assert.rejects(sfn.send(new StartExecutionCommand({ stateMachineArn: arns['slow'], name: 'a:b' })), InvalidName);
    const maxName = 'n'.repeat(80);
    await sfn.send(new StartExecutionCommand({ stateMachineArn: arns['hello'], name: maxName, input: '{"who":"x"}' }));
    await assert.rejects(sfn.send(new StartExecutionCommand({ stateMachineArn: arns['hello'], input: '{"who":' })), InvalidExecutionInput);
    const big = JSON.stringify({ who: 'x'.repeat(256 * 1024) });
    await assert.rejects(
      sfn.send(new StartExecutionCommand({ stateMachineArn: arns['hello'], input: big })),
      (e: Error) => e instanceof InvalidExecutionInput && /limit is 262144/.test(e.message),
    );
    await assert.rejects(sfn.send(new StartExecutionCommand({ stateMachineArn: `${arns['hello']}x` })), StateMachineDoesNotExist);
  });

  it('lists executions newest first, by status, in pages', async () => {
    const lister = await create('lister', HELLO);
    for (const n of [1, 2, 3, 4, 5])
      await sfn.send(new StartExecutionCommand({ stateMachineArn: lister, name: `l-${n}`, input: `{"who":"${n === 3 ? 'fail' : 'x'}"}` }));
    await eventually(async () => {
      const running = await sfn.send(new ListExecutionsCommand({ stateMachineArn: lister, statusFilter: 'RUNNING' }));
      assert.equal(running.executions!.length, 0);
    });
    const names: string[] = [];
    let nextToken: string | undefined;
    let pages = 0;
    do {
      const page = await sfn.send(new ListExecutionsCommand({ stateMachineArn: lister, maxResults: 2, nextToken }));
      names.push(...page.executions!.map((e) => e.name!));
      nextToken = page.nextToken;
      pages++;
    } while (nextToken);
    assert.deepEqual(names, ['l-5', 'l-4', 'l-3', 'l-2', 'l-1']);
    assert.equal(pages, 3);
    const failed = await sfn.send(new ListExecutionsCommand({ stateMachineArn: lister, statusFilter: 'FAILED' }));
    assert.deepEqual(
      failed.executions!.map((e) => [e.name, e.status]),
      [['l-3', 'FAILED']],
    );
    await assert.rejects(sfn.send(new ListExecutionsCommand({ stateMachineArn: lister, statusFilter: 'FAILED', nextToken: 'bogus' })), {
      name: 'InvalidToken',
    });
  });

  it('updates and deletes a state machine; running executions keep their definition', async () => {
    const m = await create('changing', SLOW);
    const { executionArn } = await sfn.send(new StartExecutionCommand({ stateMachineArn: m, name: 'before-update' }));
    await sfn.send(new UpdateStateMachineCommand({ stateMachineArn: m, definition: HELLO }));
    assert.equal((await sfn.send(new DescribeStateMachineCommand({ stateMachineArn: m }))).definition, HELLO);
    const { executionArn: after } = await sfn.send(new StartExecutionCommand({ stateMachineArn: m, name: 'after-update', input: '{"who":"b"}' }));
    assert.equal((await waitForStatus(sfn, after!)).status, 'SUCCEEDED');
    assert.equal((await sfn.send(new DescribeExecutionCommand({ executionArn }))).status, 'RUNNING');
    await sfn.send(new DeleteStateMachineCommand({ stateMachineArn: m }));
    assert.equal((await sfn.send(new DescribeExecutionCommand({ executionArn }))).status, 'ABORTED');
    await assert.rejects(sfn.send(new DescribeStateMachineCommand({ stateMachineArn: m })), StateMachineDoesNotExist);
  });

  it('refuses at CreateStateMachine what it cannot run, with a clear InvalidDefinition', async () => {
    const refused = async (definition: object, pattern: RegExp): Promise<void> => {
      await assert.rejects(
        sfn.send(new CreateStateMachineCommand({ name: 'refused', definition: asl(definition), roleArn: ROLE })),
        (e: Error) => e instanceof InvalidDefinition && pattern.test(e.message),
      );
    };
    await refused(
      { QueryLanguage: 'JSONata', StartAt: 'A', States: { A: { Type: 'Pass', Output: '{% $states.input %}', End: true } } },
      /JSONata.*not supported by sfn-local/,
    );
    await refused({ StartAt: 'A', States: { A: { Type: 'Pass', QueryLanguage: 'JSONata', End: true } } }, /JSONata/);
    await refused({ StartAt: 'A', States: { A: { Type: 'Pass', Assign: { x: 1 }, End: true } } }, /'Assign'.*variables/);
    await refused(
      {
        StartAt: 'M',
        States: {
          M: {
            Type: 'Map',
            ItemReader: { Resource: 'arn:aws:states:::s3:getObject', Parameters: { Bucket: 'b', Key: 'k' } },
            ItemProcessor: { ProcessorConfig: { Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' }, StartAt: 'P', States: { P: { Type: 'Pass', End: true } } },
            End: true,
          },
        },
      },
      /distributed Map/,
    );
    await refused({ StartAt: 'A', States: { A: { Type: 'Pass', Next: 'Nowhere' } } }, /MISSING_TRANSITION_TARGET/);
    await refused({ StartAt: 'A', States: {} } as object, /Invalid State Machine Definition/);
    await assert.rejects(
      sfn.send(new CreateStateMachineCommand({ name: 'bad-json', definition: '{"StartAt":', roleArn: ROLE })),
      (e: Error) => e instanceof InvalidDefinition && /INVALID_JSON/.test(e.message),
    );
    await assert.rejects(sfn.send(new CreateStateMachineCommand({ name: 'express', definition: HELLO, roleArn: ROLE, type: 'EXPRESS' })), {
      name: 'StateMachineTypeNotSupported',
    });
    await assert.rejects(sfn.send(new CreateStateMachineCommand({ name: 'norole', definition: HELLO, roleArn: 'role' })), { name: 'InvalidArn' });
  });

  it('throttles on demand with ThrottlingException, which the SDK retries, and counts calls per action and key', async () => {
    const once = sfnClient(local, { maxAttempts: 1 });
    try {
      local.resetStats();
      local.throttle({ count: 1, actions: ['DescribeStateMachine'] });
      await assert.rejects(once.send(new DescribeStateMachineCommand({ stateMachineArn: arns['hello'] })), (e: Error) => {
        assert.ok(e instanceof SFNServiceException);
        assert.equal(e.name, 'ThrottlingException');
        assert.equal(e.$metadata.httpStatusCode, 400);
        return true;
      });
      await once.send(new ListStateMachinesCommand({}));
      // The default client retries throttling with backoff, so two throttled calls go unnoticed.
      local.throttle({ count: 2 });
      await sfn.send(new DescribeStateMachineCommand({ stateMachineArn: arns['hello'] }));
      const stats = local.stats();
      assert.equal(stats.byAction['DescribeStateMachine'], 4);
      assert.equal(stats.byAction['ListStateMachines'], 1);
      assert.equal(stats.byAccessKey['test'], 5);
      assert.equal(stats.total, 5);

      local.rateLimit(2);
      const results = await Promise.allSettled([1, 2, 3, 4, 5, 6].map(() => once.send(new ListStateMachinesCommand({}))));
      local.rateLimit(null);
      const throttled = results.filter((r) => r.status === 'rejected' && (r.reason as Error).name === 'ThrottlingException');
      assert.ok(throttled.length >= 1, 'a burst over the rate is throttled');
      assert.ok(results.some((r) => r.status === 'fulfilled'));
    } finally {
      once.destroy();
    }
  });

  it('refuses an unknown access key and a bad signature', async () => {
    const stranger = sfnClient(local, { maxAttempts: 1, credentials: { accessKeyId: 'AKIASTRANGER', secretAccessKey: 'x' } });
    const forger = sfnClient(local, { maxAttempts: 1, credentials: { accessKeyId: 'test', secretAccessKey: 'not-test' } });
    try {
      await assert.rejects(stranger.send(new ListStateMachinesCommand({})), { name: 'UnrecognizedClientException' });
      await assert.rejects(
        forger.send(new ListStateMachinesCommand({})),
        (e: Error) => e.name === 'InvalidSignatureException' && /signature we calculated does not match/.test(e.message),
      );
      const unsigned = await fetch(local.endpoint, {
        method: 'POST',
        headers: { 'x-amz-target': 'AWSStepFunctions.ListStateMachines', 'content-type': 'application/x-amz-json-1.0' },
        body: '{}',
      });
      assert.equal(unsigned.status, 403);
      assert.equal(((await unsigned.json()) as { __type: string }).__type, 'MissingAuthenticationTokenException');
    } finally {
      stranger.destroy();
      forger.destroy();
    }
  });
});

describe('sfn-local with a loopback STS: assumed-role credentials that expire and refresh', () => {
  let sts: LocalSts;
  let local: LocalStepFunctions;
  const role = 'arn:aws:iam::123456789012:role/sfn-caller';
  before(async () => {
    sts = await startLocalSts({ assumedDurationSeconds: 2 });
    sts.addRole(role);
    local = await startLocalStepFunctions({ sts, credentials: [] });
  });
  after(async () => {
    await local?.close();
    await sts?.close();
  });

  it('accepts what STS issued, sees each new access key, and refuses expired ones with ExpiredTokenException', async () => {
    const credentials = fromTemporaryCredentials({
      masterCredentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      params: { RoleArn: role, RoleSessionName: 'sfn-test' },
      clientConfig: { endpoint: sts.endpoint, region: 'us-east-1' },
    });
    const sfn = sfnClient(local, { credentials });
    try {
      await sfn.send(new ListStateMachinesCommand({}));
      const firstKeys = Object.keys(local.stats().byAccessKey);
      assert.equal(firstKeys.length, 1);
      assert.match(firstKeys[0]!, /^ASIA/);
      const first = sts.issued.find((c) => c.accessKeyId === firstKeys[0])!;
      await new Promise((r) => setTimeout(r, Math.max(0, first.expiration.getTime() - Date.now()) + 50));
      await sfn.send(new ListStateMachinesCommand({}));
      const keys = Object.keys(local.stats().byAccessKey);
      assert.ok(keys.length >= 2, `a refreshed key signed the later call: ${keys.join(', ')}`);
      assert.ok(keys.every((k) => sts.issued.some((c) => c.accessKeyId === k)));

      const stale = sfnClient(local, {
        maxAttempts: 1,
        credentials: { accessKeyId: first.accessKeyId, secretAccessKey: first.secretAccessKey, sessionToken: first.sessionToken },
      });
      try {
        await assert.rejects(stale.send(new ListStateMachinesCommand({})), { name: 'ExpiredTokenException' });
      } finally {
        stale.destroy();
      }
      const root = sfnClient(local, { maxAttempts: 1 });
      try {
        await assert.rejects(
          root.send(new ListStateMachinesCommand({})),
          { name: 'UnrecognizedClientException' },
          'the STS root key is not an accepted static key here',
        );
      } finally {
        root.destroy();
      }
    } finally {
      sfn.destroy();
    }
  });
});
