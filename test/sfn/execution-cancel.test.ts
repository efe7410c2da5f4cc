// Leaving the invoking state while the execution is being started: the CANCEL arrives while
// StartExecution is in flight (its reply is slow: the endpoint has already started the
// execution), or right after the start. Whatever the attempt was doing, an execution that exists
// for a cancelled instance ends ABORTED with jetstate.Exited, in poll and in push mode (whose
// back-up poll is left at its default of 5 minutes, so only the cancel itself can stop it within
// the bounds here).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CreateStateMachineCommand, DescribeExecutionCommand, ListExecutionsCommand, type SFNClient } from '@aws-sdk/client-sfn';
import { createEngine, type Engine, type WorkflowDefinition } from '../../engine/index.js';
import { startLocalStepFunctions, type LocalStepFunctions } from '../../adapters/testing/index.js';
import { stepFunctions } from '../../adapters/step-functions/execution.js';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';
import { stageWorkflow } from './stage-workflow.js';
import { ROLE, TEST_CREDENTIALS, asl, sfnClient } from './sfn-local-helpers.js';

const STOP_BOUND_MS = 20_000;

describe('cancel while the execution is being started', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let local: LocalStepFunctions;
  let sfn: SFNClient;
  let stateMachineArn: string;

  before(async () => {
    nats = await startNats();
    local = await startLocalStepFunctions();
    sfn = sfnClient(local);
    stateMachineArn = (
      await sfn.send(
        new CreateStateMachineCommand({
          name: 'long',
          definition: asl({ StartAt: 'Nap', States: { Nap: { Type: 'Wait', Seconds: 600, End: true } } }),
          roleArn: ROLE,
        }),
      )
    ).stateMachineArn!;
  });
  after(async () => {
    await local?.close();
    sfn?.destroy();
    await nats?.dispose();
  });

  const newEngine = (namespace: string, workflows: WorkflowDefinition[]): Promise<Engine> =>
    createEngine({
      servers: nats.url,
      namespace,
      workflows,
      extensions: [stepFunctions({ region: local.region, endpoint: local.endpoint, credentials: TEST_CREDENTIALS, maxRequestsPerSecond: 200 })],
    });

  /** The executions of the machine whose input names `orderId`, with their status. */
  const executionsOf = async (orderId: string): Promise<Array<{ executionArn: string; status: string; error?: string | undefined }>> => {
    const out = [];
    const list = await sfn.send(new ListExecutionsCommand({ stateMachineArn, maxResults: 1000 }));
    for (const x of list.executions ?? []) {
      const d = await sfn.send(new DescribeExecutionCommand({ executionArn: x.executionArn! }));
      if ((JSON.parse(d.input ?? '{}') as { orderId?: string }).orderId === orderId)
        out.push({ executionArn: x.executionArn!, status: d.status!, error: d.error });
    }
    return out;
  };

  /** Waits until no execution of these instances runs; returns the instances whose execution still runs after the bound. */
  const stillRunning = async (ids: string[]): Promise<string[]> => {
    let running: string[] = [];
    await eventually(
      async () => {
        running = [];
        for (const id of ids) if ((await executionsOf(id)).some((x) => x.status === 'RUNNING')) running.push(id);
        assert.deepEqual(running, []);
      },
      STOP_BOUND_MS,
      250,
    ).catch(() => {});
    return running;
  };

  for (const completion of ['poll', 'push'] as const) {
    it(`${completion}: a CANCEL while StartExecution is in flight stops the execution it started`, async () => {
      const namespace = uniqueNamespace(`sfncancel${completion}`);
      const wf = stageWorkflow(`slow_${completion}`, stateMachineArn, { completion, pollIntervalMs: 100, maxPollIntervalMs: 400 });
      const engine = await newEngine(namespace, [wf]);
      const ids = [1, 2, 3, 4].map((n) => `slow-${completion}-${n}`);
      try {
        for (const id of ids) {
          // The next StartExecution runs at once and answers 1.5 s later.
          local.delay({ ms: 1_500, actions: ['StartExecution'] });
          const before = local.stats().byAction['StartExecution'] ?? 0;
          await engine.start(wf, { id, input: { orderId: id } });
          await eventually(() => assert.ok((local.stats().byAction['StartExecution'] ?? 0) > before, 'StartExecution reached the endpoint'));
          await engine.send(wf, id, { type: 'CANCEL' });
          assert.equal((await engine.waitFor(wf, id, (i) => i.status !== 'running', { timeoutMs: 10_000 })).value, 'cancelled');
        }
        const running = await stillRunning(ids);
        assert.deepEqual(running, [], `${running.length} of ${ids.length} executions still run after their instance was cancelled`);
        for (const id of ids) {
          const [x] = await executionsOf(id);
          assert.equal(x?.status, 'ABORTED');
          assert.equal(x?.error, 'jetstate.Exited');
        }
      } finally {
        await engine.close();
      }
    });

    it(`${completion}: a CANCEL right after the start leaves no execution running`, async () => {
      const namespace = uniqueNamespace(`sfncancelnow${completion}`);
      const wf = stageWorkflow(`quick_${completion}`, stateMachineArn, { completion, pollIntervalMs: 100, maxPollIntervalMs: 400 });
      const engine = await newEngine(namespace, [wf]);
      const ids = [1, 2, 3, 4].map((n) => `quick-${completion}-${n}`);
      try {
        for (const id of ids) {
          await engine.start(wf, { id, input: { orderId: id } });
          await engine.send(wf, id, { type: 'CANCEL' });
        }
        for (const id of ids) assert.equal((await engine.waitFor(wf, id, (i) => i.status !== 'running', { timeoutMs: 10_000 })).value, 'cancelled');
      } finally {
        // Closing lets attempts still in flight finish; after it, nothing of these instances may run.
        await engine.close();
      }
      const running = await stillRunning(ids);
      assert.deepEqual(running, [], `${running.length} of ${ids.length} executions still run after their instance was cancelled`);
    });
  }

  it('a CANCEL while an execution found existing is being adopted (its DescribeExecution unanswered) stops it', async () => {
    const namespace = uniqueNamespace('sfncanceladopt');
    // Each attempt has its own trace context in the input: a second attempt's start finds the
    // first attempt's execution running with another input (ExecutionAlreadyExists), and adopts it.
    const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(new InMemorySpanExporter())] });
    const wf = stageWorkflow('adopted', stateMachineArn, {
      pollIntervalMs: 100,
      maxPollIntervalMs: 400,
      startTimeoutMs: 300,
      reachIntervalMs: 100,
      maxReachIntervalMs: 200,
      retry: { initialIntervalMs: 100, maxIntervalMs: 200 },
    });
    const engine = await createEngine({
      servers: nats.url,
      namespace,
      workflows: [wf],
      telemetry: { tracerProvider },
      extensions: [stepFunctions({ region: local.region, endpoint: local.endpoint, credentials: TEST_CREDENTIALS, maxAttempts: 1, maxRequestsPerSecond: 200 })],
    });
    const id = 'adopted-1';
    try {
      local.resetStats();
      // Attempt 1: its start runs at once and answers late (unanswered), and its second try is throttled.
      local.delay({ ms: 2_000, actions: ['StartExecution'] });
      await engine.start(wf, { id, input: { orderId: id } });
      await eventually(() => assert.ok((local.stats().byAction['StartExecution'] ?? 0) >= 1));
      local.throttle({ count: 1, actions: ['StartExecution'] });
      // Attempt 2: ExecutionAlreadyExists, then DescribeExecution answers only after the CANCEL.
      local.delay({ ms: 3_000, count: 4, actions: ['DescribeExecution'] });
      await eventually(() => assert.ok((local.stats().byAction['DescribeExecution'] ?? 0) >= 1), 10_000);
      await engine.send(wf, id, { type: 'CANCEL' });
      assert.equal((await engine.waitFor(wf, id, (i) => i.status !== 'running', { timeoutMs: 10_000 })).value, 'cancelled');
      const running = await stillRunning([id]);
      assert.deepEqual(running, [], 'the execution the second attempt found runs on after its instance was cancelled');
      const [x] = await executionsOf(id);
      assert.equal(x?.status, 'ABORTED');
    } finally {
      await engine.close();
    }
  });
});
