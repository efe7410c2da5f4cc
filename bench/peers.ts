/**
 * Peer benchmark: jetstate against Restate 1.7 on the workloads Restate's users run, on this
 * machine, in one run. Prints Markdown tables (steps/s, p50, p99 per invocation) and the ratios
 * jetstate / Restate; nothing in it passes or fails.
 *
 *   npm run bench:peers                          # full run (about 9 min on 2 cores)
 *   npm run bench:peers -- --quick               # shorter windows (about 2.5 min)
 *   npm run bench:peers -- --only=restate,A      # systems: jetstate, jetstate-default, jetstate-always, restate;
 *                                                # workloads: A (durable steps), B (external events)
 *   npm run bench:peers -- --c=1,100             # concurrency levels (default 1,100,500)
 *   npm run bench:peers -- --warmup=5 --measure=20   # seconds per measurement
 *   npm run bench:peers -- --profile             # CPU profile of each jetstate row's measured window
 *   npm run bench:peers -- --wait=watch          # jetstate completion of A by the KV watch too (default: completion notices)
 *   npm run bench:peers -- --wait=waitFor        # jetstate completion by client.waitFor() per invocation
 *   npm run bench:peers -- --no-netns            # stay in the host's network namespace
 *
 * Restate (server and TypeScript SDK) is installed on first use into .jetstate/bench-cache/ with
 * `npm install --prefix` (see bench/peers/restate-install.ts). Then, on Linux where `unshare` and
 * `ip` allow it, the run goes on in a private network namespace with only a loopback interface,
 * so that nothing it starts can reach beyond this machine (restate-server looks up its latest
 * release on start; there that lookup fails at once).
 */
import { spawn, spawnSync } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { findNatsServer } from '../adapters/nats-server/launcher.js';
import { stopAll } from './peers/cleanup.js';
import type { Window } from './peers/closed-loop.js';
import { runJetstate, type Workload } from './peers/jetstate-side.js';
import { loadAverage, machineFacts } from './peers/machine.js';
import { ratioTable, SYSTEM_LABEL, SYSTEMS, workloadTable, type Row, type System } from './peers/report.js';
import { ensureRestate, projectRoot, type RestateInstall } from './peers/restate-install.js';
import { runRestate, startRestateService, type RestateService } from './peers/restate-side.js';

// ---------------------------------------------------------------------------------------------
// Flags

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const usage = (why: string): never => {
  console.error(
    `bench:peers: ${why}\nflags: --quick --only=jetstate|jetstate-default|jetstate-always|restate|A|B,... --c=1,100,500 --warmup=S --measure=S --profile --wait=auto|watch|waitFor --engine=process|inline --no-netns`,
  );
  process.exit(2);
};
for (const a of args) {
  if (!/^--(quick|profile|no-netns|(only|c|warmup|measure|wait|engine)=.+)$/.test(a)) usage(`unknown flag '${a}'`);
}
const quick = args.includes('--quick');
const profile = args.includes('--profile');

const onlyTokens = (flag('only') ?? '').split(',').filter(Boolean);
const systemTokens: Record<string, System[]> = {
  jetstate: ['jetstate-default', 'jetstate-always'],
  'jetstate-default': ['jetstate-default'],
  'jetstate-always': ['jetstate-always'],
  restate: ['restate'],
};
const workloadTokens: Record<string, Workload> = { A: 'A', a: 'A', steps: 'A', B: 'B', b: 'B', events: 'B' };
for (const t of onlyTokens) if (!systemTokens[t] && !workloadTokens[t]) usage(`--only: unknown '${t}'`);
const pickedSystems = onlyTokens.flatMap((t) => systemTokens[t] ?? []);
const pickedWorkloads = onlyTokens.map((t) => workloadTokens[t]).filter((w): w is Workload => w !== undefined);
const systems: System[] = SYSTEMS.filter((s) => pickedSystems.length === 0 || pickedSystems.includes(s));
const workloads: Workload[] = (['A', 'B'] as const).filter((w) => pickedWorkloads.length === 0 || pickedWorkloads.includes(w));

const concurrencies = (flag('c') ?? '1,100,500').split(',').map((v) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 2_000) usage(`--c: '${v}' is not a concurrency between 1 and 2000`);
  return n;
});
const seconds = (name: string, fallback: number): number => {
  const v = flag(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!(n > 0 && n <= 600)) usage(`--${name}: '${v}' is not a number of seconds in (0, 600]`);
  return n;
};
const warmupMs = seconds('warmup', quick ? 2 : 5) * 1_000;
const measureMs = seconds('measure', quick ? 5 : 20) * 1_000;
/** Extended up to 2x (quick) or 3x until each lane completed 2 (quick) or 5 invocations in the window on average. */
const window: Window = { warmupMs, measureMs, maxMeasureMs: measureMs * (quick ? 2 : 3), minPerLane: quick ? 2 : 5 };
const wait = (flag('wait') ?? 'auto') as 'auto' | 'watch' | 'waitFor';
if (wait !== 'auto' && wait !== 'watch' && wait !== 'waitFor') usage(`--wait must be 'auto', 'watch' or 'waitFor'`);
const engineIn = (flag('engine') ?? 'process') as 'process' | 'inline';
if (engineIn !== 'process' && engineIn !== 'inline') usage(`--engine must be 'process' or 'inline'`);

