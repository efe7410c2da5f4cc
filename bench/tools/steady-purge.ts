/**
 * Long-running check of the lease round's purge under `sync_interval: always`: a paced open-loop
 * load (default 1,000 events/s over 200 instances) for longer than the duplicate window (120 s)
 * plus the engine's 10 s margin, after which applied events start being purged every lease round.
 * Prints latency (send() returned -> KV watch sees the state) per 10 s window.
 *
 *   npx tsx bench/tools/steady-purge.ts [seconds=160] [rate=1000] [--default]
 */
import { performance } from 'node:perf_hooks';
import { rm } from 'node:fs/promises';
import { z } from 'zod';
import { assign, setup } from 'xstate';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm, KvWatchInclude } from '@nats-io/kv';
import { NatsServer } from '../../adapters/nats-server/launcher.js';
import { createEngine, defineWorkflow } from '../../engine/index.js';

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
const pos = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const seconds = Number(pos[0] ?? 160);
const rate = Number(pos[1] ?? 1_000);
const always = !process.argv.includes('--default');
const now = (): number => performance.now();

const srv = await NatsServer.start({ syncAlways: always });
const hard = setTimeout(
  () => {
    console.error('steady-purge: hard timeout');
    void srv.stop().finally(() => process.exit(1));
  },
  (seconds + 60) * 1_000,
);
const ns = 'steady';
const engine = await createEngine({ servers: srv.url, namespace: ns, workflows: [counter], recordShards: 1 });
const ids = Array.from({ length: 200 }, (_, i) => `s${i}`);
await Promise.all(ids.map((id) => engine.start(counter, { id, input: {} })));
const nc = await connect({ servers: srv.url, noAsyncTraces: true });
const jsm = await jetstreamManager(nc);
const kv = await new Kvm(jetstream(nc)).open(`${ns}_instances`);
const watcher = await kv.watch({ include: KvWatchInclude.UpdatesOnly });
const seen = new Map<string, number>();
const pending = new Map<string, Array<{ target: number; sentAt: number }>>();
const windows: Array<{ lat: number[]; sendMax: number }> = [];
const start = now();
const windowOf = (t: number): { lat: number[]; sendMax: number } => {
  const w = Math.floor((t - start) / 10_000);
  while (windows.length <= w) windows.push({ lat: [], sendMax: 0 });
  return windows[w]!;
};
void (async () => {
  for await (const e of watcher) {
    const t = now();
    if (e.operation !== 'PUT') continue;
    const count = (JSON.parse(new TextDecoder().decode(e.value)) as { snapshot: { context: { count: number } } }).snapshot.context.count;
    seen.set(e.key, Math.max(count, seen.get(e.key) ?? 0));
    const list = pending.get(e.key) ?? [];
    const keep = list.filter((p) => {
      if (p.target > count) return true;
      windowOf(p.sentAt).lat.push(t - p.sentAt);
      return false;
    });
    pending.set(e.key, keep);
  }
})();
const sent = new Map(ids.map((id) => [id, 0]));
const total = seconds * rate;
let i = 0;
await new Promise<void>((resolve) => {
  const tick = (): void => {
    const due = Math.min(total, Math.floor(((now() - start) * rate) / 1_000) + 1);
    while (i < due) {
      const id = ids[i++ % ids.length]!;
      const key = `counter.${id}`;
      const target = sent.get(id)! + 1;
      sent.set(id, target);
      const t = now();
      void engine.send(counter, id, { type: 'INC' }).then(() => {
        const sentAt = now();
        const w = windowOf(t);
        w.sendMax = Math.max(w.sendMax, sentAt - t);
        if ((seen.get(key) ?? 0) >= target) windowOf(sentAt).lat.push(0);
        else pending.set(key, [...(pending.get(key) ?? []), { target, sentAt }]);
      });
    }
    if (i >= total) resolve();
    else setTimeout(tick, 1);
  };
  tick();
});
await new Promise((r) => setTimeout(r, 2_000));
const info = await jsm.streams.info(`${ns}_events`);
console.log(
  `${always ? 'sync_interval: always' : 'default settings'}, ${rate} events/s over ${ids.length} instances for ${seconds} s; events stream now holds ${info.state.messages} of ${info.state.last_seq} events`,
);
console.log('window      n    p50 ms    p99 ms    max ms   max send() ms');
const pct = (s: number[], q: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN;
windows.forEach((w, k) => {
  const s = [...w.lat].sort((a, b) => a - b);
  console.log(
    `${String(k * 10).padStart(3)}-${String(k * 10 + 10).padEnd(3)} s ${String(s.length).padStart(6)} ${pct(s, 0.5).toFixed(2).padStart(9)} ${pct(s, 0.99).toFixed(2).padStart(9)} ${(s[s.length - 1] ?? NaN).toFixed(2).padStart(9)} ${w.sendMax.toFixed(2).padStart(12)}`,
  );
});
clearTimeout(hard);
watcher.stop();
await engine.close();
await nc.close();
await srv.stop();
await rm(srv.storeDir, { recursive: true, force: true });
process.exit(0);
