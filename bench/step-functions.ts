/**
 * Step Functions stages benchmark: `stepFunctionsExecution` against the loopback endpoint
 * (`startLocalStepFunctions`, real `@aws-sdk/client-sfn` over HTTP), on a nats-server and engines
 * started here. About 90 s; everything on 127.0.0.1; stops by itself.
 *
 *   npm run bench:sfn
 *
 * 1. Stages per second and added latency: 1,000 instances started at once, each delegating one
 *    stage (a Pass state) and then finishing, against the same workflow with a no-op `activity()`
 *    in place of the stage, in the same run. Timed from the first `start()` until a KV watch has
 *    seen every instance done; per instance from its `start()` call to the watch seeing it done.
 *    Completion by push (status events forwarded into NATS, as an EventBridge rule would) and by
 *    poll (DescribeExecution; the first poll after the default 5 s).
 * 2. One at a time: the same three workflows, one instance after another (push and no-op only:
 *    a polled stage takes its first poll interval, 5 s).
 * 3. Polling cost: 1,000 executions that wait 60 s, pending at once, on three engines with their
 *    own endpoints: default poll settings (5 s first poll, 1.5x growth, 60 s max) with the default
 *    limit of 10 requests/s, the same with the limit raised to 1,000/s (the backoff decides), and
 *    completion 'push'. DescribeExecution requests per second, counted by the endpoint over a
 *    window, divided by the pending executions.
 */
import { rm } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { CreateStateMachineCommand, SFNClient } from '@aws-sdk/client-sfn';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { setup, type PromiseActorLogic } from 'xstate';
import { z } from 'zod';
import { NatsServer } from '../adapters/nats-server/launcher.js';
import { startLocalStepFunctions, type LocalStepFunctions } from '../adapters/local/step-functions/server.js';
import { stepFunctions, stepFunctionsExecution, type StepFunctionsExtension } from '../adapters/step-functions/execution.js';
import { activity, createEngine, defineWorkflow, type Engine, type WorkflowDefinition } from '../engine/index.js';
import { fmtInt, fmtMs, otherCpu, percentile, pool, printEnvironment, table } from './core.js';

const N = 1_000;
const SOLO = 200;
const START_CONCURRENCY = 64;
const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };
const ROLE = 'arn:aws:iam::123456789012:role/bench';
const WATCHDOG_MS = 170_000;

const now = (): number => performance.now();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A workflow whose one state invokes `actor`, then ends. */
function oneStage(name: string, actor: PromiseActorLogic<unknown, { n: number }>): WorkflowDefinition {
  return defineWorkflow({
    name,
    version: 1,
    input: z.object({ n: z.number() }),
    events: { NOOP: z.object({}) },
    machine: setup({ types: { context: {} as { n: number }, input: {} as { n: number } }, actors: { stage: actor } }).createMachine({
      context: ({ input }) => ({ n: input.n }),
      initial: 'working',
      states: {
        working: {
          invoke: { src: 'stage', input: ({ context }: { context: { n: number } }) => ({ n: context.n }), onDone: 'done', onError: 'failed' },
          on: { NOOP: {} },
        },
        done: { type: 'final' },
        failed: { type: 'final' },
      },
    }),
  });
}

const pass = JSON.stringify({ StartAt: 'Stage', States: { Stage: { Type: 'Pass', End: true } } });
const long = JSON.stringify({ StartAt: 'Nap', States: { Nap: { Type: 'Wait', Seconds: 60, End: true } } });

interface Side {
  local: LocalStepFunctions;
  admin: SFNClient;
  engine: Engine;
  extension: StepFunctionsExtension;
  forwarder: NatsConnection;
  namespace: string;
}

const servers: NatsServer[] = [];
const sides: Side[] = [];

