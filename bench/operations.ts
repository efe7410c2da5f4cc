/**
 * What the operator's choices cost: figures for docs/OPERATIONS.md. One run starts its own
 * nats-servers (127.0.0.1, fresh stores, removed afterwards) and measures jetstate with the
 * counter workflow of bench/core.ts:
 *
 *   1. storage: one server with default settings, and with `sync_interval: always`;
 *   2. replicas: a 3-server loopback cluster with `replicas: 3`, default fsync and sync always;
 *   3. partitions: one server, default settings, 4 / 16 / 64 partitions, with one engine, two
 *      engines in this process, and two engines in two processes.
 *
 * For 1 and 2: throughput on a backlog (1,000 instances x 20 events, as bench/core.ts) and the
 * latency of one instance (from `send()` returning to a KV watch seeing the new state).
 * For 3: the backlog throughput only.
 *
 *   npm run bench:ops                        # full run, about 3.5 minutes on 2 cores when idle
 *   npm run bench:ops -- --repeat=3          # each throughput 3 times (default 5, on the cluster 3)
 *   npm run bench:ops -- --only=storage,replicas,partitions
 *   npm run bench:ops -- --quick             # 500 x 10 backlog, 500 latency samples, repeat 1
 *   npm run bench:ops -- --no-wait           # do not wait for other processes to go quiet
 *
 * Before each measurement it waits (up to 20 s, 2 minutes in all) until other processes have
 * been idle for 0.4 s; steps during which they still used CPU are marked and listed,
 * and the throughput medians leave those runs out when a quiet run exists.
 *
 * It prints figures only: nothing in it passes or fails.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { NatsServer, findNatsServer, startCluster as startLocalCluster } from '../adapters/nats-server/launcher.js';
import { createEngine, type Engine, type EngineOptions } from '../engine/index.js';
import {
  CFG,
  connectFast,
  counter,
  fmtInt,
  fmtMs,
  jetstateSoloLatency,
  jetstateThroughput,
  medianRun,
  now,
  oneEngine,
  otherCpu,
  table,
  type Admin,
  type FleetFactory,
  type LatencyStats,
  type Servers,
  type ThroughputStats,
} from './core.js';

const thisFile = fileURLToPath(import.meta.url);
const repoRoot = fileURLToPath(new URL('..', import.meta.url));

// ---------------------------------------------------------------------------------------------
// Configuration

function runMain(): Promise<void> {
  return main().then(
    () => process.exit(0),
    async (e: unknown) => {
      console.error(`bench:ops failed: ${(e as Error).stack ?? String(e)}`);
      await cleanup();
      process.exit(1);
    },
  );
}

const args = process.argv.slice(2);
const quick = args.includes('--quick');
/** Do not wait for other processes to go quiet before each measurement. */
const noWait = args.includes('--no-wait');
const repeat = Math.max(1, Number(args.find((a) => a.startsWith('--repeat='))?.slice('--repeat='.length) ?? (quick ? 1 : 5)) || 1);
/** A cluster run with sync always takes ~12 s, mostly publishing its backlog: fewer repetitions there. */
const clusterRepeat = Math.min(repeat, 3);
const SECTIONS = ['storage', 'replicas', 'partitions'] as const;
type Section = (typeof SECTIONS)[number];
const only = new Set(
  (
    args
      .find((a) => a.startsWith('--only='))
      ?.slice('--only='.length)
      .split(',') ?? [...SECTIONS]
  ).map((s) => {
    if (!(SECTIONS as readonly string[]).includes(s)) {
      console.error(`--only takes a comma-separated list of ${SECTIONS.join(', ')}; got '${s}'`);
      process.exit(2);
    }
    return s as Section;
  }),
);
const OPS = quick
  ? { instances: 500, events: 10, soloWarmup: 100, soloEvents: 500 }
  : { instances: CFG.instances, events: CFG.eventsPerInstance, soloWarmup: CFG.soloWarmup, soloEvents: CFG.soloEvents };
const PARTITION_COUNTS = [4, 16, 64] as const;
/** The whole run stops by itself after this. */
const WATCHDOG_MS = 300_000 + Math.max(0, repeat - 5) * 40_000 + (noWait ? 0 : 120_000);

// ---------------------------------------------------------------------------------------------
// Servers, children and cleanup

