/**
 * With `sync_interval: always`, how long do the engine's per-partition filtered purges take, and do
 * they stall concurrent publishes? Compared with one unfiltered purge up to the same sequence.
 *
 *   npx tsx bench/tools/purge-stall.ts [messages=2000]
 */
import { performance } from 'node:perf_hooks';
import { rm } from 'node:fs/promises';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { NatsServer } from '../../adapters/nats-server/launcher.js';
const srv = await NatsServer.start({ syncAlways: true });
const nc = await connect({ servers: srv.url, noAsyncTraces: true });
const js = jetstream(nc);
const jsm = await jetstreamManager(nc);
await jsm.streams.add({ name: 'ev', subjects: ['ev.>'], storage: 'file' as never });
for (const mode of ['filtered x16', 'unfiltered seq']) {
  const n = Number(process.argv[2] ?? 2_000);
  const ps: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) ps.push(js.publish(`ev.${i % 16}.x.i${i}`, 'x'));
  await Promise.all(ps);
  const last = (await jsm.streams.info('ev')).state.last_seq;
  // concurrent publisher measuring latency
  let stop = false;
  const lat: number[] = [];
  const pub = (async () => {
    while (!stop) {
      const t = performance.now();
      await js.publish('ev.0.y.z', 'y');
      lat.push(performance.now() - t);
    }
  })();
  await new Promise((r) => setTimeout(r, 50));
  const t = performance.now();
  if (mode === 'filtered x16') await Promise.all(Array.from({ length: 16 }, (_, p) => jsm.streams.purge('ev', { filter: `ev.${p}.>`, seq: last + 1 })));
  else await jsm.streams.purge('ev', { seq: last + 1 });
  const ms = performance.now() - t;
  await new Promise((r) => setTimeout(r, 50));
  stop = true;
  await pub;
  console.log(`sync always, ${n} msgs, ${mode}: purge ${ms.toFixed(1)} ms; concurrent publish max ${Math.max(...lat).toFixed(1)} ms`);
  await jsm.streams.purge('ev');
}
await nc.close();
await srv.stop();
await rm(srv.storeDir, { recursive: true, force: true });
