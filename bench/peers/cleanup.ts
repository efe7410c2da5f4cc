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
