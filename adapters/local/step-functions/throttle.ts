/**
 * Throttling and request counting for the loopback endpoint: scripted throttles (the next N calls
 * of some actions fail), scripted slow replies (the next N calls run at once and answer late, as a
 * request that reached AWS but whose reply is slow), a token bucket like AWS's per-account API
 * limits, and counts per action and access key, so tests prove a client backs off, stays under a
 * rate, uses the key it should, or copes with a call still in flight.
 */

export interface ThrottleSpec {
  /** How many of the next matching calls get ThrottlingException. */
  count: number;
  /** Actions it applies to (e.g. `['DescribeExecution']`); every action when omitted. */
  actions?: string[] | undefined;
}

export interface DelaySpec {
  /** How long the reply waits after the action ran. */
  ms: number;
  /** How many of the next matching calls answer late (default 1). */
  count?: number | undefined;
  /** Actions it applies to; every action when omitted. */
  actions?: string[] | undefined;
}

export interface RequestStats {
  byAction: Record<string, number>;
  byAccessKey: Record<string, number>;
  total: number;
}

export class Throttle {
  private scripted: Array<{ remaining: number; actions: Set<string> | null }> = [];
  private delays: Array<{ remaining: number; ms: number; actions: Set<string> | null }> = [];
  private bucket: { perSecond: number; tokens: number; atMs: number } | null = null;
  private stats: RequestStats = { byAction: {}, byAccessKey: {}, total: 0 };

  script(spec: ThrottleSpec): void {
    if (!Number.isInteger(spec.count) || spec.count < 0) throw new RangeError(`throttle: count must be a whole number ≥ 0, got ${spec.count}`);
    this.scripted.push({ remaining: spec.count, actions: spec.actions ? new Set(spec.actions) : null });
  }

  delay(spec: DelaySpec): void {
    const count = spec.count ?? 1;
    if (!Number.isInteger(count) || count < 0) throw new RangeError(`delay: count must be a whole number ≥ 0, got ${count}`);
    if (!(spec.ms >= 0)) throw new RangeError(`delay: ms must be ≥ 0, got ${spec.ms}`);
    this.delays.push({ remaining: count, ms: spec.ms, actions: spec.actions ? new Set(spec.actions) : null });
  }

  /** How long the reply to an admitted call of `action` waits (0 for most). */
  replyDelayMs(action: string): number {
    const spec = this.delays.find((d) => d.remaining > 0 && (d.actions === null || d.actions.has(action)));
    if (!spec) return 0;
    spec.remaining--;
    this.delays = this.delays.filter((d) => d.remaining > 0);
    return spec.ms;
  }

  /** A token bucket holding up to one second of calls (at least one), refilled at `perSecond`; null removes it. */
  rateLimit(perSecond: number | null): void {
    if (perSecond !== null && !(perSecond > 0)) throw new RangeError(`rateLimit: perSecond must be > 0 or null, got ${perSecond}`);
    this.bucket = perSecond === null ? null : { perSecond, tokens: Math.max(1, perSecond), atMs: Date.now() };
  }

  /** Counts a call and says whether it is throttled. */
  admit(action: string, accessKeyId: string): boolean {
    this.stats.total++;
    this.stats.byAction[action] = (this.stats.byAction[action] ?? 0) + 1;
    this.stats.byAccessKey[accessKeyId] = (this.stats.byAccessKey[accessKeyId] ?? 0) + 1;
    const spec = this.scripted.find((s) => s.remaining > 0 && (s.actions === null || s.actions.has(action)));
    if (spec) {
      spec.remaining--;
      this.scripted = this.scripted.filter((s) => s.remaining > 0);
      return false;
    }
    if (this.bucket) {
      const now = Date.now();
      const b = this.bucket;
      b.tokens = Math.min(Math.max(1, b.perSecond), b.tokens + ((now - b.atMs) / 1000) * b.perSecond);
      b.atMs = now;
      if (b.tokens < 1) return false;
      b.tokens -= 1;
    }
    return true;
  }

  snapshot(): RequestStats {
    return { byAction: { ...this.stats.byAction }, byAccessKey: { ...this.stats.byAccessKey }, total: this.stats.total };
  }

  reset(): void {
    this.stats = { byAction: {}, byAccessKey: {}, total: 0 };
  }
}
