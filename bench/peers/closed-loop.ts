/**
 * The closed loop both systems are driven with: C lanes, each starting its next invocation as soon
 * as its last one completed, so C invocations are in flight at all times. It runs a warm-up, then
 * a measured window, then stops issuing and lets the invocations in flight finish. Every
 * invocation that completes inside the window is counted and its duration (start to completion)
 * sampled; nothing is asserted about the times.
 */
import { performance } from 'node:perf_hooks';
import { percentile } from '../core.js';

export interface LoopOptions {
  concurrency: number;
  warmupMs: number;
  measureMs: number;
  /** One invocation of lane `lane`, its `k`-th (0-based, warm-up included); resolves on completion. */
  invoke(lane: number, k: number): Promise<void>;
  /** Longest wait for one invocation; a longer one fails the measurement instead of hanging it. */
  invocationTimeoutMs: number;
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
  const t1 = t0 + o.measureMs;
  const samples: number[] = [];
  let failure: Error | undefined;
  let stop = false;
  const windowTimers: NodeJS.Timeout[] = [];
  let windowOpened: Promise<void> | undefined;
  let windowClosed: Promise<void> | undefined;
  const closeWindow = (): void => {
    if (o.onWindow && windowOpened && !windowClosed) windowClosed = windowOpened.then(() => o.onWindow!.close());
  };
  if (o.onWindow) {
    const w = o.onWindow;
    windowTimers.push(setTimeout(() => (windowOpened = Promise.resolve(w.open())), o.warmupMs));
  }
  windowTimers.push(
    setTimeout(() => {
      stop = true;
      closeWindow();
    }, o.warmupMs + o.measureMs),
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
      if (ended >= t0 && ended <= t1) samples.push(ended - began);
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency }, (_, l) => lane(l)));
  } finally {
    for (const t of windowTimers) clearTimeout(t);
    stop = true;
    closeWindow(); // also when a failure ended the loop inside the window
    await windowClosed;
  }
  if (failure) throw failure;
  samples.sort((a, b) => a - b);
  return {
    concurrency: o.concurrency,
    invocations: samples.length,
    seconds: o.measureMs / 1_000,
    samples,
    p50: percentile(samples, 0.5),
    p99: percentile(samples, 0.99),
    max: samples[samples.length - 1] ?? NaN,
  };
}