const servers = new Set<NatsServer>();
const children = new Set<ChildProcess>();

async function stopServers(list: NatsServer[]): Promise<void> {
  await Promise.all(
    list.map(async (s) => {
      await s.stop().catch(() => {});
      servers.delete(s);
      await rm(s.storeDir, { recursive: true, force: true });
    }),
  );
}

async function cleanup(): Promise<void> {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await stopServers([...servers]);
}

async function startServer(syncAlways: boolean): Promise<NatsServer[]> {
  const s = await NatsServer.start({ syncAlways });
  servers.add(s);
  return [s];
}

/** Three nats-servers clustered on loopback, once JetStream can place a 3-replica stream. */
async function startCluster(syncAlways: boolean): Promise<NatsServer[]> {
  const list = await startLocalCluster({ size: 3, syncAlways, name: 'jetstate_ops' });
  for (const s of list) servers.add(s);
  return list;
}

// ---------------------------------------------------------------------------------------------
// Engines

/**
 * Cores busy since the call, from /proc: on the whole machine (every process), and in the given
 * nats-server processes.
 */
function cpuMeter(serverPids: Array<number | undefined>): () => { machine: number; servers: number } {
  const read = (): { busy: number; servers: number; t: number } => {
    try {
      const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
      let servers = 0;
      for (const pid of serverPids) {
        if (pid === undefined) continue;
        const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const rest = st.slice(st.lastIndexOf(')') + 2).split(' ');
        servers += Number(rest[11]) + Number(rest[12]); // utime, stime
      }
      return { busy: f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!, servers, t: now() };
    } catch {
      return { busy: NaN, servers: NaN, t: now() };
    }
  };
  const start = read();
  return () => {
    const end = read();
    const seconds = (end.t - start.t) / 1_000;
    // USER_HZ is 100 on Linux.
    return { machine: (end.busy - start.busy) / 100 / seconds, servers: (end.servers - start.servers) / 100 / seconds };
  };
}

/** Extra facts about the engines of one throughput run, filled in by the fleet. */
interface FleetInfo {
  /** Other processes used more than NOISE_CORES during this run. */
  noisy?: boolean;
  /** Every run's rate, noisy ones marked with *. */
  runsText?: string;
  /** Runs the median was taken over: the quiet ones if there were any, else all. */
  medianOf?: string;
  /** Partitions owned by each engine right after it started, e.g. "8+8". */
  split: string;
  /** Cores busy on the machine, and in the nats-server(s), from engine start until the backlog was applied. */
  busyCores: number;
  serverCores: number;
}

/** Wraps a fleet so that it records CPU use from start() to close(). */
function metered(factory: FleetFactory, info: FleetInfo, serverPids: Array<number | undefined>, split: () => string): FleetFactory {
  return async (options) => {
    const fleet = await factory(options);
    let meter: (() => { machine: number; servers: number }) | undefined;
    return {
      async start() {
        meter = cpuMeter(serverPids);
        await fleet.start();
        info.split = split();
      },
      async close() {
        if (meter) {
          const used = meter();
          info.busyCores = used.machine;
          info.serverCores = used.servers;
        }
        await fleet.close();
      },
    };
  };
}

/**
 * Registers both engines as members before either starts, as two engines that were already
 * running would be: each then takes half of the partitions at once. Without this the first one
 * takes them all and hands half over a lease round (leaseTtlMs / 3, 1.7 s) later, after this
 * backlog is done.
 */
async function registerMembers(admin: Admin, namespace: string, engineIds: string[]): Promise<void> {
  const control = await new Kvm(jetstream(admin.nc)).open(`${namespace}_control`);
  for (const id of engineIds) await control.put(`member.${id}`, JSON.stringify({ atMs: Date.now() }));
}

/** Two engines in this process. */
function twoEnginesHere(admin: Admin, owned: number[]): FleetFactory {
  return async (options) => {
    await registerMembers(admin, options.namespace!, ['ea', 'eb']);
    const engines: Engine[] = [];
    return {
      async start() {
        engines.push(...(await Promise.all(['ea', 'eb'].map((engineId) => createEngine({ ...options, engineId })))));
        owned.splice(0, owned.length, ...engines.map((e) => e.status().owned.length));
      },
      async close() {
        await Promise.all(engines.map((e) => e.close()));
      },
    };
  };
}

