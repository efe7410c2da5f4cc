/**
 * What group commit would save nats-server: its CPU per record when every record is one synced
 * publish, against records packed several to a message (one fsync and one acknowledgement per
 * message). Four streams (as four record shards), 700-byte records (a workload A record), about
 * 100 records in flight. CPU from /proc (Linux), through the peer bench's meter.
 *
 *   npx tsx bench/tools/server-cpu-per-write.ts [--default] [--per-subject=1]
 *
 * `--default`: nats-server's default sync (every 2 minutes) instead of `sync_interval: always`;
 * `--per-subject=N`: streams keep N messages per subject, as a KV bucket with history N.
 */
import { performance } from 'node:perf_hooks';
import { rm } from 'node:fs/promises';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { NatsServer } from '../../adapters/nats-server/launcher.js';
import { cpuMeter } from '../peers/machine.js';

const arg = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
const perSubject = arg('per-subject');
const RECORD_BYTES = 700;
const STREAMS = 4;

const srv = await NatsServer.start({ syncAlways: !process.argv.includes('--default') });
const nc = await connect({ servers: srv.url, noAsyncTraces: true });
const js = jetstream(nc);
const jsm = await jetstreamManager(nc);
for (let i = 0; i < STREAMS; i++)
  await jsm.streams.add({
    name: `s${i}`,
    subjects: [`s${i}.>`],
    storage: 'file' as never,
    ...(perSubject ? { max_msgs_per_subject: Number(perSubject) } : {}),
  });

async function run(perMessage: number, records: number): Promise<string> {
  const payload = new Uint8Array(RECORD_BYTES * perMessage);
  const messages = Math.ceil(records / perMessage);
  const inflight = Math.max(4, Math.round(100 / perMessage));
  let next = 0;
  const meter = cpuMeter({ server: srv.pid });
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (next < messages) {
        const i = next++;
        await js.publish(`s${i % STREAMS}.k${i % 1_000}`, payload);
      }
    }),
  );
  const s = (performance.now() - t0) / 1_000;
  // Cores used on average, as µs of CPU per record.
  const cores = meter();
  const perRecord = (who: string): string => (((cores[who] ?? NaN) * s * 1_000_000) / records).toFixed(1);
  return `| ${perMessage} | ${Math.round(records / s).toLocaleString('en-US')} | ${Math.round(messages / s).toLocaleString('en-US')} | ${perRecord('server')} | ${perRecord('bench')} |`;
}

await run(1, 5_000); // warm-up
console.log(`nats-server ${process.argv.includes('--default') ? 'default sync' : 'sync_interval: always'}${perSubject ? `, ${perSubject} per subject` : ''}`);
console.log('| records per message | records/s | messages/s | server CPU µs per record | client CPU µs per record |');
console.log('|---:|---:|---:|---:|---:|');
for (const n of [1, 4, 10, 25]) console.log(await run(n, 30_000));
await nc.close();
await srv.stop();
await rm(srv.storeDir, { recursive: true, force: true });
