/**
 * Idempotent start across a crash: an engine process is SIGKILLed right after StartExecution
 * returned and before the adapter recorded the pending execution (only the entry written before
 * the start, marked `starting`, is there). After the task's acknowledgement
 * wait, an engine in this process takes the attempt over and calls StartExecution again with the
 * same deterministic name: a still-running execution answers with the same ARN, a finished one
 * with ExecutionAlreadyExists and is adopted. Either way Step Functions has one execution for the
 * instance, and the instance gets one outcome.
 *
 * The last case traces both engines (a recording tracer provider), as a traced deployment does:
 * each attempt then puts its own span's `traceparent` into the input (`_jetstate`), so the second
 * start's input differs from the first's; the adapter compares inputs without `_jetstate`, so it
 * still adopts the execution.
 *
 * The last case leaves the state before any engine takes the task over: the entry written before
 * the start lets the new owner stop the execution.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateStateMachineCommand, DescribeExecutionCommand, ListExecutionsCommand } from '@aws-sdk/client-sfn';
import { Kvm, type KV } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { createClient, createEngine, type WorkflowDefinition } from '../../engine/index.js';
import { startLocalStepFunctions } from '../../adapters/local/step-functions/server.js';
import { stepFunctions } from '../../adapters/step-functions/execution.js';
import { eventually, nodeArgsFor, startNats, uniqueNamespace } from '../helpers.js';
import { ROLE, TEST_CREDENTIALS, asl, sfnClient } from './sfn-local-helpers.js';
import { killStageWorkflow, type StageContext } from './stage-workflow.js';

const script = join(import.meta.dirname, 'sfn-engine-process.ts');
const WAIT_SECONDS = 9; // longer than the acknowledgement wait (1 s attempt timeout + 5 s)

const definitions = {
  'kill-wait': asl({
    StartAt: 'Nap',
    States: {
      Nap: { Type: 'Wait', Seconds: WAIT_SECONDS, Next: 'Settle' },
      Settle: { Type: 'Pass', Parameters: { 'orderId.$': '$.orderId', settled: true }, End: true },
    },
  }),
  'kill-long': asl({ StartAt: 'Nap', States: { Nap: { Type: 'Wait', Seconds: 600, End: true } } }),
  'kill-pass': asl({ StartAt: 'Settle', States: { Settle: { Type: 'Pass', Parameters: { 'orderId.$': '$.orderId', settled: true }, End: true } } }),
};

interface Child {
  process: ChildProcess;
  ready: Promise<void>;
  started: Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

const children = new Set<ChildProcess>();
// Last resort if the runner exits without its hooks: no engine process outlives it.
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function spawnEngine(args: string[]): Child {
  const child = spawn(process.execPath, [...nodeArgsFor(script), ...args], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  children.add(child);
  let out = '';
  let err = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((ok) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      ok({ code, signal });
    }),
  );
  const line = (word: string): Promise<string> =>
    new Promise((ok, ko) => {
      const look = (): boolean => {
        const m = new RegExp(`^${word} (.*)$`, 'm').exec(out);
        if (m) ok(m[1]!);
        return m !== null;
      };
      child.stdout!.on('data', look);
      void exited.then(() => look() || ko(new Error(`the engine process exited before ${word}:\n${err}`)));
    });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-4_000)));
  const ready = line('READY').then(() => undefined);
  const started = line('STARTED').then((json) => (JSON.parse(json) as { executionArn: string }).executionArn);
  ready.catch(() => {});
  started.catch(() => {});
  return { process: child, ready, started, exited, stderr: () => err };
}

async function keysOf(kv: KV): Promise<string[]> {
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  return keys;
}

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<never>((_, ko) => setTimeout(() => ko(new Error(`${what}: not within ${ms} ms`)), ms).unref())]);

describe('stepFunctionsExecution after a SIGKILL between StartExecution and the pending write', { concurrency: true }, () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let nc: NatsConnection;

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await nc?.close();
    await nats?.dispose();
  });

  /** The engine process's arguments (see sfn-engine-process.ts). */
  const processArgs = (namespace: string, local: { endpoint: string; region: string }, workflow: string, stateMachineArn: string): string[] => [
    '--nats',
    nats.url,
    '--namespace',
    namespace,
    '--endpoint',
    local.endpoint,
    '--region',
    local.region,
    '--workflow',
    workflow,
    '--state-machine',
    stateMachineArn,
  ];

  /** Kills the first engine at the hook, lets an engine here take over, and checks the one outcome. */
  async function crashAndTakeOver(machine: keyof typeof definitions, wfName: string, running: boolean, traced = false): Promise<void> {
    const namespace = uniqueNamespace(wfName);
    // An endpoint per case, so the cases run at once and count their own calls.
    const local = await startLocalStepFunctions();
    const sfn = sfnClient(local);
    const stateMachineArn = (await sfn.send(new CreateStateMachineCommand({ name: machine, definition: definitions[machine], roleArn: ROLE })))
      .stateMachineArn!;
    const wf: WorkflowDefinition = killStageWorkflow(wfName, stateMachineArn);
    const id = `${wfName}-1`;
    const args = processArgs(namespace, local, wfName, stateMachineArn);
    const first = spawnEngine(traced ? [...args, '--trace'] : args);
    await within(first.ready, 20_000, 'the first engine ready');
    const client = await createClient({ servers: nats.url, namespace, workflows: [wf] });
    // The adapter counts its calls by action and outcome: how the second StartExecution was answered.
    const reader = new PeriodicExportingMetricReader({
      exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
      exportIntervalMillis: 3_600_000,
    });
    const meterProvider = new MeterProvider({ readers: [reader] });
    let engine: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(wf, { id, input: { orderId: id } });
      const executionArn = await within(first.started, 15_000, 'StartExecution by the first engine');
      const exit = await within(first.exited, 10_000, 'the first engine dies');
      assert.equal(exit.signal, 'SIGKILL', first.stderr());

      // The crash left an execution whose start was not recorded: only the entry written before it.
      const pendingBucket = await new Kvm(nc).open(`${namespace}_sfn`);
      const keys = await keysOf(pendingBucket);
      assert.equal(keys.length, 1, 'the entry written before StartExecution');
      const entry = (await pendingBucket.get(keys[0]!))!.json<{ starting?: boolean; executionArn: string }>();
      assert.deepEqual([entry.starting, entry.executionArn], [true, executionArn]);
      const atCrash = await sfn.send(new DescribeExecutionCommand({ executionArn }));
      assert.equal(atCrash.status, running ? 'RUNNING' : 'SUCCEEDED');

      const extension = stepFunctions({ region: local.region, endpoint: local.endpoint, credentials: TEST_CREDENTIALS, maxRequestsPerSecond: 100 });
      const telemetry = { meterProvider, ...(traced ? { tracerProvider: new BasicTracerProvider() } : {}) };
      engine = await createEngine({ servers: nats.url, namespace, workflows: [wf], extensions: [extension], leaseTtlMs: 1_000, telemetry });

      // The task comes back after its acknowledgement wait; this engine starts the same name again.
      const statusAtRetry = await eventually(
        async () => {
          assert.equal(local.stats().byAction['StartExecution'], 2, 'the retried StartExecution');
          return (await sfn.send(new DescribeExecutionCommand({ executionArn }))).status;
        },
        20_000,
        20,
      );
      if (running) assert.equal(statusAtRetry, 'RUNNING', 'the execution was still running at the retry');

      const done = await engine.waitFor(wf, id, (i) => i.status !== 'running', { timeoutMs: 25_000 });
      assert.equal(done.value, 'done', JSON.stringify(done.context));
      assert.deepEqual((done.context as StageContext).result, { orderId: id, settled: true });

      const mine = (await sfn.send(new ListExecutionsCommand({ stateMachineArn }))).executions!.filter((e) => e.name!.startsWith(`js-${namespace}-`));
      assert.equal(mine.length, 1, `one execution for the instance: ${JSON.stringify(mine)}`);
      assert.equal(mine[0]!.executionArn, executionArn, 'the execution the first engine started');

      const history = await engine.history(wf, id);
      const outcomes = history.filter((h) => (h.event as { type?: string }).type === 'jetstate.task');
      assert.equal(outcomes.length, 1, `one outcome event: ${JSON.stringify(history.map((h) => h.event))}`);
      assert.equal((await engine.verify(wf, id)).ok, true);

      // How the second start was answered: the same ARN while running, ExecutionAlreadyExists after.
      const { resourceMetrics } = await reader.collect();
      const calls = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === 'jetstate.stepfunctions.calls');
      const starts = (calls?.dataPoints ?? [])
        .filter((p) => p.attributes['rpc.method'] === 'StartExecution')
        .map((p) => [p.attributes['jetstate.outcome'], p.value]);
      assert.deepEqual(starts, [[running ? 'ok' : 'ExecutionAlreadyExists', 1]]);
      assert.equal(extension.stats().starts, 1);
      await eventually(async () => assert.deepEqual(await keysOf(pendingBucket), [], 'the pending entry is removed once delivered'));
    } finally {
      await engine?.close();
      await meterProvider.shutdown();
      await client.close();
      if (first.process.exitCode === null && first.process.signalCode === null) first.process.kill('SIGKILL');
      sfn.destroy();
      await local.close();
    }
  }

  it('gets the same execution back when it is still running at the retry', { timeout: 45_000 }, async () => {
    await crashAndTakeOver('kill-wait', 'killwait', true);
  });

  it('adopts the execution when it finished before the retry (ExecutionAlreadyExists)', { timeout: 45_000 }, async () => {
    await crashAndTakeOver('kill-pass', 'killpass', false);
  });

  it('adopts the execution when both engines trace (the inputs differ only in _jetstate)', { timeout: 45_000 }, async () => {
    await crashAndTakeOver('kill-pass', 'killtraced', false, true);
  });

  it('stops the execution when the state is left before any engine takes the task over', { timeout: 60_000 }, async () => {
    const namespace = uniqueNamespace('killleft');
    const local = await startLocalStepFunctions();
    const sfn = sfnClient(local);
    const stateMachineArn = (await sfn.send(new CreateStateMachineCommand({ name: 'kill-long', definition: definitions['kill-long'], roleArn: ROLE })))
      .stateMachineArn!;
    const wf: WorkflowDefinition = killStageWorkflow('killleft', stateMachineArn);
    const first = spawnEngine(processArgs(namespace, local, 'killleft', stateMachineArn));
    await within(first.ready, 20_000, 'the first engine ready');
    const client = await createClient({ servers: nats.url, namespace, workflows: [wf] });
    let engine: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(wf, { id: 'l-1', input: { orderId: 'l-1' } });
      const executionArn = await within(first.started, 15_000, 'StartExecution by the first engine');
      assert.equal((await within(first.exited, 10_000, 'the first engine dies')).signal, 'SIGKILL', first.stderr());
      // The state is left before any engine runs the task again: the task is dropped when it comes back.
      await client.send(wf, 'l-1', { type: 'CANCEL' } as never);
      const extension = stepFunctions({ region: local.region, endpoint: local.endpoint, credentials: TEST_CREDENTIALS, maxRequestsPerSecond: 100 });
      engine = await createEngine({ servers: nats.url, namespace, workflows: [wf], extensions: [extension], leaseTtlMs: 1_000 });
      assert.equal((await engine.waitFor(wf, 'l-1', (i) => i.status !== 'running', { timeoutMs: 20_000 })).value, 'cancelled');
      // The execution the crashed engine started is stopped, not left running for its 10 minutes.
      await eventually(
        async () => assert.equal((await sfn.send(new DescribeExecutionCommand({ executionArn }))).status, 'ABORTED', 'the execution is stopped'),
        20_000,
        100,
      );
      assert.equal(local.stats().byAction['StartExecution'], 1, 'nothing started it again');
      const pendingBucket = await new Kvm(nc).open(`${namespace}_sfn`);
      await eventually(async () => assert.deepEqual(await keysOf(pendingBucket), [], 'nothing left pending'));
    } finally {
      await engine?.close();
      await client.close();
      if (first.process.exitCode === null && first.process.signalCode === null) first.process.kill('SIGKILL');
      sfn.destroy();
      await local.close();
    }
  });
});
