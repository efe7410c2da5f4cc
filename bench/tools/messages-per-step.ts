/**
 * Workload A of the peer bench (10 durable steps per invocation) with an engine and a client in
 * this process, C invocations in flight: the messages each stream stored per step, and the CPU
 * per step of nats-server and of this process. CPU from /proc (Linux), through the peer bench's meter.
 *
 *   npx tsx bench/tools/messages-per-step.ts [--default] [--c=100] [--n=2000] [--heap]
 *
 * `--heap`: also what this process allocated per step (the engine, the client and this loop), by
 * function, from V8's sampling heap profiler with the objects the GC collected counted too.
 */
import { performance } from 'node:perf_hooks';
import { Session } from 'node:inspector';
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
const heap = process.argv.includes('--heap') ? await heapSampler() : undefined;
const meter = cpuMeter({ server: srv.pid });
const t0 = performance.now();
await run(N);
const cores = meter();
const allocated = await heap?.stop();
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
if (allocated) {
  const total = [...allocated.values()].reduce((a, b) => a + b, 0);
  console.log(`  allocated by this process: ${Math.round(total / steps).toLocaleString('en-US')} bytes per step (sampled); the largest:`);
  for (const [where, bytes] of [...allocated].sort((a, b) => b[1] - a[1]).slice(0, 25))
    console.log(
      `    ${Math.round(bytes / steps)
        .toLocaleString('en-US')
        .padStart(6)} B ${((100 * bytes) / total).toFixed(1).padStart(5)} %  ${where}`,
    );
}
await client.close();
await engine.close();
await nc.close();
await srv.stop();
await rm(srv.storeDir, { recursive: true, force: true });

/** Bytes allocated by function (natives under the function that called them) between start and stop. */
async function heapSampler(): Promise<{ stop(): Promise<Map<string, number>> }> {
  const session = new Session();
  session.connect();
  const post = <T>(method: string, params?: object): Promise<T> =>
    new Promise((resolve, reject) => session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res as T))));
  await post('HeapProfiler.enable');
  await post('HeapProfiler.startSampling', { samplingInterval: 4_096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  type Node = { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: Node[] };
  return {
    async stop() {
      const { profile } = await post<{ profile: { head: Node } }>('HeapProfiler.stopSampling');
      session.disconnect();
      const bytes = new Map<string, number>();
      const walk = (n: Node, caller: string): void => {
        const { functionName, url, lineNumber } = n.callFrame;
        const here = url ? `${functionName || '(anonymous)'} ${url.replace(/^.*\/(engine|adapters|bench|node_modules)\//, '$1/')}:${lineNumber + 1}` : caller;
        const key = url ? here : `${functionName || '(native)'} <- ${caller}`;
        bytes.set(key, (bytes.get(key) ?? 0) + n.selfSize);
        for (const c of n.children) walk(c, here);
      };
      walk(profile.head, '(root)');
      return bytes;
    },
  };
}
