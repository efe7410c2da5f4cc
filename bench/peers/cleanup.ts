import type { ChildProcess } from 'node:child_process';
/**
 * The processes the peer benchmark started, so that a failure, a signal or the watchdog stops
 * each of them (by its own handle, so by its PID) instead of leaving them running.
 */
const live = new Set<() => Promise<void>>();

/** Remembers how to stop something; the returned function forgets it again (after a normal stop). */
export function track(stop: () => Promise<void>): () => void {
  live.add(stop);
  return () => live.delete(stop);
}

/** Stops everything still tracked, each even if another fails. */
export async function stopAll(): Promise<void> {
  const all = [...live];
  live.clear();
  await Promise.all(all.map((s) => s().catch(() => {})));
}

/**
 * Tracks a child process: the returned stop sends SIGTERM, then SIGKILL after `graceMs`, and
 * resolves once it exited (at once when it already had).
 */
export function trackChild(child: ChildProcess, graceMs: number): () => Promise<void> {
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async (): Promise<void> => {
    untrack();
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
  };
  const untrack = track(stop);
  return stop;
}
