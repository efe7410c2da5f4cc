/**
 * Sends between instances: P pairs play ping-pong, R round trips each (a round trip is two steps
 * that each send an event to the other instance through its inbox). One engine and the client in
 * this process, on a nats-server started here with `sync_interval: always` (or `--default`).
 * Prints round trips per second, the p50 time of one round trip within a pair, the messages each
 * stream stored per round trip and the CPU of nats-server and of this process per round trip.
 *
 *   npm run bench:messages -- [--default] [--pairs=1,100] [--rounds=200] [--repeat=3]
 */
import { performance } from 'node:perf_hooks';
import { rm } from 'node:fs/promises';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { NatsServer } from '../adapters/nats-server/launcher.js';
import { createClient, createEngine, defineWorkflow, sendToInstance } from '../engine/index.js';
import { cpuMeter } from './peers/machine.js';

const flag = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
const always = !process.argv.includes('--default');
const pairsList = (flag('pairs') ?? '1,100').split(',').map(Number);
const rounds = Number(flag('rounds') ?? 200);
const repeat = Number(flag('repeat') ?? 3);
for (const n of [...pairsList, rounds, repeat])
  if (!Number.isInteger(n) || n < 1) {
    console.error('usage: bench/messages.ts [--default] [--pairs=1,100] [--rounds=200] [--repeat=3] (positive integers)');
    process.exit(2);
  }

type PingContext = { me: string; rounds: number; n: number; times: number[] };
/** Sends PING to its pong instance R times, one at a time; done after the last PONG. */
const ping = defineWorkflow({
  name: 'bench_ping',
  version: 1,
  input: z.object({ me: z.string(), rounds: z.number() }),
  events: { PONG: z.object({ n: z.number() }) },
  machine: setup({ types: {} as { context: PingContext; input: { me: string; rounds: number }; events: { type: 'PONG'; n: number } } }).createMachine({
    context: ({ input }) => ({ ...input, n: 0, times: [] }),
    initial: 'playing',
    entry: sendToInstance(
      ({ context }) => ({ workflow: 'bench_pong', id: context.me }),
      () => ({ type: 'PING', n: 0 }),
    ),
    states: {
      playing: {
        on: {
          PONG: [
            { guard: ({ context }) => context.n + 1 >= context.rounds, target: 'done', actions: assign({ n: ({ context }) => context.n + 1 }) },
            {
              actions: [
                assign({ n: ({ context }) => context.n + 1 }),
                sendToInstance(
                  ({ context }) => ({ workflow: 'bench_pong', id: context.me }),
                  ({ context }) => ({ type: 'PING', n: context.n }),
                ),
              ],
            },
          ],
        },
      },
      done: { type: 'final' },
    },
  }),
});
/** Answers every PING with a PONG to the ping instance of its input. */
const pong = defineWorkflow({
  name: 'bench_pong',
  version: 1,
  input: z.object({ peer: z.string() }),
  events: { PING: z.object({ n: z.number() }) },
  machine: setup({ types: {} as { context: { peer: string }; input: { peer: string }; events: { type: 'PING'; n: number } } }).createMachine({
    context: ({ input }) => ({ peer: input.peer }),
    initial: 'up',
    states: {
      up: {
        on: {
          PING: {
            actions: sendToInstance(
              ({ context }) => ({ workflow: 'bench_ping', id: context.peer }),
              ({ event }) => ({ type: 'PONG', n: event.n }),
            ),
          },
        },
      },
    },
  }),
});

const namespace = 'msgbench';
const srv = await NatsServer.start({ syncAlways: always });
const options = { servers: srv.url, namespace, workflows: [ping, pong] };
const engine = await createEngine(options);
const client = await createClient(options);
const nc = await connect({ servers: srv.url, noAsyncTraces: true });
const jsm = await jetstreamManager(nc);
const waiting = new Map<string, () => void>();
nc.subscribe(`${namespace}.done.bench_ping.>`, {
  callback: (_e, m) => {
    const id = m.subject.slice(m.subject.lastIndexOf('.') + 1);
    waiting.get(id)?.();
    waiting.delete(id);
  },
});
async function lastSeqs(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const s of jsm.streams.list()) out.set(s.config.name, s.state.last_seq);
  return out;
}
let run = 0;
/** One run: P pairs, each R round trips; per pair the time from its ping's start to its end. */
async function measure(pairs: number): Promise<{ rate: number; p50: number; writes: number; events: number; server: number; self: number }> {
  const ids = Array.from({ length: pairs }, (_, i) => `r${run}p${i}`);
  run++;
  await Promise.all(ids.map((id) => client.start(pong, { id, input: { peer: id } })));
  const before = await lastSeqs();
  const meter = cpuMeter({ server: srv.pid });
  const t0 = performance.now();
  const perPair = await Promise.all(
    ids.map(async (id) => {
      const done = new Promise<void>((r) => waiting.set(id, r));
      const t = performance.now();
      await client.start(ping, { id, input: { me: id, rounds } });
      await done;
      return (performance.now() - t) / rounds;
    }),
  );
  const seconds = (performance.now() - t0) / 1_000;
  const cores = meter();
  const after = await lastSeqs();
  const trips = pairs * rounds;
  let writes = 0;
  let events = 0;
  for (const [name, seq] of after) {
    const n = seq - (before.get(name) ?? 0);
    if (/^KV_\w+_instances(_\d+)?$/.test(name)) writes += n;
    else if (name.includes('_evt_')) events += n;
  }
  perPair.sort((a, b) => a - b);
  return {
    rate: trips / seconds,
    p50: perPair[Math.floor(perPair.length / 2)]!,
    writes: writes / trips,
    events: events / trips,
    server: ((cores['server'] ?? NaN) * seconds * 1e6) / trips,
    self: ((cores['bench'] ?? NaN) * seconds * 1e6) / trips,
  };
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

console.log(`## Sends between instances (npm run bench:messages -- ${process.argv.slice(2).join(' ')})\n`);
console.log(
  `nats-server ${always ? '`sync_interval: always`' : 'default settings'}; ${rounds} round trips per pair (two sends each); median of ${repeat} runs after a warm-up\n`,
);
console.log(
  '| pairs | round trips/s | p50 ms per round trip | record writes per round trip | events msgs per round trip | nats-server CPU µs per round trip | this process CPU µs per round trip |',
);
console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
await measure(Math.max(...pairsList)); // warm-up
for (const pairs of pairsList) {
  const runs: Awaited<ReturnType<typeof measure>>[] = [];
  for (let i = 0; i < repeat; i++) runs.push(await measure(pairs));
  const m = (f: (r: (typeof runs)[number]) => number): number => median(runs.map(f));
  console.log(
    `| ${pairs} | ${m((r) => r.rate).toFixed(0)} | ${m((r) => r.p50).toFixed(2)} | ${m((r) => r.writes).toFixed(2)} | ${m((r) => r.events).toFixed(2)} | ${m((r) => r.server).toFixed(0)} | ${m((r) => r.self).toFixed(0)} |`,
  );
}
await client.close();
await engine.close();
await nc.close();
await srv.stop();
await rm(srv.storeDir, { recursive: true, force: true });
