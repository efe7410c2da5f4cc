/**
 * The closed loop both systems are driven with: C lanes, each starting its next invocation as soon
 * as its last one completed, so C invocations are in flight at all times. It runs a warm-up, then
 * a measured window, then stops issuing and lets the invocations in flight finish. Every
 * invocation that completes inside the window is counted and its duration (start to completion)
 * sampled; nothing is asserted about the times.
 */
import { performance } from 'node:perf_hooks';
import { percentile } from '../core.js';

/** How long a measurement warms up and measures (see {@link LoopOptions}). */
export interface Window {
  warmupMs: number;
  measureMs: number;
  maxMeasureMs: number;
  /** The window is extended (up to `maxMeasureMs`) until this many invocations per lane completed in it. */
  minPerLane: number;
}

/** Loop options from a window, for `concurrency` lanes. */
export const windowOptions = (
  w: Window,
  concurrency: number,
): Pick<LoopOptions, 'warmupMs' | 'measureMs' | 'maxMeasureMs' | 'minInvocations' | 'concurrency'> => ({
  concurrency,
  warmupMs: w.warmupMs,
  measureMs: w.measureMs,
  maxMeasureMs: w.maxMeasureMs,
  minInvocations: w.minPerLane * concurrency,
});

export interface LoopOptions {
  concurrency: number;
  warmupMs: number;
  measureMs: number;
  /** One invocation of lane `lane`, its `k`-th (0-based, warm-up included); resolves on completion. */
  invoke(lane: number, k: number): Promise<void>;
  /** Longest wait for one invocation; a longer one fails the measurement instead of hanging it. */
  invocationTimeoutMs: number;
  /**
   * The window lasts `measureMs`, longer if fewer invocations than this completed by then (up to
   * `maxMeasureMs`): at high concurrency the lanes tend to complete in waves, and a window that
   * holds only one or two waves gives a throughput that depends on where the waves fell.
   */
  minInvocations?: number;
  maxMeasureMs?: number;
  /** Called when the measured window opens and closes (e.g. to start and stop a CPU profile). */
  onWindow?: { open(): void | Promise<void>; close(): void | Promise<void> };
}

export interface LoopResult {
  concurrency: number;
  /** Invocations completed inside the window. */
  invocations: number;
  /** Length of the window, in seconds. */
  seconds: number;
  /** Durations of those invocations, ms, sorted. */
  samples: number[];
  p50: number;
  p99: number;
  max: number;
}

const now = (): number => performance.now();

function timeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, ko) => {
      timer = setTimeout(() => ko(new Error(`${what()}: not complete within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Runs the loop; rejects with the first failed invocation (after the others have settled). */
export async function closedLoop(o: LoopOptions): Promise<LoopResult> {
  const start = now();
  const t0 = start + o.warmupMs;
  /** End of the window: open until decided. */
  let t1 = Infinity;
  const minInvocations = o.minInvocations ?? 0;
  const maxMeasureMs = Math.max(o.measureMs, o.maxMeasureMs ?? o.measureMs);
  const samples: number[] = [];
  let failure: Error | undefined;
  let stop = false;
  /** Past `measureMs` with too few completions: the window closes at the completion that makes enough. */
  let extending = false;
  const windowTimers: NodeJS.Timeout[] = [];
  let windowOpened: Promise<void> | undefined;
  let windowClosed: Promise<void> | undefined;
  const closeWindow = (at: number): void => {
    if (t1 === Infinity) t1 = at;
    stop = true;
    if (o.onWindow && windowOpened && !windowClosed) windowClosed = windowOpened.then(() => o.onWindow!.close());
  };
  if (o.onWindow) {
    const w = o.onWindow;
    windowTimers.push(setTimeout(() => (windowOpened = Promise.resolve(w.open())), o.warmupMs));
  }
  windowTimers.push(
    setTimeout(() => {
      if (samples.length >= minInvocations) closeWindow(now());
      else extending = true;
    }, o.warmupMs + o.measureMs),
    setTimeout(() => closeWindow(now()), o.warmupMs + maxMeasureMs),
  );
  const lane = async (l: number): Promise<void> => {
    for (let k = 0; !stop && !failure; k++) {
      const began = now();
      try {
        await timeout(o.invoke(l, k), o.invocationTimeoutMs, () => `lane ${l} invocation ${k}`);
      } catch (e) {
        failure ??= e as Error;
        return;
      }
      const ended = now();
      if (ended >= t0 && ended <= t1) {
        samples.push(ended - began);
        if (extending && samples.length >= minInvocations) closeWindow(ended);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency }, (_, l) => lane(l)));
  } finally {
    for (const t of windowTimers) clearTimeout(t);
    closeWindow(now()); // also when a failure ended the loop inside the window
    await windowClosed;
  }
  if (failure) throw failure;
  samples.sort((a, b) => a - b);
  return {
    concurrency: o.concurrency,
    invocations: samples.length,
    seconds: (t1 - t0) / 1_000,
    samples,
    p50: percentile(samples, 0.5),
    p99: percentile(samples, 0.99),
    max: samples[samples.length - 1] ?? NaN,
  };
}
