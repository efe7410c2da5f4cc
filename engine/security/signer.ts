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
import { traceHeaders, type TraceCarrier } from '../telemetry.js';

export const SIGNATURE_HEADER = 'Jetstate-Sig';
const KEY_NAME = 'auth.engine-key';

export class EngineSigner {
  constructor(private readonly key: Buffer) {}

  sign(subject: string, data: Uint8Array): string {
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
    const entry = await control.get(KEY_NAME);
    if (entry && entry.operation === 'PUT' && entry.value.length >= 32) return Buffer.from(entry.value);
    try {
      await control.create(KEY_NAME, randomBytes(32));
    } catch {
      // another process created it first: read it
    }
  }
  throw new Error(`cannot read or create the engine signing key '${KEY_NAME}' in the control bucket`);
}
