/** The time source of timers and token checks. */

/** A source of the current time in ms; tests pass a controllable one. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
