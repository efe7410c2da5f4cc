/**
 * Redaction for what leaves the engine to be read by people: span attributes, log fields, CLI
 * output, error messages. Encryption (secrets.ts) protects what is stored; redaction makes sure a
 * copy meant for display carries neither the plaintext nor an envelope someone could try to open.
 */
import { isSealed, mapSecretPaths } from './secrets.js';

/** What a redacted value becomes. */
export const REDACTED = '[redacted]';

/**
 * Returns a copy of `value` with every value at `paths` (the workflow's `secrets`, same syntax as
 * `sealPaths`) replaced by `'[redacted]'`, whether plain or sealed. Missing paths are skipped;
 * `value` is not mutated and is returned as is when nothing matched.
 *
 * @example
 * ```ts
 * redactPaths({ card: { number: '4111', brand: 'visa' } }, ['card.number']);
 * // { card: { number: '[redacted]', brand: 'visa' } }
 * ```
 */
export function redactPaths(value: unknown, paths: readonly string[]): unknown {
  return mapSecretPaths(value, paths, (v) => (v === undefined ? v : REDACTED));
}

/**
 * Returns a copy of `value` with every envelope, at any depth, replaced by
 * `'[encrypted:<keyId>]'`: for showing a stored record without knowing its workflow's `secrets`.
 * Only containers holding an envelope are copied; `value` is returned as is when it has none.
 *
 * @example
 * ```ts
 * redactEnvelopes({ card: { number: { $enc: 'v1', k: '2025', iv: '…', ct: '…' } } });
 * // { card: { number: '[encrypted:2025]' } }
 * ```
 */
export function redactEnvelopes(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (isSealed(value)) return `[encrypted:${value.k}]`;
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      const r = redactEnvelopes(v);
      if (r !== v) (copy ??= value.slice())[i] = r;
    }
    return copy ?? value;
  }
  const obj = value as Record<string, unknown>;
  let copy: Record<string, unknown> | undefined;
  for (const k of Object.keys(obj)) {
    const v = obj[k];
    const r = redactEnvelopes(v);
    if (r !== v) (copy ??= { ...obj })[k] = r;
  }
  return copy ?? value;
}
