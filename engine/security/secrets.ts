/**
 * Field-level encryption of workflow secrets. A workflow names its secret fields as dotted paths
 * (`secrets: ['card.number', 'cards.*.number']`); before input, context or an event payload
 * reaches KV or a stream, each matched value is replaced by an AES-256-GCM envelope, and opened
 * again after it is read back. Everything else stays readable, so the engine can still route,
 * dedupe and show state without a key.
 *
 * Keys live in a {@link KeyRing} with ids: new envelopes use the primary key, old envelopes name
 * the key that sealed them, so keys rotate without rewriting anything at once
 * ({@link resealPaths} moves old envelopes to the primary key when convenient).
 *
 * Each envelope is bound to where it belongs by the GCM additional data
 * `<aadPrefix>/<concrete path>` (e.g. `order/o-17/cards.0.number`): an envelope copied to another
 * instance, workflow or field does not decrypt.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomFillSync, type KeyObject } from 'node:crypto';
import { inspect } from 'node:util';
import { z } from 'zod';
import { ErrorCode, JetstateError, MissingKeyError, fail } from '../errors.js';

/** The envelope format written today; see docs/SECURITY.md. */
export const ENVELOPE_VERSION = 'v1';

/**
 * What replaces a secret value: JSON-safe, self-describing, and useless without the key.
 * `ct` is the ciphertext followed by the 16-byte GCM tag.
 */
export interface SealedValue {
  readonly $enc: typeof ENVELOPE_VERSION;
  /** Id of the key that sealed it. */
  readonly k: string;
  /** Base64 of the random 96-bit IV. */
  readonly iv: string;
  /** Base64 of ciphertext + tag. The plaintext is the JSON encoding of the original value. */
  readonly ct: string;
}

/** Key ids: short and safe inside an env value (`id:base64,...`) and in messages. */
export const KEY_ID_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const ALGORITHM = 'aes-256-gcm';
const BASE64 = /^[A-Za-z0-9+/_-]+={0,2}$/;
const KEY_FIX = 'generate one with `openssl rand -base64 32`';

/** What {@link createKeyRing} takes: keys by id, each the base64 of 32 random bytes. */
export interface KeyRingOptions {
  keys: ReadonlyArray<{ id: string; key: string }>;
  /** Id of the key new envelopes use; default: the last key. */
  primary?: string;
}

/** Only this module can build a {@link KeyRing}, so every ring has passed the checks. */
const validated = Symbol('validated key ring');

const KeyRingOptionsSchema = z
  .object({
    keys: z.array(z.object({ id: z.string(), key: z.string() }).strict()).min(1, 'give at least one key'),
    primary: z.string().optional(),
  })
  .strict();

/**
 * A set of AES-256 keys by id, one of them primary. Key material is held in `KeyObject`s and is
 * never printed: `console.log`, `util.inspect` and `JSON.stringify` show ids only.
 *
 * @example
 * ```ts
 * const ring = keyRingFromEnv(process.env.JETSTATE_KEYS, { source: 'JETSTATE_KEYS' });
 * const sealed = ring.seal('4111 1111 1111 1111', 'order/o-17/card.number');
 * ring.open(sealed, 'order/o-17/card.number'); // '4111 1111 1111 1111'
 * ```
 */
export class KeyRing {
  /** Id of the key new envelopes use. */
  readonly primaryId: string;
  /** All key ids, in the order given. */
  readonly ids: readonly string[];
  readonly #keys: ReadonlyMap<string, KeyObject>;
  readonly #primary: KeyObject;

  /** Not for use: build a ring with {@link createKeyRing} or {@link keyRingFromEnv}, which check the keys. */
  constructor(token: symbol, keys: Map<string, KeyObject>, primaryId: string) {
    if (token !== validated) fail(ErrorCode.InvalidOptions, 'build a KeyRing with createKeyRing() or keyRingFromEnv()');
    this.#keys = keys;
    this.primaryId = primaryId;
    this.ids = Object.freeze([...keys.keys()]);
    this.#primary = keys.get(primaryId)!;
  }

  has(id: string): boolean {
    return this.#keys.has(id);
  }