/** An endpoint, its state machine(s) and an engine with the extension, in a namespace of its own. */
async function side(
  url: string,
  label: string,
  machines: Record<string, string>,
  workflowsOf: (arns: Record<string, string>) => WorkflowDefinition[],
  maxRequestsPerSecond?: number,
  pushMachines: string[] = [],
): Promise<Side & { arns: Record<string, string> }> {
  const namespace = `bench_sfn_${label}_${process.pid}`;
  const forwarder = await connect({ servers: url, noAsyncTraces: true });
  const arns: Record<string, string> = {};
  const pushArns = new Set<string>();
  // What an EventBridge rule forwarding "Step Functions Execution Status Change" into NATS does.
  const local = await startLocalStepFunctions({
    onStatusChange: (e) => {
      if (pushArns.has(e.detail.stateMachineArn)) forwarder.publish(`${namespace}.sfn.status`, JSON.stringify(e));
    },
  });
  const admin = new SFNClient({ endpoint: local.endpoint, region: local.region, credentials: CREDENTIALS });
  for (const [name, definition] of Object.entries(machines)) {
    arns[name] = (await admin.send(new CreateStateMachineCommand({ name, definition, roleArn: ROLE }))).stateMachineArn!;
    if (pushMachines.includes(name)) pushArns.add(arns[name]);
  }
  const extension = stepFunctions({
    region: local.region,
    endpoint: local.endpoint,
    credentials: CREDENTIALS,
    ...(maxRequestsPerSecond ? { maxRequestsPerSecond } : {}),
  });
  const engine = await createEngine({
    servers: url,
    namespace,
    workflows: workflowsOf(arns),
    extensions: [extension],
    name: `bench-sfn-${label}`,
    recordShards: 1,
  });
  const s = { local, admin, engine, extension, forwarder, namespace, arns };
  sides.push(s);
  return s;
}

/** Calls `onDone(key, t)` the first time the instance at `key` is seen done (or failed). */
async function watchDone(nc: NatsConnection, namespace: string, onDone: (key: string, t: number, status: string) => void): Promise<() => void> {
  const kv = await new Kvm(nc).open(`${namespace}_instances`);
  const watcher = await kv.watch();
  const seen = new Set<string>();
  void (async () => {
    for await (const e of watcher) {
      if (e.operation !== 'PUT' || seen.has(e.key)) continue;
      const r = JSON.parse(new TextDecoder().decode(e.value)) as { status: string; snapshot?: { value?: unknown } };
      if (r.status === 'running') continue;
      seen.add(e.key);
      onDone(e.key, now(), r.status === 'done' && r.snapshot?.value === 'failed' ? 'failed' : r.status);
    }
  })();
  return () => watcher.stop();
}

interface Burst {
  seconds: number;
  rate: number;
  p50: number;
  p99: number;
  max: number;
  failed: number;
}

/** Starts `n` instances of `wf` (ids `prefix<i>`) at once; stages per second and start→done latencies. */
async function burst(s: Side, nc: NatsConnection, wf: WorkflowDefinition, prefix: string, n: number): Promise<Burst> {
  const startedAt = new Map<string, number>();
  const latencies: number[] = [];
  let failed = 0;
  let all!: () => void;
  const finished = new Promise<void>((r) => (all = r));
  const stop = await watchDone(nc, s.namespace, (key, t, status) => {
    if (!key.startsWith(`${wf.name}.${prefix}`)) return;
    if (status !== 'done') failed++;
    latencies.push(t - startedAt.get(key)!);
    if (latencies.length === n) all();
  });
  const ids = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  const t0 = now();
  await pool(ids, START_CONCURRENCY, async (id) => {
    startedAt.set(`${wf.name}.${id}`, now());
    await s.engine.start(wf, { id, input: { n: 0 } });
  });
  await Promise.race([finished, sleep(60_000).then(() => Promise.reject(new Error(`${wf.name} ${prefix}: ${latencies.length} of ${n} done after 60 s`)))]);
  const seconds = (now() - t0) / 1_000;
  stop();
  latencies.sort((a, b) => a - b);
  return { seconds, rate: n / seconds, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), max: latencies[latencies.length - 1]!, failed };
}

