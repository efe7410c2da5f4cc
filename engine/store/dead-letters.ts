/**
 * The dead-letter stream: a copy of every event the engine did not apply, as it came, with the
 * reason, for operators to see and replay (`jetstate deadletters`). Nothing the engine reads is
 * dropped without one.
 */
import { createHash } from 'node:crypto';
import { headers as natsHeaders } from '@nats-io/nats-core';
import type { DeadLetterInput } from '../define/extension.js';
import type { Runtime } from './runtime.js';

/** Bytes kept free under the server's max_payload for a dead-letter copy's headers. */
const HEADROOM = 4_096;

export async function deadLetter(rt: Runtime, d: DeadLetterInput): Promise<void> {
  const h = natsHeaders();
  h.set('Jetstate-Reason', d.reason.slice(0, 1_000).replace(/[\r\n]+/g, ' '));
  h.set('Jetstate-Subject', d.subject);
  h.set('Jetstate-Stream', d.stream);
  h.set('Jetstate-Seq', String(d.seq));
  // An event as large as the server takes has no room left for these headers: keep its head and
  // say how long it was, rather than failing (and retrying) for ever.
  const room = (rt.nc.info?.max_payload ?? Infinity) - HEADROOM;
  let data = d.data;
  if (data.length > room) {
    h.set('Jetstate-Truncated', String(data.length));
    data = data.subarray(0, Math.max(0, room));
  }
  const safe = (s: string): string => (/^[A-Za-z0-9_-]{1,128}$/.test(s) ? s : '_');
  await rt.js.publish(rt.names.deadLetterSubject(safe(d.workflow), safe(d.id)), data, { msgID: deadLetterId(d), headers: h });
}

/**
 * The dead letter's message id: its stream and sequence, and a digest of the event's subject and
 * bytes. The same event dead-lettered again (a retry) is stored once; another event at that
 * sequence (its stream deleted and made again, whose sequences start at 1) is stored too.
 */
function deadLetterId(d: DeadLetterInput): string {
  const digest = createHash('sha256').update(d.subject).update('\0').update(d.data).digest('base64url').slice(0, 16);
  return `dlq.${d.stream}.${d.seq}.${digest}`;
}
