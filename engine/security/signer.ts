/**
 * Engine signatures. Events that engines publish themselves (a timer firing, a task's outcome, a
 * child's result, a stop, a send from one instance to another) carry an HMAC-SHA256 of subject and
 * body under a key that lives in the namespace's control bucket. The engine accepts its internal
 * event types only with a valid signature, so a client that can publish to the event subjects but
 * cannot read the control bucket cannot forge them (see docs/SECURITY.md for the NATS permissions).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/nats-core';
import type { KV } from '@nats-io/kv';
import { traceHeaders, type TraceCarrier } from '../telemetry/telemetry.js';

export const SIGNATURE_HEADER = 'Jetstate-Sig';
/** The signing key's name in the control bucket. */
export const ENGINE_KEY_NAME = 'auth.engine-key';

export class EngineSigner {
  private key: Buffer | undefined;
  private loading: Promise<void> | undefined;

  /** `load` reads (or creates) the namespace's key; it runs on the first {@link ready}. */
  constructor(private readonly load: () => Promise<Buffer>) {}

  /**
   * Loads the key once. Engines call it when they open, since they verify every internal event.
   * Clients call it only before they sign (a start whose first step runs custom actions, or of a
   * workflow with secrets), so a client that only sends or reads never needs read access to the
   * control bucket's key. A failed load is tried again on the next call.
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

  /** Throws unless {@link ready} has resolved. */
  sign(subject: string, data: Uint8Array): string {
    if (!this.key) throw new Error('the engine signing key is not loaded: await signer.ready() before signing or verifying');
    return createHmac('sha256', this.key).update(subject).update('\n').update(data).digest('base64url');
  }

  verify(subject: string, data: Uint8Array, signature: string | undefined): boolean {
    if (!signature) return false;
    const expected = Buffer.from(this.sign(subject, data));
    const given = Buffer.from(signature);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  /** Publish options for an engine-published event: its signature and the trace context. */
  options<T extends object>(subject: string, data: Uint8Array, base: T, carrier?: TraceCarrier): T & { headers: MsgHdrs } {
    const headers = traceHeaders(carrier) ?? natsHeaders();
    headers.set(SIGNATURE_HEADER, this.sign(subject, data));
    return { ...base, headers };
  }
}

/** The namespace's signing key, created by the first process that needs it. */
export async function ensureEngineKey(control: KV): Promise<Buffer> {
  for (let i = 0; i < 5; i++) {
    const entry = await control.get(ENGINE_KEY_NAME);
    if (entry && entry.operation === 'PUT' && entry.value.length >= 32) return Buffer.from(entry.value);
    try {
      await control.create(ENGINE_KEY_NAME, randomBytes(32));
    } catch (e) {
      // Another process created it first: read it. Anything else (a NATS user without the right
      // to write the control bucket) will not change by trying again.
      if (!/wrong last sequence|key exists/i.test((e as Error).message)) throw e;
    }
  }
  throw new Error(`cannot read or create the engine signing key '${ENGINE_KEY_NAME}' in the control bucket`);
}