/** One engine in this process and one in a child process (spawned before the clock starts). */
function twoEnginesTwoProcesses(admin: Admin, owned: number[]): FleetFactory {
  return async (options) => {
    await registerMembers(admin, options.namespace!, ['ea', 'eb']);
    const childOptions: Partial<EngineOptions> = { ...options, engineId: 'eb', name: 'bench-ops-child' };
    delete childOptions.workflows;
    const child = spawn(process.execPath, ['--import', 'tsx', thisFile, '--engine-child', JSON.stringify(childOptions)], {
      cwd: repoRoot,
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    children.add(child);
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    void exited.then(() => children.delete(child));
    const lines = createInterface({ input: child.stdout! });
    const waiters = new Map<string, (rest: string) => void>();
    lines.on('line', (line) => {
      const [word, ...rest] = line.split(' ');
      waiters.get(word!)?.(rest.join(' '));
    });
    const expect = (word: string, ms: number): Promise<string> =>
      new Promise((ok, ko) => {
        const timer = setTimeout(() => ko(new Error(`engine child: no ${word} within ${ms} ms`)), ms);
        waiters.set(word, (rest) => {
          clearTimeout(timer);
          ok(rest);
        });
        void exited.then(() => ko(new Error(`engine child exited before ${word}`)));
      });
    await expect('READY', 30_000);
    let engine: Engine | undefined;
    return {
      async start() {
        const started = expect('STARTED', 30_000);
        child.stdin!.write('GO\n');
        const [mine, theirs] = await Promise.all([createEngine({ ...options, engineId: 'ea' }), started]);
        engine = mine;
        owned.splice(0, owned.length, mine.status().owned.length, (JSON.parse(theirs) as { owned: number }).owned);
      },
      async close() {
        child.stdin!.write('CLOSE\n');
        await Promise.all([engine?.close(), Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))])]);
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await exited;
        }
      },
    };
  };
}

// ---------------------------------------------------------------------------------------------
// Measurements

interface Row {
  section: Section;
  label: string;
  tput?: ThroughputStats & FleetInfo;
  solo?: LatencyStats;
  soloNoisy?: boolean;
}

const rows: Row[] = [];
const noisy: string[] = [];

/** Other processes used more than this many cores during a step: its figures are marked as noisy. */
const NOISE_CORES = 0.1;
/** Cores other processes used during the last step (undefined where /proc is unavailable). */
let lastOther: number | undefined;
const lastStepNoisy = (): boolean => lastOther !== undefined && lastOther > NOISE_CORES;

/** Most time spent waiting for other processes to go quiet, per step and in the whole run. */
const QUIET_WAIT_STEP_MS = 20_000;
const QUIET_WAIT_TOTAL_MS = noWait ? 0 : 120_000;
let waitedMs = 0;

/**
 * Waits until other processes have used at most NOISE_CORES for 0.4 s (another test
 * suite on the same cores would distort the figures), within the budgets above.
 */
async function waitQuiet(pids: Array<number | undefined>): Promise<void> {
  const t = now();
  let quietWindows = 0;
  while (quietWindows < 2 && now() - t < QUIET_WAIT_STEP_MS && waitedMs + (now() - t) < QUIET_WAIT_TOTAL_MS) {
    const meter = otherCpu(pids);
    await new Promise((r) => setTimeout(r, 200));
    const other = meter();
    if (other === undefined) return;
    quietWindows = other <= NOISE_CORES ? quietWindows + 1 : 0;
  }
  // 0.4 s of every step is spent measuring; only the excess counts as waiting.
  waitedMs += Math.max(0, now() - t - 400);
}

/** Runs `f` and reports how long it took and how much CPU other processes used meanwhile. */
async function step<T>(label: string, pids: Array<number | undefined>, f: () => Promise<T>): Promise<T> {
  if (QUIET_WAIT_TOTAL_MS > 0 && !label.includes('warm-up')) await waitQuiet(pids);
  const t = now();
  process.stderr.write(`${label} ... `);
  const meter = otherCpu(pids);
  const r = await f();
  const other = (lastOther = meter());
  process.stderr.write(`${((now() - t) / 1_000).toFixed(1)} s${other !== undefined ? `, other processes ${other.toFixed(2)} cores` : ''}\n`);
  if (other !== undefined && other > NOISE_CORES && !label.includes('warm-up')) noisy.push(`${label} (${other.toFixed(2)} cores)`);
  return r;
}

