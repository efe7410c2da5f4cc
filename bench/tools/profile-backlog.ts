/**
 * jetstate only: a backlog of 1000 instances x 20 events applied by one engine, CPU-profiled with
 * node:inspector from engine start until every instance shows all its events (one KV watch).
 *
 *   npx tsx bench/tools/profile-backlog.ts [maxBatch=256] [out.cpuprofile] [--always] [--patch-nats]
 *
 * --patch-nats: in this process only, stops nats-core's RequestOne.cancel() from building a
 * `new RequestError("cancelled")` (an Error with a stack) after every request that already
 * resolved, to measure what that costs.
 *   npx tsx bench/tools/cpuprofile-summary.ts out.cpuprofile
 */
import { performance } from 'node:perf_hooks';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Session } from 'node:inspector/promises';
import { z } from 'zod';
import { assign, setup } from 'xstate';
import { connect } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { Kvm, KvWatchInclude } from '@nats-io/kv';
import { NatsServer } from '../../adapters/nats-server/launcher.js';
import { createEngine, createClient, defineWorkflow } from '../../engine/index.js';
const counter = defineWorkflow({
  name: 'counter',
  version: 1,
  input: z.object({}),
  events: { INC: z.object({}) },
  machine: setup({ types: { context: {} as { count: number } } }).createMachine({
    context: { count: 0 },
    initial: 'a',
    states: { a: { on: { INC: { actions: assign({ count: ({ context }) => context.count + 1 }) } } } },
  }),
});
if (process.argv.includes('--patch-nats')) {
  const { RequestOne } = (await import('@nats-io/nats-core/internal')) as unknown as {
    RequestOne: { prototype: { resolver(err: unknown, msg: unknown): void; cancel(err?: Error): void } };
  };
  type Patched = { settled?: boolean; timer?: { cancel(): void }; mux: { cancel(r: unknown): void }; deferred: { reject(e: unknown): void } };
  const resolver = RequestOne.prototype.resolver;
  RequestOne.prototype.resolver = function (this: Patched, err: unknown, msg: unknown) {
    this.settled = true; // the original resolver settles the deferred, then calls cancel()
    resolver.call(this, err, msg);
  };
  const cancel = RequestOne.prototype.cancel;
  RequestOne.prototype.cancel = function (this: Patched, err?: Error) {
    if (err) return cancel.call(this, err);
    this.timer?.cancel();
    this.mux.cancel(this);
    if (!this.settled) this.deferred.reject(new Error('cancelled'));
  };
}
const maxBatch = Number(process.argv[2] && !process.argv[2].startsWith('--') ? process.argv[2] : 256);
const out = process.argv[3] && !process.argv[3].startsWith('--') ? process.argv[3] : join(tmpdir(), `jetstate-backlog-${maxBatch}.cpuprofile`);
const srv = await NatsServer.start({ syncAlways: process.argv.includes('--always') });
const ns = 'p1';
const c = await createClient({ servers: srv.url, namespace: ns, workflows: [counter], recordShards: 1 });
const N = 1000,
  E = 20;
const ids = Array.from({ length: N }, (_, i) => `i${i}`);
for (let i = 0; i < ids.length; i += 100) await Promise.all(ids.slice(i, i + 100).map((id) => c.start(counter, { id, input: {} })));
for (let r = 0; r < E; r++)
  for (let i = 0; i < ids.length; i += 250) await Promise.all(ids.slice(i, i + 250).map((id) => c.send(counter, id, { type: 'INC' })));
await c.close();
const nc = await connect({ servers: srv.url, noAsyncTraces: true });
const kv = await new Kvm(jetstream(nc)).open(`${ns}_instances`);
const w = await kv.watch({ include: KvWatchInclude.UpdatesOnly });
const doneKeys = new Set<string>();
let resolve!: () => void;
const done = new Promise<void>((r) => (resolve = r));
void (async () => {
  for await (const e of w) {
    if (e.operation === 'PUT' && JSON.parse(new TextDecoder().decode(e.value)).snapshot.context.count >= E) {
      doneKeys.add(e.key);
      if (doneKeys.size === N) resolve();
    }
  }
})();
const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 200 });
await session.post('Profiler.start');
const t0 = performance.now();
const e = await createEngine({ servers: srv.url, namespace: ns, workflows: [counter], maxBatch, recordShards: 1 });
await done;
const secs = (performance.now() - t0) / 1000;
const { profile } = await session.post('Profiler.stop');
await writeFile(out, JSON.stringify(profile));
console.log(`maxBatch ${maxBatch}: ${N * E} events in ${secs.toFixed(2)} s = ${Math.round((N * E) / secs)}/s; profile ${out}`);
w.stop();
await nc.close();
await e.close();
await srv.stop();
await rm(srv.storeDir, { recursive: true, force: true });