if (profile && !systems.some((s) => s.startsWith('jetstate'))) usage('--profile profiles the jetstate rows: keep a jetstate system in --only');

const measurements = systems.length * workloads.length * concurrencies.length;
/** The whole run stops by itself after this: each measurement's windows plus a generous minute. */
const WATCHDOG_MS = 120_000 + measurements * (warmupMs + window.maxMeasureMs + 60_000);

const log = (line: string): void => void process.stderr.write(line + '\n');
const now = (): number => performance.now();

// ---------------------------------------------------------------------------------------------
// A private network namespace (loopback only), entered after Restate is installed

const NETNS_ENV = 'JETSTATE_PEERS_NETNS';

/** Re-runs this script inside `unshare --net` with lo up; resolves with its exit code, or undefined if that cannot be done here. */
async function runInNetns(): Promise<number | undefined> {
  if (process.platform !== 'linux' || args.includes('--no-netns') || process.env[NETNS_ENV]) return undefined;
  const asRoot = process.getuid?.() === 0;
  const unshare = ['--net', ...(asRoot ? [] : ['--map-root-user'])];
  const probe = spawnSync('unshare', [...unshare, '--', 'ip', 'link', 'set', 'lo', 'up'], { stdio: 'ignore' });
  if (probe.status !== 0) return undefined;
  const script = realpathSync(fileURLToPath(import.meta.url));
  const child = spawn(
    'unshare',
    [...unshare, '--', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', process.execPath, ...process.execArgv, script, ...args],
    {
      stdio: 'inherit',
      env: { ...process.env, [NETNS_ENV]: '1' },
    },
  );
  const forward = (signal: NodeJS.Signals): void => void child.kill(signal);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0))));
}

// ---------------------------------------------------------------------------------------------
// The run

