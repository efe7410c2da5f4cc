/**
 * Effects benchmark: durable timers and tasks on a real nats-server started here.
 *
 *   npm run bench:effects              # 10,000 timers due within one minute (~80 s in all)
 *   npm run bench:effects -- --quick   # 2,000 timers within 10 s
 *   npm run bench:effects -- --from-stream   # the activity runs from the tasks stream (inProcess: false)
 *
 * 1. Timer lateness: N instances each with one `after` timer, due times spread evenly over a
 *    window; lateness = the time a KV watch sees the instance's expired state minus the due time
 *    (so it includes firing, the fire event, the step and the write).
 * 2. Tasks per second: M instances each invoking a no-op activity, from start until all are done.
 * 3. What a task adds: one instance at a time, GO then a plain transition to a final state, against
 *    GO then a state that invokes a no-op activity whose done event leads to the final state;
 *    from `send()` returning to a KV watch seeing the final state.
 */
import { performance } from 'node:perf_hooks';
import os from 'node:os';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { setup } from 'xstate';
import { z } from 'zod';
import { NatsServer } from '../adapters/nats-server/launcher.js';
import { activity, createEngine, defineWorkflow } from '../engine/index.js';
import { percentile, pool, table, fmtInt, fmtMs } from './core.js';

const quick = process.argv.includes('--quick');
const fromStream = process.argv.includes('--from-stream');
const TIMERS = quick ? 2_000 : 10_000;
const WINDOW_MS = quick ? 10_000 : 60_000;
const LEAD_MS = quick ? 5_000 : 15_000;
const TASKS = quick ? 1_000 : 5_000;
const SOLO = quick ? 100 : 300;

const timed = defineWorkflow({
  name: 'timed',
  version: 1,
  input: z.object({ dueAtMs: z.number() }),
  events: { NOOP: z.object({}) },
  machine: setup({
    types: { context: {} as { dueAtMs: number }, input: {} as { dueAtMs: number } },
    delays: { due: ({ context }) => Math.max(0, context.dueAtMs - Date.now()) },
  }).createMachine({
    context: ({ input }) => ({ dueAtMs: input.dueAtMs }),
    initial: 'waiting',
    states: { waiting: { after: { due: 'fired' }, on: { NOOP: {} } }, fired: { type: 'final' } },
  }),
});

const tasked = defineWorkflow({
  name: 'tasked',
  version: 1,
  input: z.object({ viaTask: z.boolean() }),
  events: { GO: z.object({}) },
  machine: setup({
    types: { context: {} as { viaTask: boolean }, input: {} as { viaTask: boolean } },
    actors: { noop: activity(async () => ({ ok: true }), { retry: { maxAttempts: 1 }, inProcess: !fromStream }) },
  }).createMachine({
    context: ({ input }) => ({ viaTask: input.viaTask }),
    initial: 'idle',
    states: {
      idle: { on: { GO: [{ guard: ({ context }) => context.viaTask, target: 'working' }, { target: 'done' }] } },
      working: { invoke: { src: 'noop', onDone: 'done' } },
      done: { type: 'final' },
    },
  }),
});

