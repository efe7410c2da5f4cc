// Delegating a stage to Step Functions, through the real @aws-sdk/client-sfn over HTTP against
// the loopback endpoint: success, failure, timeout and abort each reach the instance once; leaving
// the state stops the execution; throttled polls slow down and still finish; push completion
// applies status events idempotently; trace context rides in the execution input; the payload
// guard refuses before any call.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CreateStateMachineCommand, ListExecutionsCommand, StopExecutionCommand, DescribeExecutionCommand, type SFNClient } from '@aws-sdk/client-sfn';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { createEngine, type Engine, type WorkflowDefinition } from '../../engine/index.js';
import { startLocalStepFunctions, type LocalStepFunctions } from '../../adapters/local/step-functions/server.js';
import { stepFunctions, type StepFunctionsExtension } from '../../adapters/step-functions/execution.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';
import { stageWorkflow, type StageContext } from './stage-workflow.js';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { ROLE, TEST_CREDENTIALS, asl, sfnClient } from './sfn-local-helpers.js';

const definitions = {
  settle: asl({ StartAt: 'Settle', States: { Settle: { Type: 'Pass', Parameters: { 'orderId.$': '$.orderId', settled: true }, End: true } } }),
  decline: asl({ StartAt: 'Decline', States: { Decline: { Type: 'Fail', Error: 'PaymentDeclined', Cause: 'insufficient funds' } } }),
  sleepy: asl({ TimeoutSeconds: 1, StartAt: 'Nap', States: { Nap: { Type: 'Wait', Seconds: 30, End: true } } }),
  long: asl({ StartAt: 'Nap', States: { Nap: { Type: 'Wait', Seconds: 600, End: true } } }),
  plain: asl({ StartAt: 'Echo', States: { Echo: { Type: 'Pass', End: true } } }),
  nap: asl({ StartAt: 'Nap', States: { Nap: { Type: 'Wait', Seconds: 2, Next: 'Done' }, Done: { Type: 'Pass', Result: { napped: true }, End: true } } }),
};

type Ctx = StageContext;

const stage = (name: string, stateMachineArn: string, completion: 'poll' | 'push' = 'poll', mapInput?: (i: unknown) => unknown): WorkflowDefinition =>
  stageWorkflow(name, stateMachineArn, { completion, pollIntervalMs: 100, maxPollIntervalMs: 400, ...(mapInput ? { input: mapInput } : {}) });

