/**
 * What a node loss costs in plain NATS, without jetstate: 3 servers on loopback, $STREAMS (16) R3
 * streams with a publisher each (one publish per 100 ms), and a loop that creates R1 consumers on
 * stream s0 (1.5 s timeout each), as partition readers do. The server leading the most streams is
 * SIGKILLed, restarted after $DOWN_MS (21 s); printed: leader changes, each stream's failed
 * publishes and longest gap, and every consumer create (ok@server or the error).
 *
 *   STREAMS=20 node --import tsx bench/leader-loss-probe.ts
 */
import { jetstreamManager, jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { startCluster } from '../adapters/nats-server/launcher.js';

const STREAMS = Number(process.env.STREAMS ?? 16);
const DOWN_MS = Number(process.env.DOWN_MS ?? 21_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

let t0 = Date.now();
const t = () => `${((Date.now() - t0) / 1000).toFixed(2)}s`;
const servers = await startCluster({ size: 3, name: 'probe' });
const urls = servers.map((s) => s.url);
const nc = await connect({ servers: urls, maxReconnectAttempts: -1, reconnectTimeWait: 250, name: 'probe-pub' });
const ncw = await connect({ servers: urls, maxReconnectAttempts: -1, reconnectTimeWait: 250, name: 'probe-watch' });
nc.closed().catch(() => {});
(async () => {
  for await (const s of nc.status()) console.log(`${t()} pub-conn status ${s.type} ${JSON.stringify((s as any).server ?? (s as any).data ?? '')}`);
})();
const jsm = await jetstreamManager(ncw, { timeout: 2_000 });
for (let i = 0; i < STREAMS; i++) await jsm.streams.add({ name: `s${i}`, subjects: [`s${i}.>`], num_replicas: 3, duplicate_window: 120e9 } as never);
const js = jetstream(nc);
let running = true;
const failures: Array<{ s: number; at: number; err: string; took: number }> = [];
const lastOk = new Array<number>(STREAMS).fill(0);
const maxGap = new Array<number>(STREAMS).fill(0);
const pubs = Array.from({ length: STREAMS }, async (_, i) => {
  let n = 0;
  while (running) {
    const began = Date.now();
    try {
      await js.publish(`s${i}.x`, new TextEncoder().encode(String(n)), { msgID: `m${i}-${n}` });
      const now = Date.now();
      if (lastOk[i]) maxGap[i] = Math.max(maxGap[i]!, now - lastOk[i]!);
      lastOk[i] = now;
      n++;
    } catch (e) {
      failures.push({ s: i, at: began - t0, err: `${(e as Error).name}:${(e as Error).message}`.slice(0, 80), took: Date.now() - began });
    }
    await sleep(100);
  }
});
async function leaders(): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  await Promise.all(
    Array.from({ length: STREAMS }, async (_, i) => {
      try {
        m.set(`s${i}`, (await jsm.streams.info(`s${i}`)).cluster?.leader ?? '-');
      } catch (e) {
        m.set(`s${i}`, `err:${(e as Error).message.slice(0, 30)}`);
      }
    }),
  );
  return m;
}
await sleep(2_000);
const before = await leaders();
const count = new Map<string, number>();
for (const l of before.values()) count.set(l, (count.get(l) ?? 0) + 1);
const victimName = [...count].sort((a, b) => b[1] - a[1])[0]![0];
const victim = servers[Number(victimName.slice(1))]!;
console.log(`leaders before: ${JSON.stringify(Object.fromEntries(count))}; killing ${victimName}`);
t0 = Date.now();
for (let i = 0; i < STREAMS; i++) {
  lastOk[i] = 0;
  maxGap[i] = 0;
}
failures.length = 0;
const killAt = Date.now();
await victim.kill();
for (let i = 0; i < STREAMS; i++) lastOk[i] = killAt;
// Consumer creates on s0 (as a partition reader makes them), each with a 1.5 s timeout.
const creates: string[] = [];
const jsmc = await jetstreamManager(nc, { timeout: 1_500, checkAPI: false } as never);
const creator = (async () => {
  for (let n = 0; running; n++) {
    const began = Date.now();
    try {
      const ci = await jsmc.consumers.add('s0', {
        name: `c${n}`,
        ack_policy: 'none' as never,
        mem_storage: true,
        num_replicas: 1,
        inactive_threshold: 10e9,
      } as never);
      creates.push(`${((began - t0) / 1000).toFixed(1)}:ok@${ci.cluster?.leader}(${Date.now() - began}ms)`);
    } catch (e) {
      creates.push(`${((began - t0) / 1000).toFixed(1)}:${(e as Error).message.slice(0, 12)}`);
    }
    await sleep(200);
  }
})();
const poller = (async () => {
  let prev = '';
  while (running) {
    const m = await leaders();
    const s = [...m].map(([k, v]) => `${k}=${v}`).join(' ');
    if (s !== prev) console.log(`${t()} leaders: ${s}`);
    prev = s;
    await sleep(500);
  }
})();
await sleep(DOWN_MS);
console.log(`${t()} restarting ${victimName}`);
await victim.restart();
await sleep(5_000);
running = false;
await Promise.all(pubs);
await poller;
await creator;
console.log(`consumer creates on s0: ${creates.join(' ')}`);
const byStream = new Map<number, typeof failures>();
for (const f of failures) byStream.set(f.s, [...(byStream.get(f.s) ?? []), f]);
for (let i = 0; i < STREAMS; i++) {
  const fs = byStream.get(i) ?? [];
  console.log(
    `s${i} leader-before=${before.get(`s${i}`)} failures=${fs.length} first=${fs[0] ? fs[0].at : '-'}ms last=${fs.at(-1) ? fs.at(-1)!.at + fs.at(-1)!.took : '-'}ms maxGapOk=${maxGap[i]}ms errs=${[...new Set(fs.map((f) => f.err))].join(' | ')}`,
  );
}
await nc.close();
await ncw.close();
for (const s of servers) await s.kill();
process.exit(0);