interface Variant {
  label: string;
  extra: Partial<EngineOptions>;
  engines: 1 | 2;
  processes?: 2;
}

/** Throughput of each variant `times` times, interleaved, so that drift spreads over all of them. */
async function throughputs(
  section: Section,
  url: Servers,
  admin: Admin,
  pids: Array<number | undefined>,
  variants: Variant[],
  times: number,
): Promise<Map<Variant, ThroughputStats & FleetInfo>> {
  const runs = new Map<Variant, Array<ThroughputStats & FleetInfo>>(variants.map((v) => [v, []]));
  for (let i = 1; i <= times; i++) {
    for (const v of variants) {
      const owned: number[] = [];
      const info: FleetInfo = { split: '', busyCores: NaN, serverCores: NaN };
      const base = v.engines === 1 ? oneEngine : v.processes === 2 ? twoEnginesTwoProcesses(admin, owned) : twoEnginesHere(admin, owned);
      const fleet = metered(base, info, pids, () => (v.engines === 1 ? String(v.extra.partitions ?? 16) : owned.join('+')));
      const n = times > 1 ? ` (${i}/${times})` : '';
      const r = await step(`[${section}] ${v.label}: throughput${n}`, pids, () => jetstateThroughput(url, admin, v.extra, OPS.instances, OPS.events, fleet));
      runs.get(v)!.push({ ...r, ...info, noisy: lastStepNoisy() });
    }
  }
  // The median of the quiet runs (other processes idle) when there are any.
  const out = new Map<Variant, ThroughputStats & FleetInfo>();
  for (const [v, list] of runs) {
    const quiet = list.filter((r) => !r.noisy);
    const pick = quiet.length > 0 ? quiet : list;
    const median = medianRun(pick);
    const chosen = pick.find((r) => r.rate === median.rate)!;
    out.set(v, {
      ...chosen,
      runs: list.map((r) => r.rate),
      runsText: list.map((r) => `${fmtInt(r.rate)}${r.noisy ? '*' : ''}`).join(' '),
      medianOf: quiet.length > 0 ? `${quiet.length} quiet` : `all ${list.length} (none quiet)`,
    });
  }
  return out;
}

