/**
 * Workload A of the peer bench (10 durable steps per invocation) with an engine and a client in
 * this process, C invocations in flight: the messages each stream stored per step, and the CPU
 * per step of nats-server and of this process. CPU from /proc (Linux), through the peer bench's meter.
 *
 *   npx tsx bench/tools/messages-per-step.ts [--default] [--c=100] [--n=2000]
 */
import { performance } from 'node:perf_hooks';
import { rm } from 'node:fs/promises';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { NatsServer } from '../../adapters/nats-server/launcher.js';
import { createClient, createEngine } from '../../engine/index.js';
import { peerSteps, peerTally } from '../peers/jetstate-workflows.js';
import { cpuMeter } from '../peers/machine.js';

const arg = (name: string, fallback: number): number => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? fallback);
const C = arg('c', 100);
const N = arg('n', 2_000);
const namespace = 'peers';

const srv = await NatsServer.start({ syncAlways: !process.argv.includes('--default') });
const options = { servers: srv.url, namespace, workflows: [peerSteps, peerTally] };
const engine = await createEngine(options);
const client = await createClient(options);
const nc = await connect({ servers: srv.url, noAsyncTraces: true });
const jsm = await jetstreamManager(nc);

// An invocation is complete when the engine's completion notice for it arrives (core NATS).
const waiting = new Map<string, () => void>();
nc.subscribe(`${namespace}.done.peer_steps.>`, {
  callback: (_e, m) => {
    const id = m.subject.slice(m.subject.lastIndexOf('.') + 1);
    waiting.get(id)?.();
    waiting.delete(id);
  },
});
let counter = 0;
async function run(count: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(C, count) }, async () => {
      while (next++ < count) {
        const id = `i${counter++}`;
        const done = new Promise<void>((r) => waiting.set(id, r));
        await client.start(peerSteps, { id, input: {} });
        await done;
      }
    }),
  );
}
async function lastSeqs(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const s of jsm.streams.list()) out.set(s.config.name, s.state.last_seq);
  return out;
}

await run(Math.min(500, N)); // warm-up
const before = await lastSeqs();
const meter = cpuMeter({ server: srv.pid });
const t0 = performance.now();
await run(N);
const cores = meter();
const seconds = (performance.now() - t0) / 1_000;
const after = await lastSeqs();
const steps = N * 10;
const byKind = new Map<string, number>();
for (const [name, seq] of after) {
  const n = seq - (before.get(name) ?? 0);
  // The events streams, one per partition, and the record shards, summed.
  const kind = name.replace(/_evt_peer_(steps|tally)_\d+$/, '_evt_*').replace(/^KV_(\w+)_instances(_\d+)?$/, 'KV_$1_instances*');
  if (n > 0) byKind.set(kind, (byKind.get(kind) ?? 0) + n);
}
console.log(`workload A, C=${C}, ${N} invocations, nats-server ${process.argv.includes('--default') ? 'default sync' : 'sync_interval: always'}`);
for (const [kind, n] of byKind) console.log(`  ${kind.padEnd(28)} ${(n / steps).toFixed(3)} messages per step`);
const perStep = (who: string): string => (((cores[who] ?? NaN) * seconds * 1_000_000) / steps).toFixed(0);
console.log(`  nats-server CPU ${perStep('server')} µs per step; this process (engine and client) ${perStep('bench')} µs per step`);
await client.close();
await engine.close();
await nc.close();
await srv.stop();
await rm(srv.storeDir, { recursive: true, force: true });
