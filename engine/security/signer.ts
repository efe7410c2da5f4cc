/**
 * Engine signatures and keyed message ids. Events that engines publish themselves (a timer
 * firing, a task's outcome, a child's start or result, a stop, a send from one instance to
 * another) carry an HMAC-SHA256 over subject, message id, signing time and body, under a key
 * that lives in the namespace's control bucket. The engine accepts its internal event types only
 * with a valid signature, so a client that can publish to the event subjects but cannot read the
 * key cannot forge them.
 *
 * The signature covers the message id and the time, so a captured engine event cannot be
 * replayed: within the stream's duplicate window its message id is already taken, and after it
 * the signing time is too old (see `maxAgeMs` in the event gate). Message ids of engine events
 * are keyed too ({@link EngineSigner.messageId}): nobody without the key can predict one and take
 * it first with a junk message, which would make the engine's real publish a "duplicate".
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/nats-core';
import type { KV } from '@nats-io/kv';
import { SIGNATURE_HEADER, SIGNED_AT_HEADER } from '../protocol/headers.js';

/** The signing key's name in the control bucket. */
export const ENGINE_KEY_NAME = 'auth.engine-key';

export class EngineSigner {
  private key: Buffer | undefined;
  private loading: Promise<void> | undefined;

  /** `load` reads (or creates) the namespace's key; it runs on the first {@link ready}. */
  constructor(private readonly load: () => Promise<Buffer>) {}

  /**
   * Loads the key once. Engines call it when they open, since they verify every internal event.
   * A client never needs it. A failed load is tried again on the next call.
   */
  ready(): Promise<void> {
    this.loading ??= this.load().then(
      (key) => {
        this.key = key;
      },
      (e: unknown) => {
        this.loading = undefined;
        throw e;
      },
    );
    return this.loading;
  }

  get loaded(): boolean {
    return this.key !== undefined;
  }

  private mac(label: string): ReturnType<typeof createHmac> {
    if (!this.key) throw new Error('the engine signing key is not loaded: await signer.ready() before signing or verifying');
    return createHmac('sha256', this.key).update(label).update('\n');
  }

  /** A keyed digest of `data` under `label` (e.g. an input digest that must not be guessable). */
  keyed(label: string, data: string | Uint8Array): string {
    return this.mac(label).update(data).digest('base64url');
  }

  /** The message id of an engine event with the logical id `logical`: stable, and unguessable without the key. */
  messageId(logical: string): string {
    return `e.${this.keyed('msgid', logical).slice(0, 32)}`;
  }

  sign(subject: string, msgId: string, signedAtMs: number, data: Uint8Array): string {
    return this.mac('event').update(subject).update('\n').update(msgId).update('\n').update(String(signedAtMs)).update('\n').update(data).digest('base64url');
  }

  /** True when `signature` is this namespace's over exactly these parts. */
  verify(subject: string, msgId: string | undefined, signedAtMs: number | undefined, data: Uint8Array, signature: string | undefined): boolean {
    if (!signature || !msgId || signedAtMs === undefined || !Number.isFinite(signedAtMs)) return false;
    const expected = Buffer.from(this.sign(subject, msgId, signedAtMs, data));
    const given = Buffer.from(signature);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  /** Headers of an engine event: signature, signing time, and whatever `base` already holds (trace context). */
  headers(subject: string, msgId: string, data: Uint8Array, base: MsgHdrs = natsHeaders(), nowMs = Date.now()): MsgHdrs {
    base.set(SIGNED_AT_HEADER, String(nowMs));
    base.set(SIGNATURE_HEADER, this.sign(subject, msgId, nowMs, data));
    return base;
  }
}

/** The namespace's signing key, created by the first process that needs it. */
export async function ensureEngineKey(control: KV, isConflict: (e: unknown) => boolean): Promise<Buffer> {
  for (let i = 0; i < 5; i++) {
    const entry = await control.get(ENGINE_KEY_NAME);
    if (entry && entry.operation === 'PUT' && entry.value.length >= 32) return Buffer.from(entry.value);
    try {
      await control.create(ENGINE_KEY_NAME, randomBytes(32));
    } catch (e) {
      // Another process created it first: read it. Anything else (a NATS user without the right
      // to write the control bucket) will not change by trying again.
      if (!isConflict(e)) throw e;
    }
  }
  throw new Error(`cannot read or create the engine signing key '${ENGINE_KEY_NAME}' in the control bucket`);
}
