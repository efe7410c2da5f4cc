/** The time source of timers and token checks. */

/** A source of the current time in ms; tests pass a controllable one. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** Node's longest timer (about 24.8 days): a longer delay fires after 1 ms, with a warning. */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * `setTimeout` for a delay of any length: one longer than Node's longest timer runs as a chain of
 * them. Returns its cancel. `unref`: the timer does not keep the process alive.
 */
export function longTimeout(fn: () => void, ms: number, unref = false): () => void {
  let timer: NodeJS.Timeout;
  const arm = (left: number): void => {
    timer = left > MAX_TIMER_MS ? setTimeout(() => arm(left - MAX_TIMER_MS), MAX_TIMER_MS) : setTimeout(fn, Math.max(0, left));
    if (unref) timer.unref?.();
  };
  arm(ms);
  return () => clearTimeout(timer);
}

/**
 * Resolves after `ms`, or as soon as one of `signals` aborts (never rejects). Listens on each and
 * removes its listeners after: no combined signal (`AbortSignal.any` keeps a link from long-lived
 * signals to every signal it made, on Node 20).
 */
export function sleepUnless(ms: number, ...signals: AbortSignal[]): Promise<void> {
  return new Promise((resolve) => {
    if (signals.some((s) => s.aborted)) return resolve();
    const timer = setTimeout(done, ms);
    for (const s of signals) s.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** Waits for `p`, at most `ms`: true when it settled in time (fulfilled or rejected), false when the time ran out. */
export async function waitAtMost(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
