/**
 * The rate of an engine's Step Functions polls: a token bucket whose rate halves on each
 * ThrottlingException and grows back by one call per second after 10 s without one (additive
 * increase, multiplicative decrease), so many pending executions share an account's API quota
 * instead of being throttled together.
 */
export class PollRate {
  private rate: number;
  private tokens: number;
  private lastRefillMs = Date.now();
  private lastThrottleMs = 0;

  constructor(private readonly maxPerSecond: number) {
    this.rate = maxPerSecond;
    this.tokens = maxPerSecond;
  }

  /** The calls per second allowed now. */
  get current(): number {
    return this.rate;
  }

  /** Takes one call's token; false when the caller must wait. */
  take(): boolean {
    const now = Date.now();
    if (now - this.lastThrottleMs > 10_000 && this.rate < this.maxPerSecond) this.rate = Math.min(this.maxPerSecond, this.rate + 1);
    // The bucket holds at least one call, so a rate below one per second still polls.
    this.tokens = Math.min(Math.max(1, this.rate), this.tokens + ((now - this.lastRefillMs) / 1_000) * this.rate);
    this.lastRefillMs = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** AWS throttled a call: halve the rate (at least one call per 2 s) and empty the bucket. */
  throttled(): void {
    this.lastThrottleMs = Date.now();
    this.rate = Math.max(0.5, this.rate / 2);
    this.tokens = 0;
  }
}