/** One instance after another: start→done latencies. */
async function solo(s: Side, nc: NatsConnection, wf: WorkflowDefinition, prefix: string, n: number): Promise<{ p50: number; p99: number }> {
  const latencies: number[] = [];
  let waiting: { key: string; t0: number; done: () => void } | undefined;
  const stop = await watchDone(nc, s.namespace, (key, t) => {
    if (waiting && key === waiting.key) {
      latencies.push(t - waiting.t0);
      waiting.done();
    }
  });
  for (let i = 0; i < n; i++) {
    const id = `${prefix}${i}`;
    await new Promise<void>((done) => {
      waiting = { key: `${wf.name}.${id}`, t0: now(), done };
      void s.engine.start(wf, { id, input: { n: i } });
    });
  }
  stop();
  latencies.sort((a, b) => a - b);
  return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
}

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    console.error(`bench:sfn did not finish within ${WATCHDOG_MS / 1_000} s; stopping`);
    void cleanup().finally(() => process.exit(1));
  }, WATCHDOG_MS);
  const tAll = now();
  printEnvironment();
  const server = await NatsServer.start();
  servers.push(server);
  const nc = await connect({ servers: server.url, noAsyncTraces: true });
  const noise = otherCpu(server.pid);

  // 1 and 2: stages against the no-op activity, one engine.
  const noop = oneStage(
    'noop',
    activity<{ n: number }, unknown>(async () => ({ ok: true }), { retry: { maxAttempts: 1 } }),
  );
  let pushWf!: WorkflowDefinition;
  let pollWf!: WorkflowDefinition;
  const a = await side(
    server.url,
    'stages',
    { pushed: pass, polled: pass },
    (arns) => {
      pushWf = oneStage('sfn_push', stepFunctionsExecution<unknown, { n: number }>({ stateMachineArn: arns['pushed']!, completion: 'push' }));
      pollWf = oneStage('sfn_poll', stepFunctionsExecution<unknown, { n: number }>({ stateMachineArn: arns['polled']! }));
      return [noop, pushWf, pollWf];
    },
    100,
    ['pushed'],
  );
  process.stderr.write('warm-up ... ');
  await burst(a, nc, noop, 'w', 50);
  await burst(a, nc, pushWf, 'w', 50);
  process.stderr.write('done\n');

  process.stderr.write(`burst of ${N}: no-op activity ... `);
  const bNoop = await burst(a, nc, noop, 'b', N);
  process.stderr.write(`${bNoop.seconds.toFixed(1)} s; push ... `);
  const pushBefore = a.extension.stats();
  const bPush = await burst(a, nc, pushWf, 'b', N);
  const pushAfter = a.extension.stats();
  process.stderr.write(`${bPush.seconds.toFixed(1)} s; poll ... `);
  const pollBefore = a.extension.stats();
  const bPoll = await burst(a, nc, pollWf, 'b', N);
  const pollAfter = a.extension.stats();
  process.stderr.write(`${bPoll.seconds.toFixed(1)} s\n`);

  process.stderr.write(`one at a time, ${SOLO} each ... `);
  const sNoop = await solo(a, nc, noop, 's', SOLO);
  const sPush = await solo(a, nc, pushWf, 's', SOLO);
  process.stderr.write('done\n');

  // 3: polling cost while 1,000 long executions are pending, three engines at once.
  const longWf: WorkflowDefinition[] = [];
  const longOf = (name: string, completion: 'poll' | 'push') => (arns: Record<string, string>) => [
    (longWf[longWf.length] = oneStage(name, stepFunctionsExecution<unknown, { n: number }>({ stateMachineArn: arns['long']!, completion }))),
  ];
  const pending = [
    { label: 'poll, default limit 10 requests/s', s: await side(server.url, 'poll10', { long }, longOf('long_poll', 'poll')), wf: longWf[0]! },
    { label: 'poll, limit raised to 1,000 requests/s', s: await side(server.url, 'poll1000', { long }, longOf('long_poll', 'poll'), 1_000), wf: longWf[1]! },
    {
      label: "completion 'push' (status events into NATS)",
      s: await side(server.url, 'push', { long }, longOf('long_push', 'push'), undefined, ['long']),
      wf: longWf[2]!,
    },
  ];
  process.stderr.write(`starting ${N} executions that wait 60 s on each of 3 engines ... `);
  const tLong = now();
  await Promise.all(
    pending.map((p) =>
      pool(
        Array.from({ length: N }, (_, i) => `l${i}`),
        START_CONCURRENCY,
        (id) => p.s.engine.start(p.wf, { id, input: { n: 0 } }),
      ),
    ),
  );
  const deadline = now() + 30_000;
  while (pending.some((p) => p.s.extension.stats().pending < N)) {
    if (now() > deadline) throw new Error(`executions not all pending after 30 s: ${pending.map((p) => p.s.extension.stats().pending).join(', ')}`);
    await sleep(100);
  }
  const allPendingS = (now() - tLong) / 1_000;
  // The window ends before the first execution's 60 s are up.
  const windowS = Math.min(30, Math.floor(55 - allPendingS));
  process.stderr.write(`all pending after ${allPendingS.toFixed(1)} s; counting DescribeExecution for ${windowS} s ... `);
  const describes = (p: (typeof pending)[number]): number => p.s.local.stats().byAction['DescribeExecution'] ?? 0;
  const before = pending.map(describes);
  await sleep(windowS * 1_000);
  const after = pending.map(describes);
  const pendingAtEnd = pending.map((p) => p.s.extension.stats().pending);
  process.stderr.write('done\n');

  // Tables
  const added = (x: number, base: number): string => fmtMs(x - base);
  console.log(`\n== ${fmtInt(N)} instances started at once, one stage each (Pass state; loopback endpoint) ==`);
  console.log(
    table([
      ['', 'no-op activity', "stage, completion 'push'", "stage, completion 'poll'"],
      ['stages per second (first start to all done)', fmtInt(bNoop.rate), fmtInt(bPush.rate), fmtInt(bPoll.rate)],
      ['  elapsed (s)', bNoop.seconds.toFixed(2), bPush.seconds.toFixed(2), bPoll.seconds.toFixed(2)],
      ['start -> done p50 (ms)', fmtMs(bNoop.p50), fmtMs(bPush.p50), fmtMs(bPoll.p50)],
      ['  p99 (ms)', fmtMs(bNoop.p99), fmtMs(bPush.p99), fmtMs(bPoll.p99)],
      ['  max (ms)', fmtMs(bNoop.max), fmtMs(bPush.max), fmtMs(bPoll.max)],
      [
        'added by the stage, p50 / p99 (ms)',
        '',
        `${added(bPush.p50, bNoop.p50)} / ${added(bPush.p99, bNoop.p99)}`,
        `${added(bPoll.p50, bNoop.p50)} / ${added(bPoll.p99, bNoop.p99)}`,
      ],
      [
        'StartExecution / DescribeExecution calls',
        '',
        `${pushAfter.starts - pushBefore.starts} / ${pushAfter.describes - pushBefore.describes}`,
        `${pollAfter.starts - pollBefore.starts} / ${pollAfter.describes - pollBefore.describes}`,
      ],
      ['instances not done (failed)', String(bNoop.failed), String(bPush.failed), String(bPoll.failed)],
    ]),
  );
  console.log("(the engine's maxRequestsPerSecond is 100 here; at the default 10, polled completions are capped at 10 stages/s per engine)");
  console.log(`\n== one instance at a time, ${SOLO} each ==`);
  console.log(
    table([
      ['', 'no-op activity', "stage, completion 'push'", 'added by the stage'],
      ['start -> done p50 (ms)', fmtMs(sNoop.p50), fmtMs(sPush.p50), added(sPush.p50, sNoop.p50)],
      ['  p99 (ms)', fmtMs(sNoop.p99), fmtMs(sPush.p99), added(sPush.p99, sNoop.p99)],
    ]),
  );
  console.log(`\n== polling while ${fmtInt(N)} executions (Wait 60 s) are pending: DescribeExecution over ${windowS} s ==`);
  console.log(
    table([
      ['', 'requests', 'requests/s', 'per pending execution (/s)', 'pending'],
      ...pending.map((p, i) => {
        const rate = (after[i]! - before[i]!) / windowS;
        return [p.label, fmtInt(after[i]! - before[i]!), rate.toFixed(1), (rate / pendingAtEnd[i]!).toFixed(4), fmtInt(pendingAtEnd[i]!)];
      }),
    ]),
  );
  console.log('(poll schedule per execution: 5 s, then x1.5 up to 60 s, ±20% jitter: 0.2/s at first, 1/60 = 0.0167/s at the 60 s maximum)');
  const other = noise();
  console.log(
    `\ntotal ${((now() - tAll) / 1_000).toFixed(0)} s${other !== undefined ? `; other processes used ${other.toFixed(2)} cores meanwhile${other > 0.1 ? ' (the figures are less reliable)' : ''}` : ''}`,
  );
  clearTimeout(watchdog);
  await nc.close();
}

async function cleanup(): Promise<void> {
  for (const s of sides) {
    await s.engine.close().catch(() => {});
    await s.forwarder.close().catch(() => {});
    s.admin.destroy();
    await s.local.close().catch(() => {});
  }
  for (const s of servers) {
    await s.stop().catch(() => {});
    await rm(s.storeDir, { recursive: true, force: true }).catch(() => {});
  }
}

main().then(
  async () => {
    await cleanup();
    process.exit(0);
  },
  async (e: unknown) => {
    console.error(`bench:sfn failed: ${(e as Error).stack ?? String(e)}`);
    await cleanup();
    process.exit(1);
  },
);