async function main(): Promise<void> {
  const wantsRestate = systems.includes('restate');
  let install: RestateInstall | undefined;
  if (wantsRestate) {
    install = await ensureRestate(log);
    if (install.installed) log(`Restate installed in ${install.dir}`);
  }
  const code = await runInNetns();
  if (code !== undefined) process.exit(code);

  const watchdog = setTimeout(() => {
    log(`bench:peers: still running after ${Math.round(WATCHDOG_MS / 1_000)} s; stopping what it started`);
    void stopAll().finally(() => process.exit(1));
  }, WATCHDOG_MS);
  watchdog.unref();
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => void stopAll().finally(() => process.exit(130)));

  const natsVersion = spawnSync(findNatsServer(), ['--version'], { encoding: 'utf8' }).stdout.trim();
  const versions: Record<string, string> = { 'nats-server': natsVersion.replace(/^nats-server: /, '') };
  if (install) Object.assign(versions, { 'restate-server': install.serverVersion, '@restatedev/restate-sdk': install.sdkVersion });
  const loadBefore = loadAverage();
  const started = now();
  const profileStamp = new Date().toISOString().replace(/[:.]/g, '-');
  const profileFiles: string[] = [];

  console.log(`## Peer benchmark: jetstate and Restate (npm run bench:peers${args.length ? ` -- ${args.join(' ')}` : ''})\n`);
  for (const line of machineFacts(versions)) console.log(`- ${line}`);
  console.log(
    `- network: ${process.env[NETNS_ENV] ? 'a private network namespace with only loopback (unshare --net)' : 'the host network; every server binds 127.0.0.1'}`,
  );
  console.log(`- load average before: ${loadBefore}`);
  console.log(
    `- shared machine: the load generator, the jetstate engine or the Restate service (each its own Node process${engineIn === 'inline' ? '; here the jetstate engine runs in the load generator' : ''}), and nats-server or restate-server all run on these cores; ` +
      `"CPU cores" says who used them during each measured window ("other": processes this run did not start)`,
  );
  console.log(
    `- method: closed loop, C invocations in flight; each timed from its start to its completion; warm-up ${warmupMs / 1_000} s, then ${measureMs / 1_000} s measured per row ` +
      `(longer, up to ${window.maxMeasureMs / 1_000} s, until ${window.minPerLane} x C invocations completed in it: at high C they complete in waves); ` +
      `a fresh server (nats-server or restate-server, temp store, deleted after) per row; steps/s = 10 x invocations completed in the window / window`,
  );
  console.log(
    `- durability: jetstate "default" = nats-server defaults (writes acknowledged from the page cache, fsync every 2 min); "always" = \`sync_interval: always\` ` +
      `(fsync before every acknowledgement); Restate = its default (see below)`,
  );
  console.log(
    `- A (durable steps): Restate \`steps/run\`, a handler with 10 sequential \`ctx.run\` (step i returns sum + i), one request-response call to the ingress per invocation; ` +
      `jetstate \`client.start()\` of a workflow whose 10 states each invoke an \`activity()\` (sum + i, assigned to context), done when the record is final`,
  );
  console.log(
    `- B (external events): each lane owns one key/instance; Restate: 10 calls \`counter/<key>/add {i}\` to a virtual object sent at once, done when all 10 answered; ` +
      `jetstate: 10 \`client.send()\` of \`ADD {i}\` to one instance at once, done when its record shows all 10 applied`,
  );
  console.log(
    `- completion seen by: Restate, the HTTP answers (Node http, keep-alive); jetstate, ${
      wait === 'auto'
        ? 'for A one subscription to the completion notices (`<ns>.done.peer_steps.>`, core NATS), for B one KV watch over the workflow keys of the instances buckets'
        : wait === 'watch'
          ? 'one KV watch over the workflow keys of the instances buckets'
          : '`client.waitFor()` per invocation'
    } in the bench process`,
  );

  let service: RestateService | undefined;
  const rows: Row[] = [];
  let restateDescribe: string | undefined;
  let failure: { label: string; error: Error } | undefined;
  let current = '';
  try {
    if (install) service = await startRestateService(install.sdkEntry);
    for (const workload of workloads) {
      for (const c of concurrencies) {
        for (const system of systems) {
          const label = `${SYSTEM_LABEL[system].replace(' | ', ', ')}, ${workload}, C=${c}`;
          current = label;
          const t = now();
          process.stderr.write(`[peers] ${label} ... `);
          let m;
          if (system === 'restate') {
            const r = await runRestate({ serverBinary: install!.serverBinary, service: service!, workload, concurrency: c, window });
            restateDescribe = r.describe;
            m = r;
          } else {
            const profileFile = profile
              ? join(projectRoot, '.jetstate', 'profiles', `peers-${system}-${workload}-c${c}-${profileStamp}.cpuprofile`)
              : undefined;
            if (profileFile) profileFiles.push(profileFile);
            m = await runJetstate({
              syncAlways: system === 'jetstate-always',
              workload,
              concurrency: c,
              window,
              wait,
              engine: engineIn,
              ...(profileFile ? { profileFile } : {}),
            });
          }
          rows.push({ system, workload, concurrency: c, m });
          log(
            `${((now() - t) / 1_000).toFixed(1)} s: ${Math.round((m.loop.invocations * 10) / m.loop.seconds)} steps/s, p50 ${m.loop.p50.toFixed(2)} ms, p99 ${m.loop.p99.toFixed(2)} ms`,
          );
        }
      }
    }
  } catch (e) {
    // The rows measured so far are still printed; the run then exits 1.
    failure = { label: current, error: e as Error };
    log(`\nbench:peers: ${current} failed: ${(e as Error).stack ?? String(e)}`);
  } finally {
    await service?.stop();
    await stopAll();
  }

  if (restateDescribe) console.log(`- Restate configuration: ${restateDescribe}; SDK service with RESTATE_LOGGING=WARN`);
  const titles: Record<Workload, string> = {
    A: 'Workload A: durable steps (10 sequential steps per invocation)',
    B: 'Workload B: external events (10 events per invocation, applied in order)',
  };
  for (const workload of workloads) {
    const these = rows.filter((r) => r.workload === workload);
    console.log(`\n### ${titles[workload]}\n`);
    console.log(workloadTable(these));
    const retried = these.filter((r) => r.m.retries > 0);
    if (retried.length > 0) {
      console.log(
        `\nNATS acknowledged some start()/send() calls later than the client's 5 s and they were sent again (idempotent): ${retried.map((r) => `${SYSTEM_LABEL[r.system].replace(' | ', ', ')} C=${r.concurrency}: ${r.m.retries}`).join('; ')}`,
      );
    }
    const ratios = ratioTable(these);
    if (ratios) {
      console.log(`\nRatios jetstate / Restate (steps/s: above 1 means jetstate does more; p50, p99: below 1 means jetstate is faster):\n`);
      console.log(ratios);
    }
  }
  console.log(`\ntotal ${((now() - started) / 1_000).toFixed(0)} s; load average before: ${loadBefore}, after: ${loadAverage()}`);
  for (const file of profileFiles) console.log(`CPU profile of the measured window: ${file}\nsummary: npx tsx bench/tools/cpuprofile-summary.ts ${file}`);
  clearTimeout(watchdog);
  if (failure) {
    console.log(`\nINCOMPLETE: ${failure.label} failed: ${failure.error.message.split('\n')[0]}`);
    process.exit(1);
  }
}

main().then(
  () => process.exit(0),
  async (e: unknown) => {
    console.error(`bench:peers failed: ${(e as Error).stack ?? String(e)}`);
    await stopAll();
    process.exit(1);
  },
);
