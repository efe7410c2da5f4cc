/**
 * Cost of field-level encryption on the hot path: seal then open a payload with three secret
 * fields (two plain, one in an array under a wildcard), as the engine does per write and read.
 *
 *   npx tsx bench/secrets.ts
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createKeyRing, openPaths, sealPaths } from '../engine/security/secrets.js';
import { redactPaths } from '../engine/security/redact.js';

const ring = createKeyRing({
  keys: [
    { id: 'old', key: randomBytes(32).toString('base64') },
    { id: 'new', key: randomBytes(32).toString('base64') },
  ],
});
const paths = ['card.number', 'applicant.ssn', 'cards.*.cvc'];
const payload = {
  orderId: 'o-17',
  amount: 120.5,
  card: { number: '4111 1111 1111 1111', brand: 'visa' },
  applicant: { name: 'Ann Example', ssn: '078-05-1120' },
  cards: [{ cvc: '123', last4: '1111' }],
};
const aad = 'order/o-17/context';

function measure(label: string, n: number, fn: () => void): void {
  for (let i = 0; i < Math.min(n, 5_000); i++) fn(); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn();
  const ms = performance.now() - t0;
  console.log(
    `${label.padEnd(34)} ${Math.round((n / ms) * 1000)
      .toLocaleString('en')
      .padStart(10)} ops/s   ${((ms * 1000) / n).toFixed(2)} µs/op`,
  );
}

const N = 100_000;
const sealed = sealPaths(payload, paths, ring, aad);
console.log(`payload: 3 secret fields, ${JSON.stringify(payload).length} bytes plain, ${JSON.stringify(sealed).length} bytes sealed; node ${process.version}`);
measure('seal (3 fields)', N, () => void sealPaths(payload, paths, ring, aad));
measure('open (3 fields)', N, () => void openPaths(sealed, paths, ring, aad));
measure('seal + open (3 fields)', N, () => void openPaths(sealPaths(payload, paths, ring, aad), paths, ring, aad));
measure('seal + JSON + parse + open', N, () => void openPaths(JSON.parse(JSON.stringify(sealPaths(payload, paths, ring, aad))), paths, ring, aad));
measure('redactPaths (3 fields)', N, () => void redactPaths(payload, paths));
const absent = ['absent.path', 'card.cvc', 'cards.*.pin'];
measure('nothing matched (walk only)', N, () => void sealPaths(payload, absent, ring, aad));
measure('paths given as a new array each call', N, () => void sealPaths(payload, [...absent], ring, aad));