describe('stepFunctionsExecution', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let local: LocalStepFunctions;
  let sfn: SFNClient;
  let engine: Engine;
  let extension: StepFunctionsExtension;
  let forwarder: NatsConnection;
  const arns: Record<string, string> = {};
  const wf: Record<string, WorkflowDefinition> = {};
  let namespace: string;
  const spans = new InMemorySpanExporter();

  before(async () => {
    nats = await startNats();
    namespace = uniqueNamespace('sfnexec');
    forwarder = await connect({ servers: nats.url });
    // What EventBridge → (a rule) → NATS would do: forward status events into the status subject.
    // Only the push workflow's machine is forwarded, so the others are finished by polling.
    local = await startLocalStepFunctions({
      onStatusChange: (e) => {
        if (e.detail.stateMachineArn === arns['plain']) forwarder.publish(`${namespace}.sfn.status`, JSON.stringify(e));
      },
    });
    sfn = sfnClient(local);
    for (const [name, definition] of Object.entries(definitions)) {
      arns[name] = (await sfn.send(new CreateStateMachineCommand({ name, definition, roleArn: ROLE }))).stateMachineArn!;
    }
    wf['settle'] = stage('settle', arns['settle']!);
    wf['decline'] = stage('decline', arns['decline']!);
    wf['sleepy'] = stage('sleepy', arns['sleepy']!);
    wf['long'] = stage('long', arns['long']!);
    wf['pushed'] = stage('pushed', arns['plain']!, 'push');
    wf['nap'] = stage('nap', arns['nap']!);
    wf['huge'] = stage('huge', arns['plain']!, 'poll', (i) => ({ ...(i as object), pad: 'x'.repeat(262_144) }));
    extension = stepFunctions({ region: local.region, endpoint: local.endpoint, credentials: TEST_CREDENTIALS, maxRequestsPerSecond: 200 });
    engine = await createEngine({ servers: nats.url, namespace, workflows: Object.values(wf), extensions: [extension], telemetry: { tracerProvider } });
  });
  after(async () => {
    await engine?.close();
    await forwarder?.close();
    await local?.close();
    sfn?.destroy();
    await nats?.dispose();
  });

  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
  const finished = (w: WorkflowDefinition, id: string) => engine.waitFor(w, id, (i) => i.status !== 'running', { timeoutMs: 20_000 });
  const outcomes = async (w: WorkflowDefinition, id: string) =>
    (await engine.history(w, id)).filter(
      (h) =>
        /^xstate\.(done|error)\.actor\./.test(String((h.event as { type?: string }).type ?? '')) || (h.event as { type?: string }).type === 'jetstate.task',
    );

  it('returns the execution output as xstate.done.actor, once, with the trace context in the input', async () => {
    const i = await engine.start(wf['settle']!, { id: 's-1', input: { orderId: 's-1' } });
    void i;
    const done = await finished(wf['settle']!, 's-1');
    assert.equal(done.value, 'done', JSON.stringify(done.context));
    const result = (done.context as Ctx).result as { orderId: string; settled: boolean; trace?: { traceparent?: string } };
    assert.equal(result.orderId, 's-1');
    assert.equal(result.settled, true);
    assert.equal((await outcomes(wf['settle']!, 's-1')).length, 1, 'the outcome applied once');
    const executions = await sfn.send(new ListExecutionsCommand({ stateMachineArn: arns['settle'] }));
    assert.equal(executions.executions!.length, 1);
    assert.equal(executions.executions![0]!.name!.replace(/[0-9a-f]{20}$/, ''), `js-${namespace}-settle-s-1-1-`);
  });

  it('delivers FAILED and TIMED_OUT as xstate.error.actor with error and cause', async () => {
    await engine.start(wf['decline']!, { id: 'd-1', input: { orderId: 'd-1' } });
    await engine.start(wf['sleepy']!, { id: 't-1', input: { orderId: 't-1' } });
    const declined = await finished(wf['decline']!, 'd-1');
    assert.equal(declined.value, 'failed');
    assert.deepEqual(pick((declined.context as Ctx).error, ['name', 'message', 'status', 'error', 'cause']), {
      name: 'PaymentDeclined',
      message: 'insufficient funds',
      status: 'FAILED',
      error: 'PaymentDeclined',
      cause: 'insufficient funds',
    });
    const timedOut = await finished(wf['sleepy']!, 't-1');
    assert.equal(timedOut.value, 'failed');
    assert.equal(((timedOut.context as Ctx).error as { status: string }).status, 'TIMED_OUT');
    assert.equal((await outcomes(wf['decline']!, 'd-1')).length, 1);
    assert.equal((await outcomes(wf['sleepy']!, 't-1')).length, 1);
  });

  it('delivers an abort by someone else as an error, and stops the execution when the state is left', async () => {
    await engine.start(wf['long']!, { id: 'a-1', input: { orderId: 'a-1' } });
    await engine.start(wf['long']!, { id: 'c-1', input: { orderId: 'c-1' } });
    const running = async (id: string) =>
      eventually(async () => {
        const list = await sfn.send(new ListExecutionsCommand({ stateMachineArn: arns['long'], statusFilter: 'RUNNING' }));
        const found = list.executions!.find((e) => e.name!.startsWith(`js-${namespace}-long-${id}-`));
        assert.ok(found, `execution of ${id} is running`);
        return found.executionArn!;
      });
    const aborted = await running('a-1');
    await sfn.send(new StopExecutionCommand({ executionArn: aborted, error: 'Operator', cause: 'stopped by hand' }));
    const a = await finished(wf['long']!, 'a-1');
    assert.equal(a.value, 'failed');
    assert.equal(((a.context as Ctx).error as { status: string }).status, 'ABORTED');

    const cancelled = await running('c-1');
    await engine.send(wf['long']!, 'c-1', { type: 'CANCEL' });
    assert.equal((await finished(wf['long']!, 'c-1')).value, 'cancelled');
    const stopped = await eventually(async () => {
      const d = await sfn.send(new DescribeExecutionCommand({ executionArn: cancelled }));
      assert.equal(d.status, 'ABORTED');
      return d;
    });
    assert.equal(stopped.error, 'jetstate.Exited');
    await eventually(() => assert.equal(extension.stats().pending, 0, 'nothing left to follow'));
  });

  it('completes by push from status events, idempotently, with hardly any polling', async () => {
    const before = extension.stats().describes;
    await engine.start(wf['pushed']!, { id: 'p-1', input: { orderId: 'p-1' } });
    const done = await finished(wf['pushed']!, 'p-1');
    assert.equal(done.value, 'done', JSON.stringify(done.context));
    // The echo shows the input the execution got: the trace context of the task attempt rides along.
    const echoed = (done.context as Ctx).result as { orderId: string; _jetstate: { traceparent: string } };
    assert.equal(echoed.orderId, 'p-1');
    assert.match(echoed._jetstate.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    // The attempt's span ends once its outcome is sent, which the record may show first.
    const attempt = await eventually(() => {
      const found = spans.getFinishedSpans().find((s) => s.name === 'jetstate.task pushed.stage');
      assert.ok(found, 'the attempt span ended');
      return found;
    });
    assert.equal(echoed._jetstate.traceparent.split('-')[1], attempt.spanContext().traceId, 'the cloud stage continues the trace');
    assert.ok(
      spans.getFinishedSpans().some((s) => s.name === 'jetstate.stepfunctions StartExecution'),
      'the call is a span',
    );
    assert.equal(extension.stats().describes - before, 0, 'no poll was needed');
    // The same status event again (EventBridge delivers at least once): nothing more happens.
    const arn = (await sfn.send(new ListExecutionsCommand({ stateMachineArn: arns['plain'] }))).executions![0]!.executionArn!;
    forwarder.publish(
      `${namespace}.sfn.status`,
      JSON.stringify({
        'detail-type': 'Step Functions Execution Status Change',
        source: 'aws.states',
        detail: { executionArn: arn, status: 'SUCCEEDED', output: '{"again":true}' },
      }),
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await outcomes(wf['pushed']!, 'p-1')).length, 1);
    assert.equal(((await engine.get(wf['pushed']!, 'p-1'))!.context as Ctx).result !== undefined, true);
  });

  it('answers throttling by slowing down, and still finishes', async () => {
    local.throttle({ count: 6, actions: ['DescribeExecution'] });
    const before = extension.stats().throttled;
    await engine.start(wf['settle']!, { id: 's-throttled', input: { orderId: 's-throttled' } });
    const throttled = await finished(wf['settle']!, 's-throttled');
    assert.equal(throttled.value, 'done', JSON.stringify(throttled.context));
    assert.ok(
      extension.stats().throttled - before >= 1,
      `the poller saw ThrottlingException: ${JSON.stringify(extension.stats())} ${JSON.stringify(local.stats())}`,
    );
    assert.equal((await outcomes(wf['settle']!, 's-throttled')).length, 1);
  });

  it('refuses an input over 256 KiB before calling AWS', async () => {
    local.resetStats();
    await engine.start(wf['huge']!, { id: 'big', input: { orderId: 'big' } });
    const failed = await finished(wf['huge']!, 'big');
    assert.equal(failed.value, 'failed');
    assert.match(((failed.context as Ctx).error as { message: string }).message, /256 KiB|262144|bytes/);
    assert.equal(local.stats().byAction['StartExecution'] ?? 0, 0, 'no StartExecution was made');
  });

  it('keeps following a pending execution across an engine restart', async () => {
    await engine.start(wf['nap']!, { id: 'n-1', input: { orderId: 'n-1' } });
    await eventually(() => assert.equal(extension.stats().pending, 1, 'the execution is pending'));
    await engine.close();
    // A new engine (and extension) on the same namespace picks the pending execution up from the bucket.
    extension = stepFunctions({ region: local.region, endpoint: local.endpoint, credentials: TEST_CREDENTIALS, maxRequestsPerSecond: 200 });
    engine = await createEngine({ servers: nats.url, namespace, workflows: Object.values(wf), extensions: [extension], telemetry: { tracerProvider } });
    const done = await finished(wf['nap']!, 'n-1');
    assert.equal(done.value, 'done', JSON.stringify(done.context));
    assert.deepEqual((done.context as Ctx).result, { napped: true });
    assert.equal((await outcomes(wf['nap']!, 'n-1')).length, 1);
    assert.equal((await sfn.send(new ListExecutionsCommand({ stateMachineArn: arns['nap'] }))).executions!.length, 1, 'not started again');
  });

  it("follows a pending execution in the region it was started in, whatever the next engine's default region", async () => {
    await engine.start(wf['nap']!, { id: 'n-region', input: { orderId: 'n-region' } });
    await eventually(() => assert.equal(extension.stats().pending, 1, 'the execution is pending'));
    await engine.close();
    // The next engine's default region is another one: the endpoint signs and answers for the execution's only.
    const other = local.region === 'eu-west-1' ? 'eu-central-1' : 'eu-west-1';
    extension = stepFunctions({ region: other, endpoint: local.endpoint, credentials: TEST_CREDENTIALS, maxRequestsPerSecond: 200 });
    engine = await createEngine({ servers: nats.url, namespace, workflows: Object.values(wf), extensions: [extension], telemetry: { tracerProvider } });
    const done = await finished(wf['nap']!, 'n-region');
    assert.equal(done.value, 'done', JSON.stringify(done.context));
    assert.deepEqual((done.context as Ctx).result, { napped: true });
    // Back to the endpoint's region for the cases after this one.
    await engine.close();
    extension = stepFunctions({ region: local.region, endpoint: local.endpoint, credentials: TEST_CREDENTIALS, maxRequestsPerSecond: 200 });
    engine = await createEngine({ servers: nats.url, namespace, workflows: Object.values(wf), extensions: [extension], telemetry: { tracerProvider } });
  });

  it('runs stages with the same extension object started again after a stop (an engine start tried again)', async () => {
    await engine.close();
    engine = await createEngine({ servers: nats.url, namespace, workflows: Object.values(wf), extensions: [extension], telemetry: { tracerProvider } });
    await engine.start(wf['settle']!, { id: 's-again', input: { orderId: 's-again' } });
    const done = await finished(wf['settle']!, 's-again');
    assert.equal(done.value, 'done', JSON.stringify(done.context));
  });
});

function pick(v: unknown, keys: string[]): Record<string, unknown> {
  const o = v as Record<string, unknown>;
  return Object.fromEntries(keys.map((k) => [k, o[k]]));
}
