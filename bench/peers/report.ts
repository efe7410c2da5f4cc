/**
 * The printed result of the peer benchmark: per workload, one Markdown table of every system and
 * setting and one of the ratios jetstate / Restate, ready to paste into docs/PERFORMANCE.md.
 */
import type { Measurement, Workload } from './jetstate-side.js';
import { STEPS } from './jetstate-workflows.js';

export const SYSTEMS = ['jetstate-default', 'jetstate-always', 'restate'] as const;
export type System = (typeof SYSTEMS)[number];

export const SYSTEM_LABEL: Record<System, string> = {
  'jetstate-default': 'jetstate | nats-server default',
  'jetstate-always': 'jetstate | nats-server `sync_interval: always`',
  restate: 'Restate | default (fsync per log write)',
};

export interface Row {
  system: System;
  workload: Workload;
  concurrency: number;
  m: Measurement;
}

const int = (v: number): string => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '-');
const ms = (v: number): string => (Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) : '-');
const cores = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(2));
const x = (v: number): string => (Number.isFinite(v) && v > 0 ? `${v >= 10 ? v.toFixed(1) : v.toFixed(2)}x` : '-');

export const stepsPerSecond = (m: Measurement): number => (m.loop.invocations * STEPS) / m.loop.seconds;

function markdown(rows: string[][], rightFrom: number): string {
  const head = rows[0]!;
  const sep = head.map((_, i) => (i >= rightFrom ? '---:' : '---'));
  return [head, sep, ...rows.slice(1)].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

/** The table of one workload. */
export function workloadTable(rows: Row[]): string {
  const out: string[][] = [
    ['system', 'durability', 'C', 'steps/s', 'invocations/s', 'p50 ms', 'p99 ms', 'max ms', 'n', 'window s', 'CPU cores: bench / server / service / other'],
  ];
  for (const r of rows) {
    const { loop, cpu } = r.m;
    const server = cpu['nats-server'] ?? cpu['restate-server'];
    out.push([
      ...SYSTEM_LABEL[r.system].split(' | '),
      String(r.concurrency),
      int(stepsPerSecond(r.m)),
      int(loop.invocations / loop.seconds),
      ms(loop.p50),
      ms(loop.p99),
      ms(loop.max),
      int(loop.invocations),
      loop.seconds.toFixed(1),
      `${cores(cpu['bench'])} / ${cores(server)} / ${cpu['service'] === undefined ? '-' : cores(cpu['service'])} / ${cores(cpu['other'])}`,
    ]);
  }
  return markdown(out, 2);
}

/**
 * Ratios jetstate / Restate at each concurrency: steps/s (above 1: jetstate does more) and the
 * latency percentiles (below 1: jetstate is faster).
 */
export function ratioTable(rows: Row[]): string | undefined {
  const at = (system: System, c: number): Measurement | undefined => rows.find((r) => r.system === system && r.concurrency === c)?.m;
  const cs = [...new Set(rows.map((r) => r.concurrency))];
  const out: string[][] = [['C', 'jetstate always / Restate: steps/s', 'p50', 'p99', 'jetstate default / Restate: steps/s', 'p50', 'p99']];
  for (const c of cs) {
    const rs = at('restate', c);
    if (!rs || (!at('jetstate-always', c) && !at('jetstate-default', c))) continue;
    const cell = (j: Measurement | undefined): string[] =>
      j ? [x(stepsPerSecond(j) / stepsPerSecond(rs)), x(j.loop.p50 / rs.loop.p50), x(j.loop.p99 / rs.loop.p99)] : ['-', '-', '-'];
    out.push([String(c), ...cell(at('jetstate-always', c)), ...cell(at('jetstate-default', c))]);
  }
  return out.length > 1 ? markdown(out, 1) : undefined;
}
