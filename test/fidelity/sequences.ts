/**
 * Generated sequences: fast-check draws steps from each case's alphabet with a seed, so a run can
 * be replayed exactly (`FIDELITY_SEED=<seed>`). Each case gets its own seed derived from the run's
 * seed and its name, so adding a case changes no other case's sequences.
 */
import fc from 'fast-check';
import type { FidelityCase, Step } from './types.js';

/** The seed when FIDELITY_SEED is not set: fixed, so the suite is the same on every run. */
export const DEFAULT_SEED = 20_251_017;

export function seedFromEnv(): number {
  const raw = process.env['FIDELITY_SEED'];
  if (raw === undefined || raw === '') return DEFAULT_SEED;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`FIDELITY_SEED must be an integer, got '${raw}'`);
  return n;
}

function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** `count` sequences of 1 to `maxLength` steps of the case's alphabet. */
export function generatedSequences(c: FidelityCase, seed: number, count: number, maxLength = 8): Step[][] {
  if (c.alphabet.length === 0 || count <= 0) return [];
  const arb = fc.array(fc.constantFrom(...c.alphabet), { minLength: 1, maxLength });
  return fc.sample(arb, { seed: (seed ^ hash(c.name)) | 0, numRuns: count });
}

/** Smaller variants of a sequence (one step left out each), for shrinking a diverging one. */
export function shrinkCandidates(steps: readonly Step[]): Step[][] {
  return steps.map((_, i) => [...steps.slice(0, i), ...steps.slice(i + 1)]).filter((s) => s.length > 0);
}
