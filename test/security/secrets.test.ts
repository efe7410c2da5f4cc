// Field-level encryption of declared secrets: round trips, wildcard paths, binding to the place an
// envelope belongs, key rotation, key ring checks, and no plaintext on a real nats-server's disk.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, it } from 'node:test';
import { jetstream } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { ErrorCode, JetstateError } from '../../engine/errors.js';
import { REDACTED, redactEnvelopes, redactPaths } from '../../engine/security/redact.js';
import {
  checkSecretPaths,
  countStale,
  createKeyRing,
  isSealed,
  keyRingFromEnv,
  openPaths,
  resealPaths,
  sealPaths,
  type SealedValue,
} from '../../engine/security/secrets.js';
import { startNats } from '../helpers.js';

const k1 = randomBytes(32).toString('base64');
const k2 = randomBytes(32).toString('base64');
const ring1 = createKeyRing({ keys: [{ id: 'k1', key: k1 }] });
const ring12 = createKeyRing({
  keys: [
    { id: 'k1', key: k1 },
    { id: 'k2', key: k2 },
  ],
});
const ring2 = createKeyRing({ keys: [{ id: 'k2', key: k2 }] });
const AAD = 'order/o-17/context';

/** Asserts `fn` throws a JetstateError with `code` whose message matches `pattern`, and returns it. */
function throwsCode(fn: () => unknown, code: string, pattern: RegExp): JetstateError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof JetstateError, `expected a JetstateError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return e;
  }
  assert.fail('expected an error');
}

const at = (v: unknown, ...keys: Array<string | number>): unknown => keys.reduce<unknown>((o, k) => (o as Record<string | number, unknown>)[k], v);

describe('secrets: seal and open', () => {
  it('round-trips strings, numbers, booleans, null, objects and arrays', () => {
    const value = { s: 'MARK-s', n: 42.5, b: false, z: null, o: { a: [1, { b: 'MARK-o' }] }, a: ['MARK-a', 2], keep: 'plain' };
    const paths = ['s', 'n', 'b', 'z', 'o', 'a'];
    const sealed = sealPaths(value, paths, ring1, AAD);
    for (const p of paths) assert.ok(isSealed(at(sealed, p)), `${p} sealed`);
    assert.equal(at(sealed, 'keep'), 'plain');
    assert.doesNotMatch(JSON.stringify(sealed), /MARK|42\.5/);
    assert.deepEqual(openPaths(sealed, paths, ring1, AAD), value);
    // Through JSON, as it goes through KV.
    assert.deepEqual(openPaths(JSON.parse(JSON.stringify(sealed)), paths, ring1, AAD), value);
  });

  it('does not mutate its input and shares what it does not change', () => {
    const value = { card: { number: '4111' }, other: { x: 1 } };
    const before = structuredClone(value);
    const sealed = sealPaths(value, ['card.number'], ring1, AAD) as typeof value;
    assert.deepEqual(value, before);
    assert.equal(sealed.other, value.other);
    const opened = openPaths(sealed, ['card.number'], ring1, AAD);
    assert.ok(isSealed(sealed.card.number), 'opening did not mutate the sealed value');
    assert.deepEqual(opened, value);
    assert.equal(sealPaths(value, ['nothing.here'], ring1, AAD), value, 'nothing matched: same reference');
  });

  it('matches wildcards over arrays and object keys, and array indexes', () => {
    const value = {
      cards: [{ number: 'MARK-1', brand: 'visa' }, { number: 'MARK-2' }, { brand: 'none' }, 'not-an-object'],
      byName: { alice: { ssn: 'MARK-3' }, bob: { ssn: 'MARK-4' } },
      list: ['a', 'MARK-5'],
    };
    const paths = ['cards.*.number', 'byName.*.ssn', 'list.1'];
    const sealed = sealPaths(value, paths, ring1, AAD);
    assert.doesNotMatch(JSON.stringify(sealed), /MARK/);
    assert.equal(at(sealed, 'cards', 0, 'brand'), 'visa');
    assert.deepEqual(at(sealed, 'cards', 2), { brand: 'none' }, 'an element without the key is left alone');
    assert.equal(at(sealed, 'cards', 3), 'not-an-object');
    assert.equal(at(sealed, 'list', 0), 'a');
    assert.deepEqual(openPaths(sealed, paths, ring1, AAD), value);
    // A top-level wildcard seals every field.
    const all = sealPaths({ a: 'MARK', b: 2 }, ['*'], ring1, AAD);
    assert.ok(isSealed(at(all, 'a')) && isSealed(at(all, 'b')));
  });

  it('skips missing paths, undefined and non-containers; leaves sealed values alone', () => {
    const value = { a: { b: 1 }, s: 'str', u: undefined };
    const paths = ['x.y', 'a.c', 's.length', 'u', 'a.b.c'];
    assert.equal(sealPaths(value, paths, ring1, AAD), value);
    assert.equal(sealPaths('just a string', paths, ring1, AAD), 'just a string');
    const once = sealPaths({ a: 'MARK' }, ['a'], ring1, AAD);
    const twice = sealPaths(once, ['a'], ring12, AAD);
    assert.equal(twice, once, 'an already sealed value is not sealed again');
  });

  it('gives each seal a fresh IV', () => {
    const a = sealPaths({ x: 'same' }, ['x'], ring1, AAD) as { x: SealedValue };
    const b = sealPaths({ x: 'same' }, ['x'], ring1, AAD) as { x: SealedValue };
    assert.notEqual(a.x.iv, b.x.iv);
    assert.notEqual(a.x.ct, b.x.ct);
    assert.equal(Buffer.from(a.x.iv, 'base64').length, 12);
  });

  it('binds an envelope to its instance and field (AAD)', () => {
    const sealed = sealPaths({ card: { number: 'MARK' }, other: { number: 'x' } }, ['card.number', 'other.number'], ring1, 'order/o-17/context') as {
      card: { number: SealedValue };
      other: { number: SealedValue };
    };
    // Another instance.
    throwsCode(
      () => openPaths(sealed, ['card.number'], ring1, 'order/o-18/context'),
      ErrorCode.RecordUnreadable,
      /secret 'order\/o-18\/context\/card\.number' \(key 'k1'\) does not decrypt/,
    );
    // Another field of the same instance.
    const moved = { ...sealed, other: { number: sealed.card.number } };
    throwsCode(() => openPaths(moved, ['other.number'], ring1, 'order/o-17/context'), ErrorCode.RecordUnreadable, /does not decrypt/);
    // Another array element.
    const arr = sealPaths({ cards: [{ n: 'a' }, { n: 'b' }] }, ['cards.*.n'], ring1, AAD) as { cards: Array<{ n: SealedValue }> };
    const swapped = { cards: [arr.cards[1], arr.cards[0]] };
    throwsCode(() => openPaths(swapped, ['cards.*.n'], ring1, AAD), ErrorCode.RecordUnreadable, /cards\.0\.n/);
  });

  it('detects a tampered ciphertext, tag or IV (GCM)', () => {
    const sealed = sealPaths({ a: 'MARK-tamper' }, ['a'], ring1, AAD) as { a: SealedValue };
    const ct = Buffer.from(sealed.a.ct, 'base64');
    const flip = (buf: Buffer, i: number): string => {
      const c = Buffer.from(buf);
      c[i] = c[i]! ^ 1;
      return c.toString('base64');
    };
    for (const altered of [
      { ...sealed.a, ct: flip(ct, 0) }, // ciphertext
      { ...sealed.a, ct: flip(ct, ct.length - 1) }, // tag
      { ...sealed.a, iv: flip(Buffer.from(sealed.a.iv, 'base64'), 0) },
      { ...sealed.a, ct: ct.subarray(0, ct.length - 1).toString('base64') },
    ]) {
      throwsCode(() => openPaths({ a: altered }, ['a'], ring1, AAD), ErrorCode.RecordUnreadable, /does not decrypt/);
    }
    throwsCode(() => openPaths({ a: { ...sealed.a, iv: 'AAAA' } }, ['a'], ring1, AAD), ErrorCode.RecordUnreadable, /not a valid v1 envelope/);
    // An envelope relabelled with another key id of the ring.
    throwsCode(() => openPaths({ a: { ...sealed.a, k: 'k2' } }, ['a'], ring12, AAD), ErrorCode.RecordUnreadable, /does not decrypt/);
  });

  it('names an unknown key id and the fix', () => {
    const sealed = sealPaths({ a: 'x' }, ['a'], ring1, AAD);
    const e = throwsCode(
      () => openPaths(sealed, ['a'], ring2, AAD),
      ErrorCode.RecordUnreadable,
      /sealed with key 'k1', which is not in the key ring \(it has 'k2'\); add that key to the ring/,
    );
    assert.ok(!e.message.includes(k2));
  });

  it('rotates: old envelopes open after a new key is added, reseal moves them, the old key can go', () => {
    const paths = ['card.number', 'applicant.ssn', 'cards.*.cvc'];
    const value = { card: { number: '4111' }, applicant: { ssn: '078-05-1120' }, cards: [{ cvc: 123 }, { cvc: 456 }], name: 'Ann' };
    const old = sealPaths(value, paths, ring1, AAD);
    assert.equal(countStale(old, paths, ring1), 0);
    // Ring [k1, k2]: primary k2; k1 still opens the old envelopes.
    assert.deepEqual(openPaths(old, paths, ring12, AAD), value);
    assert.equal(countStale(old, paths, ring12), 4);
    const mixed = sealPaths({ ...(old as object), extra: { number: 'x' } }, [...paths, 'extra.number'], ring12, AAD);
    assert.equal(at(mixed, 'extra', 'number', 'k'), 'k2', 'new seals use the primary');
    assert.equal(at(mixed, 'card', 'number', 'k'), 'k1', 'old envelopes are left as they are');
    // Reseal moves everything to k2.
    const { value: moved, resealed } = resealPaths(old, paths, ring12, AAD);
    assert.equal(resealed, 4);
    assert.equal(countStale(moved, paths, ring12), 0);
    assert.doesNotMatch(JSON.stringify(moved), /"k":"k1"/);
    const again = resealPaths(moved, paths, ring12, AAD);
    assert.equal(again.resealed, 0);
    assert.equal(again.value, moved, 'nothing to move: same reference');
    // Ring [k2] alone opens the resealed value, not the old one.
    assert.deepEqual(openPaths(moved, paths, ring2, AAD), value);
    throwsCode(() => openPaths(old, paths, ring2, AAD), ErrorCode.RecordUnreadable, /key 'k1'/);
  });
});

describe('secrets: key ring', () => {
  const noKeyBytes = (e: Error, ...keys: string[]): void => {
    for (const key of keys) {
      assert.ok(!e.message.includes(key), 'message holds the key');
      // Nor any 8-character piece of it.
      for (let i = 0; i + 8 <= key.length; i += 4) assert.ok(!e.message.includes(key.slice(i, i + 8)), 'message holds part of the key');
    }
  };

  it('rejects keys of the wrong length, bad base64, bad and duplicate ids, an unknown primary', () => {
    const short = randomBytes(16).toString('base64');
    const long = randomBytes(33).toString('base64');
    noKeyBytes(
      throwsCode(() => createKeyRing({ keys: [{ id: 'a', key: short }] }), ErrorCode.InvalidOptions, /key 'a' decodes to 16 bytes; AES-256-GCM needs 32/),
      short,
    );
    noKeyBytes(
      throwsCode(() => createKeyRing({ keys: [{ id: 'a', key: long }] }), ErrorCode.InvalidOptions, /decodes to 33 bytes/),
      long,
    );
    const notB64 = `${k1.slice(0, 20)}!${k1.slice(21)}`;
    noKeyBytes(
      throwsCode(() => createKeyRing({ keys: [{ id: 'a', key: notB64 }] }), ErrorCode.InvalidOptions, /key 'a' is not base64/),
      notB64,
    );
    // Id and key swapped: neither is printed.
    noKeyBytes(
      throwsCode(() => createKeyRing({ keys: [{ id: k1, key: 'a' }] }), ErrorCode.InvalidOptions, /key 1 of 1 has an invalid id/),
      k1,
    );
    throwsCode(() => createKeyRing({ keys: [{ id: 'has space', key: k1 }] }), ErrorCode.InvalidOptions, /invalid id; use 1-64 characters/);
    noKeyBytes(
      throwsCode(
        () =>
          createKeyRing({
            keys: [
              { id: 'a', key: k1 },
              { id: 'a', key: k2 },
            ],
          }),
        ErrorCode.InvalidOptions,
        /key id 'a' is given twice/,
      ),
      k1,
      k2,
    );
    throwsCode(() => createKeyRing({ keys: [{ id: 'a', key: k1 }], primary: 'b' }), ErrorCode.InvalidOptions, /primary key 'b' is not one of the keys \('a'\)/);
    throwsCode(() => createKeyRing({ keys: [] }), ErrorCode.InvalidOptions, /at least one key/);
  });

  it('reads an env-style value; the last key is primary unless named', () => {
    const ring = keyRingFromEnv(` old:${k1} , new:${k2}, `);
    assert.equal(ring.primaryId, 'new');
    assert.deepEqual(ring.ids, ['old', 'new']);
    assert.equal(keyRingFromEnv(`old:${k1},new:${k2}`, { primary: 'old' }).primaryId, 'old');
    // Interoperates with a ring built from options.
    const sealed = sealPaths({ a: 'x' }, ['a'], keyRingFromEnv(`k1:${k1}`), AAD);
    assert.deepEqual(openPaths(sealed, ['a'], ring1, AAD), { a: 'x' });
  });

  it('explains a bad env value without echoing it', () => {
    const src = { source: 'JETSTATE_SECRET_KEYS' };
    throwsCode(() => keyRingFromEnv(undefined, src), ErrorCode.InvalidOptions, /JETSTATE_SECRET_KEYS is empty; set it to 'id:base64key'/);
    noKeyBytes(
      throwsCode(() => keyRingFromEnv(`a:${k1},${k2}`, src), ErrorCode.InvalidOptions, /JETSTATE_SECRET_KEYS: entry 2 of 2 is not 'id:base64key'/),
      k1,
      k2,
    );
    const short = randomBytes(31).toString('base64');
    noKeyBytes(
      throwsCode(() => keyRingFromEnv(`a:${short}`, src), ErrorCode.InvalidOptions, /^JETSTATE_SECRET_KEYS: key 'a' decodes to 31 bytes/),
      short,
    );
  });

  it('never shows key material when printed', () => {
    const shown = [inspect(ring12, { showHidden: true, depth: 5 }), JSON.stringify(ring12), String(Object.entries(ring12))];
    for (const s of shown) {
      assert.ok(!s.includes(k1) && !s.includes(k2), s);
      assert.ok(!s.includes(Buffer.from(k1, 'base64').toString('hex')));
    }
    assert.match(shown[0]!, /primary: 'k2'/);
  });

  it('checks declared paths', () => {
    checkSecretPaths(['card.number', 'cards.*.number', 'a.*', 'a.b']);
    throwsCode(() => checkSecretPaths(['a..b']), ErrorCode.InvalidDefinition, /secrets path "a\.\.b" is not valid/);
    throwsCode(() => checkSecretPaths(['']), ErrorCode.InvalidDefinition, /not valid/);
    throwsCode(() => checkSecretPaths(['card.number', 'card']), ErrorCode.InvalidDefinition, /'card\.number' lies inside 'card'/);
    throwsCode(() => checkSecretPaths(['cards.*', 'cards.0.cvc']), ErrorCode.InvalidDefinition, /lies inside 'cards\.\*'/);
  });
});

describe('redaction', () => {
  it('redacts declared paths, plain or sealed', () => {
    const value = { card: { number: '4111', brand: 'visa' }, cards: [{ number: 'x' }], ssn: { $enc: 'v1', k: 'k1', iv: 'a', ct: 'b' } };
    const out = redactPaths(value, ['card.number', 'cards.*.number', 'ssn', 'missing.path']);
    assert.deepEqual(out, { card: { number: REDACTED, brand: 'visa' }, cards: [{ number: REDACTED }], ssn: REDACTED });
    assert.equal(value.card.number, '4111', 'input not mutated');
  });

  it('replaces envelopes anywhere by their key id', () => {
    const sealed = sealPaths({ a: { b: [{ c: 'MARK' }] }, d: 1 }, ['a.b.*.c'], ring1, AAD);
    assert.deepEqual(redactEnvelopes(sealed), { a: { b: [{ c: '[encrypted:k1]' }] }, d: 1 });
    const plain = { a: [1, { b: 2 }] };
    assert.equal(redactEnvelopes(plain), plain, 'nothing to redact: same reference');
  });
});

describe('secrets on disk', () => {
  it('a sealed record in a JetStream KV bucket leaves no plaintext in the store; an unsealed control does', async () => {
    const nats = await startNats();
    try {
      const sealedMarker = `SEALED-MARKER-${randomBytes(6).toString('hex')}`;
      const controlMarker = `CONTROL-MARKER-${randomBytes(6).toString('hex')}`;
      const nc = await connect({ servers: nats.url });
      try {
        const kv = await new Kvm(jetstream(nc)).create('secrets_disk', { history: 5, storage: 'file' });
        const record = { card: { number: sealedMarker, holder: 'Ann' }, cards: [{ number: sealedMarker }] };
        const paths = ['card.number', 'cards.*.number'];
        const stored = sealPaths(record, paths, ring1, 'order/o-17/context');
        await kv.put('order.o-17', JSON.stringify(stored));
        await kv.put('order.control', JSON.stringify({ card: { number: controlMarker } }));
        // It reads back and opens.
        const entry = await kv.get('order.o-17');
        assert.deepEqual(openPaths(entry!.json(), paths, ring1, 'order/o-17/context'), record);
      } finally {
        await nc.close();
      }
      // Stopping the server writes out everything it holds.
      await nats.stop();
      const found = { sealed: 0, control: 0 };
      const sealedBytes = Buffer.from(sealedMarker);
      const controlBytes = Buffer.from(controlMarker);
      let files = 0;
      for (const file of await filesUnder(nats.storeDir)) {
        const data = await readFile(file);
        files++;
        if (data.includes(sealedBytes)) found.sealed++;
        if (data.includes(controlBytes)) found.control++;
      }
      assert.ok(files > 1, `scanned ${files} files`);
      assert.equal(found.sealed, 0, 'the sealed marker is on disk');
      assert.ok(found.control > 0, 'the control marker is not on disk: the scan cannot see stored values');
    } finally {
      await nats.dispose();
    }
  });
});

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}
