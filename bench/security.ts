/**
 * Security benchmark: what the event layer's security costs the engine. The core benchmark's
 * backlog throughput and one-instance latency (bench/core.ts: its helpers, its sizes) run several
 * ways in one run, on one nats-server with default settings:
 *
 *   plain     no identity, no secrets
 *   oidc      every start and event carries an OIDC token (RS256, inline JWKS) that the client
 *             and the engine verify; requireIdentity, and INC needs the role 'role:counter'
 *             mapped from the token's `roles` claim. One token for every event, so after the
 *             first event the verifier's cache answers (warm)
 *   secrets   the event payload's `card.number` and the same field of the context are sealed
 *             (AES-256-GCM, key ring) in every event sent, record written and history entry
 *   oidc-cold like oidc, but every event has a token of its own, so each one is verified in full;
 *             on a smaller backlog, compared with `plain` on the same smaller backlog
 *
 * The workflow is the core counter with a payload: INC { card: { number } } copies the card into
 * the context, so every way moves the same bytes. Each measurement runs --repeat times, the ways
 * interleaved in a rotating order, and the medians are printed with the cost against plain. The
 * CPU time of this process per transition (engine start until every instance is done; it includes
 * the KV watch that measures) is printed too: it moves less than throughput on a shared machine.
 * Nothing here passes or fails.
 *
 *   npm run bench:security                          # 3 repeats (~40 s on 2 cores)
 *   npm run bench:security -- --quick               # smaller, 3 repeats (~15 s)
 *   npm run bench:security -- --repeat=5
 *   npm run bench:security -- --modes=oidc-cold --measure=throughput   # one way, e.g. under --cpu-prof
 *
 * Profiling one way:
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bench/security.ts --modes=secrets --measure=throughput --repeat=1
 *   npx tsx bench/tools/cpuprofile-summary.ts /tmp/prof/<file>.cpuprofile 30 '/engine/|jose|node:crypto'
 */
import { rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { NatsServer } from '../adapters/nats-server/launcher.js';
import { createClient, createEngine, createKeyRing, defineWorkflow, type EngineOptions, type WorkflowDefinition } from '../engine/index.js';
import {
  CFG,
  completion,
  connectFast,
  dropNamespace,
  fmtInt,
  fmtMs,
  jetstateCount,
  keyOf,
  kvLastSeq,
  recordBuckets,
  LatencyTracker,
  now,
  pool,
  printEnvironment,
  stats,
  stepper,
  table,
  uniqueName,
  watchCounts,
  withTimeout,
  type Admin,
  type LatencyStats,
  type ThroughputStats,
} from './core.js';

const MODES = ['plain', 'oidc', 'secrets', 'plain-small', 'oidc-cold'] as const;
type ModeName = (typeof MODES)[number];
const LABEL: Record<ModeName, string> = {
  plain: 'plain',
  oidc: 'OIDC (warm cache)',
  secrets: 'secrets',
  'plain-small': 'plain (small)',
  'oidc-cold': 'OIDC (cold: a token per event)',
};
/** What each way is compared with. */
const BASE: Record<ModeName, ModeName> = { plain: 'plain', oidc: 'plain', secrets: 'plain', 'plain-small': 'plain-small', 'oidc-cold': 'plain-small' };

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const quick = args.includes('--quick');
const repeat = Math.max(1, Number(flag('repeat') ?? 3) || 1);
const modes = (flag('modes')?.split(',') ?? [...MODES]) as ModeName[];
const measure = flag('measure') ?? 'both';
for (const m of modes) if (!MODES.includes(m)) fail(`--modes takes a comma list of ${MODES.join(', ')}; got '${m}'`);
if (!['both', 'throughput', 'latency'].includes(measure)) fail(`--measure must be both, throughput or latency; got '${measure}'`);

const FULL = quick
  ? { instances: 500, eventsPerInstance: 10, soloWarmup: 100, soloEvents: 500 }
  : { instances: CFG.instances, eventsPerInstance: CFG.eventsPerInstance, soloWarmup: CFG.soloWarmup, soloEvents: CFG.soloEvents };
/** The cold way signs a token per event beforehand (about 1 ms each): a smaller workload. */
const SMALL = quick
  ? { instances: 100, eventsPerInstance: 10, soloWarmup: 50, soloEvents: 200 }
  : { instances: 200, eventsPerInstance: 10, soloWarmup: 50, soloEvents: 500 };
const sizeOf = (m: ModeName): typeof FULL => (m === 'plain-small' || m === 'oidc-cold' ? SMALL : FULL);
const WAIT_LIMIT_MS = 60_000;
const WATCHDOG_MS = 90_000 + repeat * modes.length * (quick ? 10_000 : 25_000);
const SEND_CONCURRENCY = 256;
const PARTITIONS = 16;

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// The workflow and the three security settings

const Inc = z.object({ card: z.object({ number: z.string() }) });
const machine = setup({
  types: { context: {} as { count: number; card?: { number: string } }, events: {} as { type: 'INC'; card: { number: string } } },
}).createMachine({
  id: 'counter',
  initial: 'active',
  context: { count: 0 },
  states: {
    active: { on: { INC: { actions: assign({ count: ({ context }) => context.count + 1, card: ({ event }) => event.card }) } } },
  },
});
const base = { name: 'counter', version: 1, input: z.object({}), events: { INC: Inc }, machine } as const;
const EVENT = { type: 'INC', card: { number: '4111 1111 1111 1111' } } as const;

const ISSUER = 'https://auth.bench.test/realms/jetstate';
const AUDIENCE = 'jetstate-bench';

interface Mode {
  name: ModeName;
  def: WorkflowDefinition;
  /** Client and engine options of this way (identity or key ring). */
  options: Partial<EngineOptions>;
  /** Tokens for `count` sends (undefined: none); made before the timed part. */
  tokens(count: number): Promise<Array<string | undefined>>;
}

async function createModes(): Promise<Map<ModeName, Mode>> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kty: 'RSA', kid: 'bench-1', alg: 'RS256', use: 'sig' };
  let serial = 0;
  const sign = (key: CryptoKey): Promise<string> =>
    new SignJWT({ roles: ['counter'], jti: `t${serial++}` })
      .setProtectedHeader({ alg: 'RS256', kid: 'bench-1', typ: 'JWT' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject('bench-user')
      .setIssuedAt()
      .setExpirationTime('2h')
      .sign(key);
  const shared = await sign(privateKey);
  const identity: EngineOptions['identity'] = {
    oidc: { issuer: ISSUER, audience: AUDIENCE, jwks: { keys: [jwk] } },
    roles: { claims: [{ claim: 'roles', prefix: 'role:' }] },
  };
  const guarded = defineWorkflow({ ...base, requireIdentity: true, permissions: { events: { INC: ['role:counter'] } } });
  const none = async (count: number): Promise<undefined[]> => new Array<undefined>(count).fill(undefined);
  const keyRing = createKeyRing({ keys: [{ id: 'k1', key: randomBytes(32).toString('base64') }] });
  const all: Mode[] = [
    { name: 'plain', def: defineWorkflow(base), options: {}, tokens: none },
    { name: 'oidc', def: guarded, options: { identity }, tokens: async (count) => new Array<string>(count).fill(shared) },
    { name: 'secrets', def: defineWorkflow({ ...base, secrets: ['card.number'] }), options: { secrets: { keyRing } }, tokens: none },
    { name: 'plain-small', def: defineWorkflow(base), options: {}, tokens: none },
    {
      name: 'oidc-cold',
      def: guarded,
      options: { identity },
      tokens: async (count) => {
        const out: string[] = [];
        for (let i = 0; i < count; i += 64) out.push(...(await Promise.all(Array.from({ length: Math.min(64, count - i) }, () => sign(privateKey)))));
        return out;
      },
    },
  ];
  return new Map(all.map((m) => [m.name, m]));
}

// ---------------------------------------------------------------------------------------------
// Measurements: core.ts's method, with a token per send

interface SecuredThroughput extends ThroughputStats {
  /** CPU time of this process from engine start until every instance was done, per transition. */
  cpuUsPerTransition: number;
}

/**
 * Backlog throughput as in core.ts: `n` instances with `e` events each are published by a client
 * (untimed; its send rate is reported), then one engine starts; timed until one KV watch has seen
 * every instance at `e`.
 */
async function throughput(url: string, admin: Admin, mode: Mode, n: number, e: number): Promise<SecuredThroughput> {
  const ns = uniqueName('sec');
  const ids = Array.from({ length: n }, (_, i) => `i${i}`);
  const tokens = await mode.tokens(n + n * e);
  const client = await createClient({ servers: url, namespace: ns, partitions: PARTITIONS, workflows: [mode.def], ...mode.options });
  let t = 0;
  await pool(ids, 64, (id) => client.start(mode.def, { id, input: {}, ...withToken(tokens[t++]) }));
  const sends: string[] = [];
  for (let r = 0; r < e; r++) sends.push(...ids);
  const tSend = now();
  await pool(sends, SEND_CONCURRENCY, (id) => client.send(mode.def, id, EVENT as never, withToken(tokens[t++])));
  const sendRate = sends.length / ((now() - tSend) / 1_000);
  await client.close();

  const bucket = recordBuckets(ns);
  const before = await kvLastSeq(admin.jsm, bucket);
  const c = completion(n, e);
  const watch = await watchCounts(admin.nc, bucket, jetstateCount, c.onCount);
  let engine: Awaited<ReturnType<typeof createEngine>> | undefined;
  try {
    const cpu = process.cpuUsage();
    const t0 = now();
    engine = await createEngine({ servers: url, namespace: ns, workflows: [mode.def], ...mode.options });
    const startupMs = now() - t0;
    const t1 = await withTimeout(c.done, WAIT_LIMIT_MS, `${mode.name} throughput (${c.finished()}/${n} instances done)`);
    const used = process.cpuUsage(cpu);
    const seconds = (t1 - t0) / 1_000;
    const writes = (await kvLastSeq(admin.jsm, bucket)) - before;
    const status = engine.status();
    if (status.blocked.length > 0) throw new Error(`${mode.name}: blocked instances: ${JSON.stringify(status.blocked)}`);
    return { events: n * e, seconds, rate: (n * e) / seconds, startupMs, writes, sendRate, cpuUsPerTransition: (used.user + used.system) / (n * e) };
  } finally {
    watch.stop();
    await engine?.close();
    await dropNamespace(admin.jsm, ns);
  }
}

/**
 * One instance, sequential sends, each with its token: from `send()` returning to the KV watch
 * seeing the state. Unlike core.ts, a separate client sends, so the engine verifies each token
 * itself (with `engine.send()` the engine's verifier would have cached it already).
 */
async function latency(url: string, admin: Admin, mode: Mode, warmup: number, events: number): Promise<LatencyStats> {
  const ns = uniqueName('sel');
  const tokens = await mode.tokens(1 + warmup + events);
  const engine = await createEngine({ servers: url, namespace: ns, workflows: [mode.def], ...mode.options });
  const client = await createClient({ servers: url, namespace: ns, workflows: [mode.def], ...mode.options });
  const tracker = new LatencyTracker();
  const id = 'solo';
  try {
    await client.start(mode.def, { id, input: {}, ...withToken(tokens[0]) });
    const watch = await watchCounts(admin.nc, recordBuckets(ns), jetstateCount, tracker.onCount, keyOf(id));
    const durations: number[] = [];
    try {
      for (let k = 1; k <= warmup + events; k++) {
        const recording = k > warmup;
        tracker.setRecording(recording);
        const t = now();
        await client.send(mode.def, id, EVENT as never, withToken(tokens[k]));
        const sentAt = now();
        if (recording) durations.push(sentAt - t);
        await withTimeout(tracker.sent(keyOf(id), k, sentAt), WAIT_LIMIT_MS, `${mode.name} latency, event ${k}`);
      }
      return stats(tracker.samples, durations, tracker.early);
    } finally {
      watch.stop();
    }
  } finally {
    await client.close();
    await engine.close();
    await dropNamespace(admin.jsm, ns);
  }
}

const withToken = (token: string | undefined): { token?: string } => (token === undefined ? {} : { token });

// ---------------------------------------------------------------------------------------------
// Printing

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const pct = (v: number): string => (Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${v.toFixed(1)} %` : '-');

interface Results {
  tput: Map<ModeName, SecuredThroughput[]>;
  lat: Map<ModeName, LatencyStats[]>;
}

function print(r: Results, noisy: string[]): void {
  const cols = modes;
  const rows: string[][] = [['', ...cols.map((m) => LABEL[m])]];
  const of = <T>(source: Map<ModeName, T[]>, f: (x: T) => number): Map<ModeName, number> => new Map(cols.map((m) => [m, median((source.get(m) ?? []).map(f))]));
  /** A row of medians and, under it, each way against its base (plain, or plain on the small backlog). */
  const withCost = (label: string, values: Map<ModeName, number>, fmt: (v: number) => string): void => {
    rows.push([label, ...cols.map((m) => fmt(values.get(m) ?? NaN))]);
    rows.push([
      '  vs plain',
      ...cols.map((m) => {
        const b = values.get(BASE[m]);
        if (BASE[m] === m || b === undefined || !Number.isFinite(b)) return '';
        const ratio = values.get(m)! / b;
        return `${ratio.toFixed(2)}x (${pct((ratio - 1) * 100)})`;
      }),
    ]);
  };
  if (measure !== 'latency') {
    rows.push(['backlog (instances x events)', ...cols.map((m) => `${fmtInt(sizeOf(m).instances)} x ${sizeOf(m).eventsPerInstance}`)]);
    withCost(
      'backlog throughput (transitions/s)',
      of(r.tput, (t) => t.rate),
      fmtInt,
    );
    rows.push([`  all ${repeat} runs`, ...cols.map((m) => (r.tput.get(m) ?? []).map((t) => fmtInt(t.rate)).join(' '))]);
    withCost(
      '  CPU of this process per transition (µs)',
      of(r.tput, (t) => t.cpuUsPerTransition),
      (v) => v.toFixed(1),
    );
    rows.push(['  send() rate while publishing the backlog (/s)', ...cols.map((m) => fmtInt(median((r.tput.get(m) ?? []).map((t) => t.sendRate ?? NaN))))]);
  }
  if (measure !== 'throughput') {
    rows.push(['latency: sequential events (after warm-up)', ...cols.map((m) => fmtInt(sizeOf(m).soloEvents))]);
    withCost(
      'latency, 1 instance: p50 (ms)',
      of(r.lat, (l) => l.p50),
      fmtMs,
    );
    rows.push(['  p99 (ms)', ...cols.map((m) => fmtMs(median((r.lat.get(m) ?? []).map((l) => l.p99))))]);
    rows.push([`  p50 of all ${repeat} runs`, ...cols.map((m) => (r.lat.get(m) ?? []).map((l) => fmtMs(l.p50)).join(' '))]);
    withCost(
      '  send() itself p50 (ms)',
      of(r.lat, (l) => l.sendP50),
      fmtMs,
    );
  }
  console.log(`\n${table(rows)}`);
  if (noisy.length > 0) console.log(`other processes used CPU during: ${noisy.join('; ')} (those figures are less reliable)`);
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  console.log(`jetstate security benchmark ${args.join(' ')}`.trim());
  printEnvironment();
  console.log(
    `workflow: counter with INC { card: { number } } copied into the context; engine defaults; nats-server default settings; ${repeat} repeats, interleaved; medians shown; ` +
      `OIDC: RS256, inline JWKS, requireIdentity, INC needs role:counter; secrets: card.number in events and context, one AES-256-GCM key`,
  );
  const server = await NatsServer.start();
  const watchdog = setTimeout(() => {
    console.error(`bench:security: still running after ${WATCHDOG_MS / 1_000} s; stopping`);
    void server.stop().finally(() => process.exit(1));
  }, WATCHDOG_MS);
  watchdog.unref();
  const nc = await connectFast(server.url, 'bench-admin');
  const admin: Admin = { nc, jsm: await jetstreamManager(nc) };
  const noisy: string[] = [];
  const step = stepper('security', server.pid, noisy);
  const byName = await createModes();
  /** Order of the ways in repetition `i`: rotated, so that none always runs first or last. */
  const rotation = (i: number): Mode[] => modes.map((_, k) => byName.get(modes[(i + k) % modes.length]!)!);
  const t = now();
  try {
    const url = server.url;
    await step('warm-up (not reported)', async () => {
      for (const mode of rotation(0)) {
        if (measure !== 'latency') await throughput(url, admin, mode, 100, 5);
        if (measure !== 'throughput') await latency(url, admin, mode, 20, 100);
      }
    });
    const r: Results = { tput: new Map(), lat: new Map() };
    for (let i = 0; i < repeat && measure !== 'latency'; i++) {
      for (const mode of rotation(i)) {
        const s = sizeOf(mode.name);
        const list = r.tput.get(mode.name) ?? [];
        list.push(await step(`throughput, ${mode.name} (${i + 1}/${repeat})`, () => throughput(url, admin, mode, s.instances, s.eventsPerInstance)));
        r.tput.set(mode.name, list);
      }
    }
    for (let i = 0; i < repeat && measure !== 'throughput'; i++) {
      for (const mode of rotation(i)) {
        const s = sizeOf(mode.name);
        const list = r.lat.get(mode.name) ?? [];
        list.push(await step(`latency, ${mode.name} (${i + 1}/${repeat})`, () => latency(url, admin, mode, s.soloWarmup, s.soloEvents)));
        r.lat.set(mode.name, list);
      }
    }
    print(r, noisy);
    console.log(`total ${((now() - t) / 1_000).toFixed(0)} s`);
  } finally {
    clearTimeout(watchdog);
    await nc.close().catch(() => {});
    await server.stop();
    await rm(server.storeDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`bench:security failed: ${(e as Error).stack ?? String(e)}`);
    process.exit(1);
  },
);
