/**
 * Tracing benchmark: what OpenTelemetry costs the engine. The core benchmark's backlog throughput
 * and one-instance latency (bench/core.ts: same counter workflow, same helpers) run three ways in
 * one run, on one nats-server with default settings:
 *
 *   off       no provider anywhere: the API hands out non-recording spans and no-op instruments
 *   on        a real SDK passed as the `telemetry` option: BasicTracerProvider with a
 *             BatchSpanProcessor and an exporter that reports success at once, plus a
 *             MeterProvider with a periodic reader (its exporter drops the data too)
 *   sampled   the same with ParentBased(TraceIdRatioBased(0.1))
 *
 * The backlog's sends and the latency loop's sends are traced by the same providers, so events
 * carry their trace context as they would from a traced host. The machine is shared and noisy:
 * each measurement runs --repeat times, the three ways interleaved in a rotating order, and the
 * medians are printed. Nothing here passes or fails.
 *
 *   npm run bench:tracing                          # 5 repeats (~45 s on 2 cores)
 *   npm run bench:tracing -- --quick               # 3 repeats of a smaller workload (~10 s)
 *   npm run bench:tracing -- --repeat=9
 *   npm run bench:tracing -- --modes=on --measure=throughput   # one way only, e.g. under --cpu-prof
 *   OTEL_BSP_MAX_QUEUE_SIZE=65536 npm run bench:tracing        # the SDK's span queue (default 2048)
 *
 * Throughput on a shared machine moves a lot from run to run; the CPU time of this process per
 * transition (engine start to done; it includes the KV watch that measures) is the steadier figure
 * of what tracing costs. The last lines say how many spans were exported: with the SDK's default
 * queue of 2,048 spans, a backlog applied at 20,000+ transitions/s overflows it and the SDK drops
 * spans.
 *
 * Profiling one way:
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bench/tracing.ts --modes=on --measure=throughput
 *   npx tsx bench/tools/cpuprofile-summary.ts /tmp/prof/<file>.cpuprofile 30 '/engine/|opentelemetry'
 */
import { rm } from 'node:fs/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  type ReadableSpan,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import { MeterProvider, PeriodicExportingMetricReader, type PushMetricExporter, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { NatsServer } from '../adapters/nats-server/launcher.js';
import type { EngineOptions } from '../engine/index.js';
import {
  CFG,
  connectFast,
  fmtInt,
  fmtMs,
  jetstateSoloLatency,
  jetstateThroughput,
  now,
  oneEngine,
  printEnvironment,
  stepper,
  table,
  type Admin,
  type FleetFactory,
  type LatencyStats,
  type ThroughputStats,
} from './core.js';

const MODES = ['off', 'on', 'sampled'] as const;
type ModeName = (typeof MODES)[number];
const MODE_LABEL: Record<ModeName, string> = { off: 'off', on: 'on (all spans)', sampled: 'sampled 10%' };

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const quick = args.includes('--quick');
const repeat = Math.max(1, Number(flag('repeat') ?? (quick ? 3 : 5)) || 1);
const modes = (flag('modes')?.split(',') ?? [...MODES]) as ModeName[];
const measure = flag('measure') ?? 'both';
for (const m of modes) if (!MODES.includes(m)) fail(`--modes takes a comma list of ${MODES.join(', ')}; got '${m}'`);
if (!['both', 'throughput', 'latency'].includes(measure)) fail(`--measure must be both, throughput or latency; got '${measure}'`);
const SIZE = quick
  ? { instances: 500, eventsPerInstance: 10, soloWarmup: 100, soloEvents: 500 }
  : { instances: CFG.instances, eventsPerInstance: CFG.eventsPerInstance, soloWarmup: CFG.soloWarmup, soloEvents: CFG.soloEvents };
const WATCHDOG_MS = 60_000 + repeat * modes.length * (quick ? 8_000 : 15_000);

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// The three ways

type TelemetryOptions = NonNullable<EngineOptions['telemetry']>;