const ms = (): number => performance.now();
const server = await NatsServer.start();
const nc = await connect({ servers: server.url, noAsyncTraces: true });
const namespace = `bench_effects_${process.pid}`;
const engine = await createEngine({ servers: server.url, namespace, workflows: [timed, tasked], recordShards: 1 });
const kv = await new Kvm(nc).open(`${namespace}_instances`);
const rows: string[][] = [['measure', 'value']];
try {
  console.log(`machine: ${os.cpus()[0]?.model ?? '?'} x ${os.cpus().length}, node ${process.version}, nats-server at ${server.url}`);

  // 1. Timer lateness
  const firedAt = new Map<string, number>();
  const watcher = await kv.watch({ key: 'timed.>' });
  let allFired!: () => void;
  const fired = new Promise<void>((r) => (allFired = r));
  void (async () => {
    for await (const e of watcher) {
      if (e.operation !== 'PUT' || firedAt.has(e.key)) continue;
      if ((JSON.parse(new TextDecoder().decode(e.value)) as { status: string }).status === 'done') {
        firedAt.set(e.key, Date.now());
        if (firedAt.size === TIMERS) allFired();
      }
    }
  })();
  const base = Date.now() + LEAD_MS;
  const due = new Map<string, number>();
  const ids = Array.from({ length: TIMERS }, (_, i) => `t${i}`);
  const t0 = ms();
  await pool(ids, 64, async (id) => {
    const i = Number(id.slice(1));
    const dueAtMs = base + Math.floor((i * WINDOW_MS) / TIMERS);
    due.set(`timed.${id}`, dueAtMs);
    await engine.start(timed, { id, input: { dueAtMs } });
  });
  console.log(
    `started ${TIMERS} timed instances in ${((ms() - t0) / 1_000).toFixed(1)} s; due over ${WINDOW_MS / 1_000} s from ${new Date(base).toISOString()}`,
  );
  await fired;
  watcher.stop();
  const lateness = [...firedAt].map(([k, t]) => t - due.get(k)!).sort((a, b) => a - b);
  rows.push([`timer lateness, ${fmtInt(TIMERS)} timers due within ${WINDOW_MS / 1_000} s: p50 (ms)`, fmtMs(percentile(lateness, 0.5))]);
  rows.push(['  p99 (ms)', fmtMs(percentile(lateness, 0.99))]);
  rows.push(['  max (ms) / fired early', `${fmtMs(lateness[lateness.length - 1]!)} / ${lateness.filter((l) => l < 0).length}`]);

  // 2. Tasks per second
  const doneKeys = new Set<string>();
  const taskWatch = await kv.watch({ key: 'tasked.>' });
  let allDone!: () => void;
  let target = TASKS;
  let doneResolve = new Promise<void>((r) => (allDone = r));
  const solo = new Map<string, () => void>();
  void (async () => {
    for await (const e of taskWatch) {
      if (e.operation !== 'PUT' || doneKeys.has(e.key)) continue;
      if ((JSON.parse(new TextDecoder().decode(e.value)) as { status: string }).status === 'done') {
        doneKeys.add(e.key);
        solo.get(e.key)?.();
        if (doneKeys.size === target) allDone();
      }
    }
  })();
  const taskIds = Array.from({ length: TASKS }, (_, i) => `k${i}`);
  await pool(taskIds, 64, (id) => engine.start(tasked, { id, input: { viaTask: true } }));
  const t1 = ms();
  await pool(taskIds, 64, (id) => engine.send(tasked, id, { type: 'GO' }));
  await doneResolve;
  const taskSeconds = (ms() - t1) / 1_000;
  rows.push([
    `tasks/s, ${fmtInt(TASKS)} instances each running a no-op task${fromStream ? ' from the tasks stream' : ''} (from the first GO)`,
    fmtInt(TASKS / taskSeconds),
  ]);

  // 3. What a task adds to one transition
  const latency = async (viaTask: boolean): Promise<number[]> => {
    const out: number[] = [];
    for (let i = 0; i < SOLO; i++) {
      const id = `${viaTask ? 'viaTask' : 'plain'}${i}`;
      await engine.start(tasked, { id, input: { viaTask } });
      const seen = new Promise<void>((r) => solo.set(`tasked.${id}`, r));
      target = -1;
      await engine.send(tasked, id, { type: 'GO' });
      const t = ms();
      await seen;
      out.push(ms() - t);
    }
    return out.sort((a, b) => a - b);
  };
  doneResolve = Promise.resolve();
  const plain = await latency(false);
  const viaTask = await latency(true);
  rows.push([`one instance, GO to final state, plain transition: p50 / p99 (ms)`, `${fmtMs(percentile(plain, 0.5))} / ${fmtMs(percentile(plain, 0.99))}`]);
  rows.push([
    `one instance, GO to final state through a no-op task: p50 / p99 (ms)`,
    `${fmtMs(percentile(viaTask, 0.5))} / ${fmtMs(percentile(viaTask, 0.99))}`,
  ]);
  rows.push(['  added by the task, p50 (ms)', fmtMs(percentile(viaTask, 0.5) - percentile(plain, 0.5))]);
  taskWatch.stop();
  console.log('\n' + table(rows));
} finally {
  await engine.close();
  await nc.close();
  await server.stop();
}