  /**
   * Encrypts one value (any JSON value) under the primary key, bound to `aad`.
   * Throws `INVALID_INPUT` for a value JSON cannot encode (undefined, a function, a BigInt).
   */
  seal(value: unknown, aad: string): SealedValue {
    let json: string | undefined;
    try {
      json = JSON.stringify(value);
    } catch (e) {
      fail(ErrorCode.InvalidInput, `secret '${aad}' cannot be encoded as JSON: ${(e as Error).message}`, { cause: e });
    }
    if (json === undefined) fail(ErrorCode.InvalidInput, `secret '${aad}' is ${typeof value}, which JSON cannot encode; give a JSON value`);
    const iv = nextIv();
    const cipher = createCipheriv(ALGORITHM, this.#primary, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const head = cipher.update(json, 'utf8');
    const tail = cipher.final();
    const ct = Buffer.concat([head, tail, cipher.getAuthTag()]);
    return { $enc: ENVELOPE_VERSION, k: this.primaryId, iv: iv.toString('base64'), ct: ct.toString('base64') };
  }

  /**
   * Decrypts an envelope sealed with `aad`, with the key its id names. Throws `RECORD_UNREADABLE`
   * when that key is not in the ring, or when the envelope was altered or belongs elsewhere.
   */
  open(envelope: SealedValue, aad: string): unknown {
    const key = this.#keys.get(envelope.k);
    if (!key) {
      throw new MissingKeyError(
        `secret '${aad}' was sealed with key ${showId(envelope.k)}, which is not in the key ring (it has ${this.ids.map((i) => `'${i}'`).join(', ')}); ` +
          `add that key to the ring again (keep old keys until \`resealPaths\` has moved every envelope to the primary key)`,
        String(envelope.k),
      );
    }
    const iv = Buffer.from(envelope.iv, 'base64');
    const data = Buffer.from(envelope.ct, 'base64');
    if (iv.length !== IV_BYTES || data.length < TAG_BYTES) {
      fail(ErrorCode.RecordUnreadable, `secret '${aad}' is not a valid ${ENVELOPE_VERSION} envelope (bad iv or ciphertext length); it was altered`);
    }
    let json: string;
    try {
      const decipher = createDecipheriv(ALGORITHM, key, iv, { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(aad, 'utf8'));
      decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
      json = decipher.update(data.subarray(0, data.length - TAG_BYTES), undefined, 'utf8') + decipher.final('utf8');
    } catch (e) {
      throw new JetstateError(
        ErrorCode.RecordUnreadable,
        `secret '${aad}' (key '${envelope.k}') does not decrypt: it was altered, or copied from another instance or field, or its key id names a different key than the one that sealed it`,
        { cause: e },
      );
    }
    return JSON.parse(json);
  }

  toJSON(): { primary: string; ids: readonly string[] } {
    return { primary: this.primaryId, ids: this.ids };
  }

  [inspect.custom](): string {
    return `KeyRing { primary: '${this.primaryId}', ids: [${this.ids.map((i) => `'${i}'`).join(', ')}] }`;
  }
}

/**
 * Builds a key ring. Checks every key (base64 of exactly 32 bytes), every id
 * ({@link KEY_ID_PATTERN}, unique) and the primary id; errors (`INVALID_OPTIONS`) name the key
 * by id or position and never contain key material.
 *
 * @example
 * ```ts
 * const ring = createKeyRing({ keys: [{ id: '2024', key: oldB64 }, { id: '2025', key: newB64 }] }); // primary '2025'
 * ```
 */
export function createKeyRing(options: KeyRingOptions): KeyRing {
  const parsed = KeyRingOptionsSchema.safeParse(options);
  if (!parsed.success) fail(ErrorCode.InvalidOptions, `key ring options are not valid:\n${z.prettifyError(parsed.error)}`);
  const keys = new Map<string, KeyObject>();
  parsed.data.keys.forEach(({ id, key }, i) => {
    const which = `key ${i + 1} of ${parsed.data.keys.length}`;
    // An id that fails the pattern is not printed: a swapped `key:id` pair would print the key.
    if (!KEY_ID_PATTERN.test(id)) fail(ErrorCode.InvalidOptions, `key ring: ${which} has an invalid id; use 1-64 characters from A-Z a-z 0-9 _ . -`);
    if (keys.has(id)) fail(ErrorCode.InvalidOptions, `key ring: key id '${id}' is given twice; give each key its own id`);
    keys.set(id, decodeKey(key.trim(), `key '${id}'`));
  });
  const primary = parsed.data.primary ?? [...keys.keys()].at(-1)!;
  if (!keys.has(primary)) {
    fail(
      ErrorCode.InvalidOptions,
      `key ring: primary key ${showId(primary)} is not one of the keys (${[...keys.keys()].map((i) => `'${i}'`).join(', ')}); add it or name another`,
    );
  }
  return new KeyRing(validated, keys, primary);
}

/**
 * Builds a key ring from an env-style value `id1:base64,id2:base64` (whitespace around entries
 * is ignored); the primary is the last entry unless `primary` names another. `source` names the
 * variable in error messages.
 *
 * @example
 * ```ts
 * // JETSTATE_KEYS="2024:q83v...=,2025:Zm9v...="
 * const ring = keyRingFromEnv(process.env.JETSTATE_KEYS, { source: 'JETSTATE_KEYS' });
 * ```
 */
export function keyRingFromEnv(value: string | undefined, options: { primary?: string; source?: string } = {}): KeyRing {
  const source = options.source ?? 'the key ring value';
  const entries = (value ?? '')
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  if (entries.length === 0) fail(ErrorCode.InvalidOptions, `${source} is empty; set it to 'id:base64key' (several separated by ','), ${KEY_FIX}`);
  const keys = entries.map((entry, i) => {
    const colon = entry.indexOf(':');
    // The entry itself is never echoed: without its ':' it may be a bare key.
    if (colon <= 0) fail(ErrorCode.InvalidOptions, `${source}: entry ${i + 1} of ${entries.length} is not 'id:base64key'`);
    return { id: entry.slice(0, colon).trim(), key: entry.slice(colon + 1).trim() };
  });
  try {
    return createKeyRing(options.primary === undefined ? { keys } : { keys, primary: options.primary });
  } catch (e) {
    if (e instanceof JetstateError) throw new JetstateError(e.code, e.message.replace(/^key ring/, source), { cause: e });
    throw e;
  }
}

function decodeKey(b64: string, which: string): KeyObject {
  if (!BASE64.test(b64)) fail(ErrorCode.InvalidOptions, `key ring: ${which} is not base64; ${KEY_FIX}`);
  const bytes = Buffer.from(b64, 'base64');
  if (bytes.length !== KEY_BYTES)
    fail(ErrorCode.InvalidOptions, `key ring: ${which} decodes to ${bytes.length} bytes; AES-256-GCM needs ${KEY_BYTES}, ${KEY_FIX}`);
  const key = createSecretKey(bytes);
  bytes.fill(0);
  return key;
}

/** An id read from stored data or given by a user, shown only if it looks like an id. */
function showId(id: unknown): string {
  return typeof id === 'string' && KEY_ID_PATTERN.test(id) ? `'${id}'` : '(an invalid id)';
}

// IVs come from a pool filled 512 at a time: one getrandom call instead of one per seal.
const ivPool = Buffer.alloc(IV_BYTES * 512);
let ivOffset = ivPool.length;
function nextIv(): Buffer {
  if (ivOffset === ivPool.length) {
    randomFillSync(ivPool);
    ivOffset = 0;
  }
  // A copy: the pool is overwritten on the next refill.
  const iv = Buffer.from(ivPool.subarray(ivOffset, ivOffset + IV_BYTES));
  ivOffset += IV_BYTES;
  return iv;
}

/** True for an envelope written by {@link KeyRing.seal}. */
export function isSealed(value: unknown): value is SealedValue {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return v['$enc'] === ENVELOPE_VERSION && typeof v['k'] === 'string' && typeof v['iv'] === 'string' && typeof v['ct'] === 'string';
}

/** Whether `value` is or holds an envelope (at any depth). */
export function holdsSealed(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (isSealed(value)) return true;
  if (Array.isArray(value)) return value.some(holdsSealed);
  for (const k in value) if (holdsSealed((value as Record<string, unknown>)[k])) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// Paths

/** Declared secret paths, parsed once. */
interface CompiledPath {
  readonly source: string;
  readonly segments: readonly string[];
}

const compiledPaths = new WeakMap<readonly string[], readonly CompiledPath[]>();

/**
 * Parses and checks `secrets` paths: dotted keys, `*` for any key or array element at one level,
 * a number for an array index. Throws `INVALID_DEFINITION` for an empty segment or for two paths
 * of which one lies inside the other (`card` and `card.number`), since a value sealed whole
 * cannot have a field sealed inside it. Results are cached per array, so passing a definition's
 * `secrets` array on every call costs one WeakMap lookup.
 *
 * @example
 * ```ts
 * checkSecretPaths(['card.number', 'cards.*.number']); // fine
 * checkSecretPaths(['card', 'card.cvc']);              // throws: 'card.cvc' lies inside 'card'
 * ```
 */
export function checkSecretPaths(paths: readonly string[]): void {
  compile(paths);
}

function compile(paths: readonly string[]): readonly CompiledPath[] {
  const cached = compiledPaths.get(paths);
  if (cached) return cached;
  const out: CompiledPath[] = [];
  for (const source of new Set(paths)) {
    const segments = typeof source === 'string' ? source.split('.') : [];
    if (segments.length === 0 || segments.some((s) => s === '')) {
      fail(
        ErrorCode.InvalidDefinition,
        `secrets path ${JSON.stringify(source)} is not valid: use dotted keys and '*' for any key or array element, e.g. 'cards.*.number'`,
      );
    }
    out.push({ source, segments });
  }
  for (const a of out) {
    for (const b of out) {
      if (a.segments.length < b.segments.length && a.segments.every((s, i) => s === '*' || b.segments[i] === '*' || s === b.segments[i])) {
        fail(ErrorCode.InvalidDefinition, `secrets paths '${b.source}' lies inside '${a.source}'; '${a.source}' already seals it whole, keep only one of them`);
      }
    }
  }
  compiledPaths.set(paths, out);
  return out;
}

/**
 * Calls `fn` on every value the paths match (`path` is the concrete dotted path, wildcards
 * resolved) and returns a copy with the values `fn` returned. Only the containers along a changed
 * path are copied; everything else is shared with `value`, and when `fn` changes nothing `value`
 * itself is returned. Missing keys and non-container intermediates are skipped; the walk never
 * enters an envelope. `value` is never mutated.
 *
 * @example
 * ```ts
 * mapSecretPaths({ cards: [{ number: '4111' }] }, ['cards.*.number'], (v, path) => `${path}=${v}`);
 * // { cards: [{ number: 'cards.0.number=4111' }] }
 * ```
 */
export function mapSecretPaths(value: unknown, paths: readonly string[], fn: (value: unknown, path: string) => unknown): unknown {
  let out = value;
  for (const p of compile(paths)) out = mapAt(out, p.segments, 0, '', fn);
  return out;
}

function mapAt(value: unknown, segments: readonly string[], i: number, path: string, fn: (value: unknown, path: string) => unknown): unknown {
  if (i === segments.length) return fn(value, path);
  if (typeof value !== 'object' || value === null || isSealed(value)) return value;
  const seg = segments[i]!;
  if (Array.isArray(value)) {
    if (seg === '*') {
      let copy: unknown[] | undefined;
      for (let j = 0; j < value.length; j++) {
        const v: unknown = value[j];
        const r = mapAt(v, segments, i + 1, join(path, String(j)), fn);
        if (r !== v) (copy ??= value.slice())[j] = r;
      }
      return copy ?? value;
    }
    const j = /^(0|[1-9]\d*)$/.test(seg) ? Number(seg) : -1;
    if (j < 0 || j >= value.length) return value;
    const v: unknown = value[j];
    const r = mapAt(v, segments, i + 1, join(path, seg), fn);
    if (r === v) return value;
    const copy = value.slice();
    copy[j] = r;
    return copy;
  }
  const obj = value as Record<string, unknown>;
  if (seg === '*') {
    let copy: Record<string, unknown> | undefined;
    for (const k of Object.keys(obj)) {
      const v = obj[k];
      const r = mapAt(v, segments, i + 1, join(path, k), fn);
      // The spread copies an own `__proto__` key as data, so this assignment cannot set a prototype.
      if (r !== v) (copy ??= { ...obj })[k] = r;
    }
    return copy ?? value;
  }
  if (!Object.hasOwn(obj, seg)) return value;
  const v = obj[seg];
  const r = mapAt(v, segments, i + 1, join(path, seg), fn);
  return r === v ? value : { ...obj, [seg]: r };
}

const join = (path: string, seg: string): string => (path === '' ? seg : `${path}.${seg}`);

/** The additional data that binds an envelope to its place. */
export function secretAad(aadPrefix: string, path: string): string {
  return `${aadPrefix}/${path}`;
}

// ---------------------------------------------------------------------------------------------
// Seal, open, reseal

/**
 * Returns a copy of `value` with every value at `paths` replaced by an envelope sealed under the
 * ring's primary key and bound to `<aadPrefix>/<path>`. Values already sealed, missing paths and
 * `undefined` are left alone. `value` is not mutated; untouched parts are shared.
 *
 * `aadPrefix` says whose value it is, e.g. `order/o-17/context`; the same prefix must be given to
 * {@link openPaths}. Use a different prefix for input, context and each event so an envelope
 * cannot be moved between them either.
 *
 * @example
 * ```ts
 * const stored = sealPaths(context, def.secrets, ring, `${def.name}/${id}/context`);
 * ```
 */
export function sealPaths(value: unknown, paths: readonly string[], ring: KeyRing, aadPrefix: string): unknown {
  return mapSecretPaths(value, paths, (v, path) => (v === undefined || isSealed(v) ? v : ring.seal(v, secretAad(aadPrefix, path))));
}

/**
 * The inverse of {@link sealPaths}: returns a copy with every envelope at `paths` decrypted.
 * Plain values at those paths (written before the path was declared secret) are returned as they
 * are. Throws `RECORD_UNREADABLE` when an envelope's key is not in the ring or it does not
 * decrypt (altered, or sealed for another place).
 *
 * @example
 * ```ts
 * const context = openPaths(record.context, def.secrets, ring, `${def.name}/${id}/context`);
 * ```
 */
export function openPaths(value: unknown, paths: readonly string[], ring: KeyRing, aadPrefix: string): unknown {
  return mapSecretPaths(value, paths, (v, path) => (isSealed(v) ? ring.open(v, secretAad(aadPrefix, path)) : v));
}

/** What {@link resealPaths} did. */
export interface ResealResult {
  /** The value with moved envelopes; `value` itself when nothing moved. */
  readonly value: unknown;
  /** How many envelopes moved to the primary key. */
  readonly resealed: number;
}

/**
 * Re-encrypts under the primary key every envelope at `paths` that another key sealed, for the
 * re-encrypt command: once it has run over every stored record, the old keys can leave the ring.
 * Plain values and envelopes of the primary key are left alone. Throws like {@link openPaths}.
 *
 * @example
 * ```ts
 * const { value, resealed } = resealPaths(stored, def.secrets, ring, aad);
 * if (resealed > 0) await kv.update(key, encode(value), revision);
 * ```
 */
export function resealPaths(value: unknown, paths: readonly string[], ring: KeyRing, aadPrefix: string): ResealResult {
  let resealed = 0;
  const out = mapSecretPaths(value, paths, (v, path) => {
    if (!isSealed(v) || v.k === ring.primaryId) return v;
    const aad = secretAad(aadPrefix, path);
    resealed++;
    return ring.seal(ring.open(v, aad), aad);
  });
  return { value: out, resealed };
}

/**
 * Counts the envelopes at `paths` sealed with a key other than the ring's primary: what
 * {@link resealPaths} would move. Decrypts nothing, so it needs no key and cannot fail.
 */
export function countStale(value: unknown, paths: readonly string[], ring: KeyRing): number {
  let stale = 0;
  mapSecretPaths(value, paths, (v) => {
    if (isSealed(v) && v.k !== ring.primaryId) stale++;
    return v;
  });
  return stale;
}
