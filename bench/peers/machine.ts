/**
 * What the peer benchmark says about the machine it ran on, and where the CPU went during each
 * measured window: this process, each process it started, and everything else (other work on a
 * shared machine), read from /proc on Linux.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { projectRoot } from './restate-install.js';

/** Cores used during a window, by label ('bench' is this process), plus 'other' and 'idle'. */
export type CpuUse = Record<string, number>;

const HZ = 100; // USER_HZ on Linux

/** utime + stime of a process in ticks, or undefined once it is gone. */
function ticksOf(pid: number | 'self'): number | undefined {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return undefined;
  }
}

/** Busy and idle ticks of the whole machine (all cores). */
function machineTicks(): { busy: number; idle: number } | undefined {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    return { busy: f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!, idle: f[3]! + f[4]! };
  } catch {
    return undefined;
  }
}

/**
 * Starts a meter over the given processes; the returned function ends it and gives the cores each
 * used on average, 'other' for the rest of the machine's busy time, and 'idle'. Empty off Linux.
 */
export function cpuMeter(pids: Record<string, number | undefined>): () => CpuUse {
  const read = (): { t: number; m: ReturnType<typeof machineTicks>; p: Record<string, number | undefined> } => ({
    t: performance.now(),
    m: machineTicks(),
    p: Object.fromEntries([['bench', ticksOf('self')], ...Object.entries(pids).map(([k, pid]) => [k, pid === undefined ? undefined : ticksOf(pid)])]),
  });
  const a = read();
  return () => {
    const b = read();
    const seconds = (b.t - a.t) / 1_000;
    if (!a.m || !b.m || seconds <= 0) return {};
    const use: CpuUse = {};
    let ours = 0;
    for (const k of Object.keys(a.p)) {
      const before = a.p[k];
      const after = b.p[k];
      if (before === undefined || after === undefined) continue;
      use[k] = (after - before) / HZ / seconds;
      ours += after - before;
    }
    use['other'] = Math.max(0, (b.m.busy - a.m.busy - ours) / HZ / seconds);
    use['idle'] = (b.m.idle - a.m.idle) / HZ / seconds;
    return use;
  };
}

/** The CPU model as /proc/cpuinfo names it. */
function cpuModel(): string {
  try {
    return /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  } catch {
    return os.cpus()[0]?.model ?? 'unknown';
  }
}

/** Machine, versions and code revision, one fact a line. */
export function machineFacts(versions: Record<string, string>): string[] {
  const nproc = spawnSync('nproc', [], { encoding: 'utf8' }).stdout?.trim() || String(os.availableParallelism());
  const git = (a: string[]): string => spawnSync('git', a, { encoding: 'utf8', cwd: projectRoot }).stdout?.trim() ?? '';
  const rev = git(['rev-parse', '--short', 'HEAD']);
  const dirty = git(['status', '--porcelain', '--', 'engine', 'adapters', 'bench']);
  return [
    `machine: nproc ${nproc}, CPU ${cpuModel()}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.platform()} ${os.release()}; stores in ${os.tmpdir()}`,
    `versions: node ${process.version}, ${Object.entries(versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    `code: git ${rev || '?'}${dirty ? ' + uncommitted changes in engine/, adapters/ or bench/' : ''}`,
  ];
}

export const loadAverage = (): string =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