/** One server or cluster: warm-up, throughput of every variant, then one-instance latency. */
async function onServers(
  section: Section,
  list: NatsServer[],
  variants: Variant[],
  latencyExtra: Partial<EngineOptions> | undefined,
): Promise<{ tput: Map<Variant, ThroughputStats & FleetInfo>; solo: LatencyStats | undefined; soloNoisy: boolean }> {
  const url = list.length === 1 ? list[0]!.url : list.map((s) => s.url);
  const pids = list.map((s) => s.pid);
  const nc = await connectFast(url, 'bench-ops-admin');
  const admin: Admin = { nc, jsm: await jetstreamManager(nc) };
  try {
    const extra = variants[0]?.extra ?? latencyExtra ?? {};
    // Warm-up (not reported): JIT and first-use costs of this process and of fresh servers.
    await step(`[${section}] warm-up`, pids, async () => {
      await jetstateThroughput(url, admin, extra, 200, 5);
      await jetstateSoloLatency(url, admin, extra, 50, 100);
    });
    const tput = await throughputs(section, url, admin, pids, variants, list.length > 1 ? clusterRepeat : repeat);
    const solo = latencyExtra
      ? await step(`[${section}] latency, 1 instance`, pids, () => jetstateSoloLatency(url, admin, latencyExtra, OPS.soloWarmup, OPS.soloEvents))
      : undefined;
    return { tput, solo, soloNoisy: latencyExtra ? lastStepNoisy() : false };
  } finally {
    await nc.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Printing

function printRows(): void {
  const head = [
    'setting',
    'transitions/s (median)',
    'median of',
    'all runs (* noisy)',
    'elapsed s',
    'engine start ms',
    'KV writes',
    'partitions per engine',
    'CPU busy: all / nats-server',
    'send() accepted/s',
    'latency p50 ms',
    'p99 ms',
    'send() p50 / p99 ms',
  ];
  const titles: Record<Section, string> = {
    storage: '1. storage: one server, fsync by default vs sync_interval: always (16 partitions, 1 engine)',
    replicas: '2. replicas: 3-server loopback cluster, replicas: 3 (16 partitions, 1 engine)',
    partitions: '3. partitions: one server, default settings',
  };
  for (const section of SECTIONS) {
    const mine = rows.filter((r) => r.section === section);
    if (mine.length === 0) continue;
    console.log(`\n${titles[section]}`);
    const body = mine.map((r) => [
      r.label,
      r.tput ? fmtInt(r.tput.rate) : '',
      r.tput?.medianOf ?? '',
      r.tput?.runsText ?? '',
      r.tput ? r.tput.seconds.toFixed(2) : '',
      r.tput ? r.tput.startupMs.toFixed(0) : '',
      r.tput ? fmtInt(r.tput.writes) : '',
      r.tput ? r.tput.split : '',
      r.tput ? `${r.tput.busyCores.toFixed(2)} / ${r.tput.serverCores.toFixed(2)}` : '',
      r.tput?.sendRate !== undefined ? fmtInt(r.tput.sendRate) : '',
      r.solo ? `${r.soloNoisy ? '* ' : ''}${fmtMs(r.solo.p50)}` : '',
      r.solo ? fmtMs(r.solo.p99) : '',
      r.solo ? `${fmtMs(r.solo.sendP50)} / ${fmtMs(r.solo.sendP99)}` : '',
    ]);
    console.log(table([head, ...body]));
  }
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    console.error(`bench:ops: still running after ${WATCHDOG_MS / 1_000} s; stopping`);
    void cleanup().finally(() => process.exit(1));
  }, WATCHDOG_MS);
  watchdog.unref();

  const cpus = os.cpus();
  const natsVersion = spawnSync(findNatsServer(), ['--version'], { encoding: 'utf8' }).stdout.trim();
  const git = (a: string[]): string => spawnSync('git', a, { encoding: 'utf8', cwd: repoRoot }).stdout?.trim() ?? '';
  const rev = git(['rev-parse', '--short', 'HEAD']);
  const dirty = git(['status', '--porcelain', '--', 'engine', 'adapters']);
  console.log(`jetstate operations benchmark ${args.join(' ')}`.trim());
  console.log(
    `machine: ${cpus[0]?.model ?? 'unknown cpu'}, ${cpus.length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.platform()} ${os.release()}`,
  );
  console.log(`node ${process.version}, ${natsVersion}, stores in ${os.tmpdir()}`);
  if (rev) console.log(`code: git ${rev}${dirty ? ' + uncommitted changes in engine/ or adapters/' : ''}`);
  console.log(
    `load average before the run: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  console.log(
    `workflow: counter (bench/core.ts); throughput: backlog of ${fmtInt(OPS.instances)} instances x ${OPS.events} events, ` +
      `timed from engine start until a KV watch saw all applied; each throughput ${repeat}x, on the cluster ${clusterRepeat}x (median shown, runs interleaved); ` +
      `latency: 1 instance, ${fmtInt(OPS.soloEvents)} sequential sends after ${OPS.soloWarmup} warm-up, send() returned -> KV watch saw the state`,
  );
  const t0 = now();

  if (only.has('storage') || only.has('partitions')) {
    // One server with default settings serves both sections; "16 partitions, 1 engine" is also
    // the storage section's default row.
    const list = await startServer(false);
    try {
      const one16: Variant = { label: '16 partitions, 1 engine', extra: { partitions: 16 }, engines: 1 };
      const variants: Variant[] = [];
      if (only.has('partitions')) {
        for (const p of PARTITION_COUNTS) {
          variants.push(p === 16 ? one16 : { label: `${p} partitions, 1 engine`, extra: { partitions: p }, engines: 1 });
          variants.push({ label: `${p} partitions, 2 engines in 1 process`, extra: { partitions: p }, engines: 2 });
          variants.push({ label: `${p} partitions, 2 engines in 2 processes`, extra: { partitions: p }, engines: 2, processes: 2 });
        }
      } else variants.push(one16);
      const r = await onServers(only.has('partitions') ? 'partitions' : 'storage', list, variants, only.has('storage') ? {} : undefined);
      if (only.has('storage'))
        rows.push({ section: 'storage', label: 'one server, default settings', tput: r.tput.get(one16)!, solo: r.solo, soloNoisy: r.soloNoisy });
      if (only.has('partitions')) for (const v of variants) rows.push({ section: 'partitions', label: v.label, tput: r.tput.get(v)! });
    } finally {
      await stopServers(list);
    }
  }
  if (only.has('storage')) {
    const list = await startServer(true);
    try {
      const v: Variant = { label: 'one server, sync_interval: always', extra: {}, engines: 1 };
      const r = await onServers('storage', list, [v], {});
      rows.push({ section: 'storage', label: v.label, tput: r.tput.get(v)!, solo: r.solo, soloNoisy: r.soloNoisy });
    } finally {
      await stopServers(list);
    }
  }
  if (only.has('replicas')) {
    for (const syncAlways of [false, true]) {
      const setting = syncAlways ? 'sync_interval: always' : 'default settings';
      const t = now();
      process.stderr.write(`[replicas] starting a 3-server cluster, ${setting} ... `);
      const list = await startCluster(syncAlways);
      process.stderr.write(`${((now() - t) / 1_000).toFixed(1)} s\n`);
      try {
        const v: Variant = { label: `3 servers, replicas: 3, ${setting}`, extra: { replicas: 3 }, engines: 1 };
        const r = await onServers('replicas', list, [v], { replicas: 3 });
        rows.push({ section: 'replicas', label: v.label, tput: r.tput.get(v)!, solo: r.solo, soloNoisy: r.soloNoisy });
      } finally {
        await stopServers(list);
      }
    }
  }

  // Storage rows in a fixed order: default first.
  rows.sort((a, b) => SECTIONS.indexOf(a.section) - SECTIONS.indexOf(b.section));
  printRows();
  console.log(
    `\nCPU busy: cores used (of ${cpus.length}) by every process on the machine, and by the nats-server(s), from engine start ` +
      'until the backlog was applied. send() accepted/s: rate at which the backlog was published (256 sends in flight, no engine running).\n' +
      "The cluster's three servers share these cores and one disk, so its figures bound the cost of replication from above.",
  );
  if (noisy.length > 0) {
    console.log(
      `* other processes used more than ${NOISE_CORES} core during ${noisy.length} steps (less reliable; throughput medians leave them out when a quiet run exists):\n  ` +
        noisy.join('\n  '),
    );
  }
  console.log(
    `total ${((now() - t0) / 1_000).toFixed(0)} s, of which ${(waitedMs / 1_000).toFixed(0)} s waiting for other processes to go quiet; load average after: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  clearTimeout(watchdog);
}
// ---------------------------------------------------------------------------------------------
// Child mode: one engine in its own process (for "two engines, two processes").
//
// Protocol on stdin/stdout, one line each: the child says READY once loaded and warmed up; GO starts the engine
// (STARTED {"owned":n} when createEngine resolved); CLOSE closes it (CLOSED, then it exits).
// It also closes and exits when stdin ends (the bench died) and after 120 s whatever happens.

function childMain(): void {
  const options = JSON.parse(process.argv[3]!) as EngineOptions;
  let engine: Engine | undefined;
  let closing = false;
  const close = async (): Promise<void> => {
    if (closing) return;
    closing = true;
    await engine?.close().catch(() => {});
    process.stdout.write('CLOSED\n', () => process.exit(0));
  };
  setTimeout(() => process.exit(3), 120_000).unref();
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line === 'GO') {
      void createEngine({ ...options, workflows: [counter] }).then(
        (e) => {
          engine = e;
          process.stdout.write(`STARTED ${JSON.stringify({ owned: e.status().owned.length })}\n`);
        },
        (e: Error) => {
          console.error(`engine child: ${e.message}`);
          process.exit(1);
        },
      );
    } else if (line === 'CLOSE') void close();
  });
  lines.on('close', () => void close());
  // Warm-up (as the bench process had one): a small backlog through an engine of this process,
  // on its own namespace, so that the measured engine does not run on cold JIT.
  void (async () => {
    const nc = await connectFast(options.servers!, 'bench-ops-child-admin');
    await jetstateThroughput(options.servers!, { nc, jsm: await jetstreamManager(nc) }, { partitions: options.partitions, replicas: options.replicas }, 200, 5);
    await nc.close();
    process.stdout.write('READY\n');
  })().catch((e: Error) => {
    console.error(`engine child: warm-up failed: ${e.message}`);
    process.exit(1);
  });
}

if (process.argv[2] === '--engine-child') childMain();
else void runMain();
