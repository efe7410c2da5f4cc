// The Step Functions poll rate: below one call per second (an option, or a rate halved by
// throttling) it still allows a call whenever a whole one has accrued.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { PollRate } from '../../adapters/step-functions/poll-rate.js';

/** Calls allowed when take() is tried every 250 ms for `seconds`. */
function allowed(rate: PollRate, seconds: number): number {
  let n = 0;
  for (let t = 0; t < seconds * 4; t++) {
    mock.timers.tick(250);
    if (rate.take()) n++;
  }
  return n;
}

describe('poll rate', () => {
  beforeEach(() => mock.timers.enable({ apis: ['Date'], now: 1_000_000 }));
  afterEach(() => mock.timers.reset());

  it('allows one call per 2 s at 0.5 per second', () => {
    assert.equal(allowed(new PollRate(0.5), 20), 10);
  });

  it('keeps polling at its floor after repeated throttling', () => {
    const rate = new PollRate(10);
    for (let i = 0; i < 4; i++) rate.throttled();
    assert.equal(rate.current, 0.625);
    // Within the next 9 s (no increase yet): one call per 1.6 s.
    assert.equal(allowed(rate, 9), 5);
  });
});
