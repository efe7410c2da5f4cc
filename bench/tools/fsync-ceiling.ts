/**
 * The disk ceiling under `sync_interval: always`: acknowledged publishes per second into one
 * stream and into two streams at once (jetstate writes a KV record and a history message per
 * applied batch), 256 publishes in flight, 128-byte payloads; and the time of one publish at a time
 * (the floor of a step that waits for its write, as one instance's durable steps do).
 *
 *   npx tsx bench/tools/fsync-ceiling.ts [--default]
 */
import { performance } from 'node:perf_hooks';
import { rm } from 'node:fs/promises';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { NatsServer } from '../../adapters/nats-server/launcher.js';

const srv = await NatsServer.start({ syncAlways: !process.argv.includes('--default') });
const nc = await connect({ servers: srv.url, noAsyncTraces: true });
const js = jetstream(nc);
const jsm = await jetstreamManager(nc);
await jsm.streams.add({ name: 'a', subjects: ['a.>'], storage: 'file' as never });
await jsm.streams.add({ name: 'b', subjects: ['b.>'], storage: 'file' as never });
const payload = new Uint8Array(128);
async function run(subjects: string[], total: number): Promise<number> {
  let next = 0;
  const t = performance.now();
  await Promise.all(
    Array.from({ length: 256 }, async () => {
      while (next < total) {
        const i = next++;
        await js.publish(`${subjects[i % subjects.length]}.k${i % 1000}`, payload);
      }
    }),
  );
  return total / ((performance.now() - t) / 1_000);
}
await run(['a'], 2_000); // warm-up
console.log(
  `${process.argv.includes('--default') ? 'default' : 'sync_interval: always'}: one stream ${Math.round(await run(['a'], 10_000))} msgs/s, two streams ${Math.round(await run(['a', 'b'], 10_000))} msgs/s`,
);
// One at a time: from the publish to its acknowledgement, 2,000 times after 200 warm-up publishes.
for (const size of [128, 2_048]) {
  const body = new Uint8Array(size);
  const took: number[] = [];
  for (let i = 0; i < 2_200; i++) {
    const t = performance.now();
    await js.publish(`a.one${i % 10}`, body);
    if (i >= 200) took.push(performance.now() - t);
  }
  took.sort((x, y) => x - y);
  const mean = took.reduce((x, y) => x + y, 0) / took.length;
  console.log(
    `one publish at a time, ${size} B: p50 ${took[took.length >> 1]!.toFixed(3)} ms, p90 ${took[Math.floor(took.length * 0.9)]!.toFixed(3)} ms, mean ${mean.toFixed(3)} ms`,
  );
}
await nc.close();
await srv.stop();
await rm(srv.storeDir, { recursive: true, force: true });
