/**
 * Web view benchmark: how the UI server and page behave with a large namespace. Writes N instance
 * records (default 100,000) straight into the instances bucket (copies of real records made by
 * `start()`, with varied ids, versions, statuses and states), then starts the UI server and
 * measures:
 *
 *   index build   from the server's start until its one KV watch has read every record
 *   HTTP          the page's requests as the browser makes them (HTML, script, CSS, overview,
 *                 first list page) and list pages with each filter and cursor, many times each
 *   browser       Debian's Chromium (playwright-core): a fresh page until the list's rows are on
 *                 screen; an instance page until its statechart is drawn and highlighted
 *   live          while records are rewritten as fast as one client can, the time until the index
 *                 shows the last one, and list latency meanwhile
 *
 * Nothing here passes or fails; figures go to docs/PERFORMANCE.md ("UI").
 *
 *   npm run bench:ui                       # 100,000 instances
 *   npm run bench:ui -- --instances=20000
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { NatsServer } from '../adapters/nats-server/launcher.js';
import { createUiServer } from '../adapters/ui/index.js';
import { createClient } from '../engine/index.js';
import { approval, order } from '../workflows/index.js';
import { chromiumMissing, launchChromium } from '../test/ui/chromium.js';

const arg = (name: string, fallback: number): number => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? fallback);
const N = arg('instances', 100_000);
const REPEAT = arg('repeat', 200);

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
};
const ms = (x: number): string => (x < 10 ? x.toFixed(2) : x.toFixed(0));
const row = (label: string, xs: number[]): string => `| ${label} | ${ms(pct(xs, 0.5))} | ${ms(pct(xs, 0.95))} | ${ms(pct(xs, 0.99))} |`;

console.log(
  `machine: ${cpus()[0]?.model ?? '?'}, nproc ${cpus().length}, ${Math.round(totalmem() / 2 ** 30)} GiB; node ${process.version}; load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
console.log(`command: npx tsx bench/ui.ts --instances=${N} --repeat=${REPEAT}\n`);

const storeDir = await mkdtemp(join(tmpdir(), 'jetstate-bench-ui-'));
const nats = await NatsServer.start({ storeDir });
const namespace = 'bench';
try {
  // Two real records to copy: start() writes them as the engine would.
  // One record bucket: the seeding below writes records straight into it.
  const client = await createClient({ servers: nats.url, namespace, workflows: [order, approval], recordShards: 1 });
  await client.start(order, { id: 'template-o', input: { orderId: 'template-o', customer: 'ada', amount: 30 } });
  await client.start(approval, { id: 'template-a', input: { requester: 'ada', resource: 'db' } });
  await client.close();
  const nc = await connect({ servers: nats.url, noAsyncTraces: true });
  const kv = await new Kvm(nc).open(`${namespace}_instances`);
  const templates = {
    order: JSON.parse((await kv.get('order.template-o'))!.string()) as Record<string, unknown>,
    approval: JSON.parse((await kv.get('approval.template-a'))!.string()) as Record<string, unknown>,
  };
  const orderStates = [
    ['running', 'awaitingPayment'],
    ['running', 'awaitingPayment'],
    ['running', 'paid'],
    ['running', 'shipped'],
    ['done', 'delivered'],
    ['done', 'cancelled'],
    ['done', 'expired'],
  ] as const;
  const approvalStates = [
    ['running', 'pending'],
    ['running', 'provisioning'],
    ['done', 'granted'],
    ['done', 'rejected'],
    ['failed', 'failed'],
  ] as const;
  const ids: string[] = [];
  const record = (i: number, revision = 1 + (i % 5)): { key: string; value: string } => {
    const isOrder = i % 5 !== 0;
    const wf = isOrder ? 'order' : 'approval';
    const [status, state] = isOrder ? orderStates[i % orderStates.length]! : approvalStates[Math.floor(i / 5) % approvalStates.length]!;
    const id = (ids[i] ??= `${isOrder ? 'o' : 'a'}-${String(i).padStart(6, '0')}-${randomBytes(3).toString('hex')}`);
    const t = templates[wf];
    const snapshot = { ...(t['snapshot'] as Record<string, unknown>), value: state, status: status === 'running' ? 'active' : status };
    const now = Date.now();
    return { key: `${wf}.${id}`, value: JSON.stringify({ ...t, id, status, snapshot, revision, createdAtMs: now - i * 1000, updatedAtMs: now - i * 10 }) };
  };
  /**
   * The rewrites during the live measurement come from a worker thread with its own connection,
   * so their cost is not charged to the UI server's event loop (in production they come from
   * other processes).
   */
  const writeElsewhere = (items: Array<{ key: string; value: string }>): Promise<number> =>
    new Promise((resolve, reject) => {
      const code = `
        const { workerData, parentPort } = require('node:worker_threads');
        (async () => {
          const { connect } = await import('@nats-io/transport-node');
          const { Kvm } = await import('@nats-io/kv');
          const nc = await connect({ servers: workerData.servers, noAsyncTraces: true });
          const kv = await new Kvm(nc).open(workerData.bucket);
          const t0 = performance.now();
          const items = workerData.items;
          for (let i = 0; i < items.length; i += 1000) await Promise.all(items.slice(i, i + 1000).map((r) => kv.put(r.key, r.value)));
          const ms = performance.now() - t0;
          await nc.close();
          parentPort.postMessage(ms);
        })().catch((e) => { throw e; });`;
      const worker = new Worker(code, { eval: true, workerData: { servers: nats.url, bucket: `${namespace}_instances`, items } });
      worker.once('message', (ms: number) => resolve(ms));
      worker.once('error', reject);
    });
  const write = async (items: Array<{ key: string; value: string }>): Promise<number> => {
    const t0 = performance.now();
    for (let i = 0; i < items.length; i += 1_000) await Promise.all(items.slice(i, i + 1_000).map((r) => kv.put(r.key, r.value)));
    return performance.now() - t0;
  };
  const records = Array.from({ length: N }, (_, i) => record(i));
  const writeMs = await write(records);
  const bytes = records.reduce((n, r) => n + r.value.length, 0);
  console.log(`wrote ${N.toLocaleString('en')} records (${(bytes / N).toFixed(0)} bytes each on average) in ${(writeMs / 1000).toFixed(1)} s\n`);

  // The heap the index takes: measured after full collections on both sides.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  await nc.flush();
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  const ui = await createUiServer({ servers: nats.url, namespace, workflows: [order, approval], port: 0 });
  const listening = performance.now() - t0;
  await ui.ready();
  const indexed = performance.now() - t0;
  gc();
  const heapAfter = process.memoryUsage().heapUsed;
  console.log(
    `UI server listening after ${ms(listening)} ms; index of ${N.toLocaleString('en')} instances ready after ${ms(indexed)} ms; heap +${((heapAfter - heapBefore) / 2 ** 20).toFixed(0)} MiB\n`,
  );

  const timed = async (path: string): Promise<number> => {
    const s = performance.now();
    const res = await fetch(`${ui.url}${path.replace(/^\//, '')}`, { headers: { 'accept-encoding': 'gzip' } });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`${path}: ${res.status}`);
    return performance.now() - s;
  };
  const middle = records[Math.floor(N / 2)]!.key;
  const cases: Array<[string, string]> = [
    ['first page, no filter', '/api/instances?limit=50'],
    ['workflow=order, status=running', '/api/instances?workflow=order&status=running&limit=50'],
    ['workflow=order, state=shipped', '/api/instances?workflow=order&state=shipped&limit=50'],
    ['status=failed (every workflow)', '/api/instances?status=failed&limit=50'],
    ['id prefix o-0500 (every workflow)', '/api/instances?prefix=o-0500&limit=50'],
    ['a page in the middle (after=cursor)', `/api/instances?after=${middle}&limit=50`],
    ['the page before it (before=cursor)', `/api/instances?before=${middle}&limit=50`],
    ['rare state, no match (full walk)', '/api/instances?workflow=order&state=nosuchstate&limit=50'],
    ['overview (counts, rates)', '/api/overview'],
  ];
  for (const [, path] of cases) await timed(path); // warm
  console.log('HTTP, one request at a time, ms:\n');
  console.log('| request | p50 | p95 | p99 |\n|---|---:|---:|---:|');
  const pageLoad: number[] = [];
  for (let i = 0; i < Math.min(REPEAT, 100); i++) {
    let sum = 0;
    for (const p of ['/', '/app.js', '/app.css', '/api/overview', '/api/instances?limit=50']) sum += await timed(p);
    pageLoad.push(sum);
  }
  console.log(row('page load: HTML + app.js + CSS + overview + first list page, sequential', pageLoad));
  for (const [label, path] of cases) {
    const xs: number[] = [];
    for (let i = 0; i < REPEAT; i++) xs.push(await timed(path));
    console.log(row(label, xs));
  }
  // The copies have no history of their own (client.history() waits up to 5 s for a history
  // that reaches the record's revision), so the instance page is measured on the two real ones.
  const detail: number[] = [];
  for (let i = 0; i < Math.min(REPEAT, 100); i++) detail.push(await timed(i % 2 ? '/api/instances/order/template-o' : '/api/instances/approval/template-a'));
  console.log(row('one instance (record, client.get + client.history)', detail));

  // Live: rewrite records (a new revision each) as fast as one client can while pages are read.
  const updates = Array.from({ length: Math.min(20_000, N) }, (_, i) => record(i, 10));
  const lastKey = updates[updates.length - 1]!.key;
  const during: number[] = [];
  let writing = true;
  const reader = (async () => {
    while (writing) during.push(await timed('/api/instances?workflow=order&status=running&limit=50'));
  })();
  const u0 = performance.now();
  const writerMs = await writeElsewhere(updates);
  const written = performance.now() - u0;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const page = (await (await fetch(`${ui.url}api/instances?prefix=${lastKey.split('.')[1]}&limit=1`)).json()) as { rows: Array<{ revision: number }> };
    if (page.rows[0]?.revision === 10) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const caughtUp = performance.now() - u0;
  writing = false;
  await reader;
  console.log(row(`list page while ${updates.length.toLocaleString('en')} records are rewritten (${during.length} requests)`, during));
  console.log(
    `\nlive: ${updates.length.toLocaleString('en')} records rewritten by another thread in ${ms(writerMs)} ms (${Math.round(updates.length / (writerMs / 1000)).toLocaleString('en')}/s); the index showed the last one ${ms(caughtUp - written)} ms after the last write was acknowledged\n`,
  );

  const missing = chromiumMissing();
  if (missing) console.log(`browser: skipped (${missing})`);
  else {
    const browser = await launchChromium();
    try {
      const listLoad: number[] = [];
      const instanceLoad: number[] = [];
      const target = 'order/template-o';
      for (let i = 0; i < 11; i++) {
        const page = await browser.context.newPage();
        let s = performance.now();
        await page.goto(`${ui.url}#/instances`);
        await page.locator('table.instances tr[data-key]').first().waitFor({ timeout: 30_000 });
        listLoad.push(performance.now() - s);
        s = performance.now();
        await page.goto(`${ui.url}#/i/${target}`);
        await page.locator('svg.chart .node.active').first().waitFor({ timeout: 30_000 });
        instanceLoad.push(performance.now() - s);
        await page.close();
      }
      // The first of each starts a cold browser (its cache, its first worker): reported apart.
      console.log('browser (Chromium, fresh page each time), ms:\n');
      console.log('| page | first | p50 of the next 10 | max of the next 10 |\n|---|---:|---:|---:|');
      console.log(
        `| list: navigation until the first rows are on screen | ${ms(listLoad[0]!)} | ${ms(pct(listLoad.slice(1), 0.5))} | ${ms(Math.max(...listLoad.slice(1)))} |`,
      );
      console.log(
        `| instance: until the statechart is laid out, drawn and highlighted | ${ms(instanceLoad[0]!)} | ${ms(pct(instanceLoad.slice(1), 0.5))} | ${ms(Math.max(...instanceLoad.slice(1)))} |`,
      );
    } finally {
      await browser.close();
    }
  }
  await ui.close();
  await nc.close();
} finally {
  await nats.stop();
  await rm(storeDir, { recursive: true, force: true });
}