/** Counts exported spans by the first word of their name (`jetstate.transition`, ...) and drops them. */
class CountingSpanExporter implements SpanExporter {
  readonly byKind = new Map<string, number>();
  export(spans: ReadableSpan[], done: Parameters<SpanExporter['export']>[1]): void {
    for (const s of spans) {
      const kind = s.name.split(' ', 1)[0]!;
      this.byKind.set(kind, (this.byKind.get(kind) ?? 0) + 1);
    }
    done({ code: 0 }); // ExportResultCode.SUCCESS
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** Keeps only the latest collection (cumulative), to check afterwards that metrics were recorded. */
class LatestMetricExporter implements PushMetricExporter {
  latest: ResourceMetrics | undefined;
  export(metrics: ResourceMetrics, done: Parameters<PushMetricExporter['export']>[1]): void {
    this.latest = metrics;
    done({ code: 0 });
  }
  sum(name: string): number {
    const metric = this.latest?.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
    return (metric?.dataPoints ?? []).reduce((n, p) => n + (typeof p.value === 'number' ? p.value : 0), 0);
  }
  forceFlush(): Promise<void> {
    return Promise.resolve();
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

interface Mode {
  name: ModeName;
  /** The engine and client option; undefined for `off`. */
  telemetry: TelemetryOptions | undefined;
  spans: CountingSpanExporter | undefined;
  metrics: LatestMetricExporter | undefined;
  /** Exports what is buffered, so one measurement's export work does not spill into the next. */
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

function createMode(name: ModeName): Mode {
  if (name === 'off') return { name, telemetry: undefined, spans: undefined, metrics: undefined, flush: async () => {}, shutdown: async () => {} };
  const spans = new CountingSpanExporter();
  const metrics = new LatestMetricExporter();
  const tracerProvider = new BasicTracerProvider({
    spanProcessors: [new BatchSpanProcessor(spans)],
    ...(name === 'sampled' ? { sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(0.1) }) } : {}),
  });
  const meterProvider = new MeterProvider({ readers: [new PeriodicExportingMetricReader({ exporter: metrics, exportIntervalMillis: 1_000 })] });
  return {
    name,
    telemetry: { tracerProvider, meterProvider },
    spans,
    metrics,
    flush: async () => {
      await tracerProvider.forceFlush();
      await meterProvider.forceFlush();
    },
    shutdown: async () => {
      await tracerProvider.shutdown();
      await meterProvider.shutdown();
    },
  };
}

const extraOf = (mode: Mode): Partial<EngineOptions> => (mode.telemetry ? { telemetry: mode.telemetry } : {});

// ---------------------------------------------------------------------------------------------
// Measurements

interface TracedThroughput extends ThroughputStats {
  /** CPU time of this process from engine start until every instance was done, per transition. */
  cpuUsPerTransition: number;
}

/** One engine, like `oneEngine`, whose process CPU time is read from its start to its close. */
function cpuMetered(out: { ms: number }): FleetFactory {
  return async (options) => {
    const inner = await oneEngine(options);
    let from: NodeJS.CpuUsage | undefined;
    return {
      async start() {
        from = process.cpuUsage();
        await inner.start();
      },
      async close() {
        // close() is called right after the last instance was seen done.
        if (from) {
          const used = process.cpuUsage(from);
          out.ms = (used.user + used.system) / 1_000;
        }
        await inner.close();
      },
    };
  };
}

async function throughput(url: string, admin: Admin, mode: Mode, n = SIZE.instances, e = SIZE.eventsPerInstance): Promise<TracedThroughput> {
  const cpu = { ms: NaN };
  const r = await jetstateThroughput(url, admin, extraOf(mode), n, e, cpuMetered(cpu));
  await mode.flush();
  return { ...r, cpuUsPerTransition: (cpu.ms * 1_000) / r.events };
}

async function latency(url: string, admin: Admin, mode: Mode, warmup = SIZE.soloWarmup, events = SIZE.soloEvents): Promise<LatencyStats> {
  const r = await jetstateSoloLatency(url, admin, extraOf(mode), warmup, events);
  await mode.flush();
  return r;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Order of the ways in repetition `i`: rotated, so that none always runs first or last. */
const rotation = (i: number): Mode[] => modes.map((_, k) => modeByName.get(modes[(i + k) % modes.length]!)!);

const modeByName = new Map(modes.map((m) => [m, createMode(m)] as const));

// ---------------------------------------------------------------------------------------------
// Printing

interface Results {
  tput: Map<ModeName, TracedThroughput[]>;
  lat: Map<ModeName, LatencyStats[]>;
}

const pct = (v: number): string => (Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${v.toFixed(1)} %` : '-');

function print(r: Results, noisy: string[]): void {
  const cols = modes;
  const rows: string[][] = [['', ...cols.map((m) => MODE_LABEL[m])]];
  const off = (values: Map<ModeName, number>): number | undefined => values.get('off');
  /** A row of medians and, under it, the cost of each way against `off`. */
  const withCost = (label: string, values: Map<ModeName, number>, fmt: (v: number) => string, higherIsBetter: boolean): void => {
    rows.push([label, ...cols.map((m) => fmt(values.get(m) ?? NaN))]);
    const base = off(values);
    if (base === undefined || !modes.includes('off') || modes.length === 1) return;
    rows.push([
      `  cost vs off`,
      ...cols.map((m) => (m === 'off' ? '' : pct(higherIsBetter ? (1 - values.get(m)! / base) * 100 : (values.get(m)! / base - 1) * 100))),
    ]);
  };
  const of = <T>(source: Map<ModeName, T[]>, f: (x: T) => number): Map<ModeName, number> => new Map(cols.map((m) => [m, median((source.get(m) ?? []).map(f))]));
  if (measure !== 'latency') {
    withCost(
      `backlog throughput, ${SIZE.instances} instances x ${SIZE.eventsPerInstance} events (transitions/s)`,
      of(r.tput, (t) => t.rate),
      fmtInt,
      true,
    );
    rows.push([`  all ${repeat} runs`, ...cols.map((m) => (r.tput.get(m) ?? []).map((t) => fmtInt(t.rate)).join(' '))]);
    withCost(
      '  CPU of this process per transition (µs)',
      of(r.tput, (t) => t.cpuUsPerTransition),
      (v) => v.toFixed(1),
      false,
    );
  }
  if (measure !== 'throughput') {
    withCost(
      `latency, 1 instance, ${SIZE.soloEvents} sequential events: p50 (ms)`,
      of(r.lat, (l) => l.p50),
      fmtMs,
      false,
    );
    withCost(
      '  p99 (ms)',
      of(r.lat, (l) => l.p99),
      fmtMs,
      false,
    );
    rows.push([`  p50 of all ${repeat} runs`, ...cols.map((m) => (r.lat.get(m) ?? []).map((l) => fmtMs(l.p50)).join(' '))]);
    rows.push(['  send() itself p50 (ms)', ...cols.map((m) => fmtMs(median((r.lat.get(m) ?? []).map((l) => l.sendP50))))]);
  }
  console.log(`\n${table(rows)}`);
  console.log('\nwhat was recorded over the whole run (warm-ups included):');
  for (const m of cols) {
    const mode = modeByName.get(m)!;
    if (!mode.spans || !mode.metrics) {
      console.log(`  ${MODE_LABEL[m]}: nothing (no provider)`);
      continue;
    }
    // A start is a transition span too, but not in jetstate.transitions (events applied); the
    // counter workflow never finishes, so jetstate.instances sums to the instances started.
    const applied = mode.metrics.sum('jetstate.transitions');
    const started = mode.metrics.sum('jetstate.instances');
    const traced = mode.spans.byKind.get('jetstate.transition') ?? 0;
    const kinds = [...mode.spans.byKind].map(([k, v]) => `${fmtInt(v)} ${k}`).join(', ');
    const share = applied + started > 0 ? `${((traced / (applied + started)) * 100).toFixed(1)} %` : '-';
    console.log(
      `  ${MODE_LABEL[m]}: spans exported: ${kinds}; metrics: ${fmtInt(applied)} events applied + ${fmtInt(started)} starts; ${share} of transitions traced`,
    );
  }
  if (noisy.length > 0) console.log(`other processes used CPU during: ${noisy.join('; ')} (those figures are less reliable)`);
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  console.log(`jetstate tracing benchmark ${args.join(' ')}`.trim());
  printEnvironment();
  console.log(
    `workflow: counter (bench/core.ts), engine defaults; nats-server default settings; ${repeat} repeats, interleaved; medians shown; ` +
      `SDK: BatchSpanProcessor (defaults) + exporter that drops, MeterProvider + PeriodicExportingMetricReader (1 s)`,
  );
  const server = await NatsServer.start();
  const watchdog = setTimeout(() => {
    console.error(`bench:tracing: still running after ${WATCHDOG_MS / 1_000} s; stopping`);
    void server.stop().finally(() => process.exit(1));
  }, WATCHDOG_MS);
  watchdog.unref();
  const nc = await connectFast(server.url, 'bench-admin');
  const admin: Admin = { nc, jsm: await jetstreamManager(nc) };
  const noisy: string[] = [];
  const step = stepper('tracing', server.pid, noisy);
  const t = now();
  try {
    const url = server.url;
    await step('warm-up (not reported)', async () => {
      for (const mode of rotation(0)) {
        if (measure !== 'latency') await throughput(url, admin, mode, 200, 5);
        if (measure !== 'throughput') await latency(url, admin, mode, 50, 200);
      }
    });
    const r: Results = { tput: new Map(), lat: new Map() };
    for (let i = 0; i < repeat; i++) {
      if (measure === 'latency') break;
      for (const mode of rotation(i)) {
        const list = r.tput.get(mode.name) ?? [];
        list.push(await step(`throughput, tracing ${mode.name} (${i + 1}/${repeat})`, () => throughput(url, admin, mode)));
        r.tput.set(mode.name, list);
      }
    }
    for (let i = 0; i < repeat; i++) {
      if (measure === 'throughput') break;
      for (const mode of rotation(i)) {
        const list = r.lat.get(mode.name) ?? [];
        list.push(await step(`latency, tracing ${mode.name} (${i + 1}/${repeat})`, () => latency(url, admin, mode)));
        r.lat.set(mode.name, list);
      }
    }
    print(r, noisy);
    console.log(`total ${((now() - t) / 1_000).toFixed(0)} s`);
  } finally {
    clearTimeout(watchdog);
    await Promise.all([...modeByName.values()].map((m) => m.shutdown()));
    await nc.close().catch(() => {});
    await server.stop();
    await rm(server.storeDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`bench:tracing failed: ${(e as Error).stack ?? String(e)}`);
    process.exit(1);
  },
);
