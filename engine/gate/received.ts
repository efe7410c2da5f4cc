/**
 * Sends between instances are applied once, also when a sender's outbox runs again later than the
 * events streams' duplicate window: its engine gone between the send's acknowledgement and the
 * record written without it, then no engine for longer than the window. A send carries its outbox
 * key (`Jetstate-Send`), whose keyed message id the engine signature covers; the target keeps, per
 * sender instance, the newest send it applied (`received` in its record). A sender delivers its
 * sends in order, each stored before the next, and only while it owns its partition, so a send at
 * or before that position was applied already.
 */
import type { EngineSigner } from '../security/signer.js';
import type { RawEvent } from './event-gate.js';

/** Senders a record remembers; the one heard from longest ago goes first. */
export const MAX_SENDERS = 256;

/** Where a send stands among its sender's: `[born, revision, index]` (born 0 for an instance without one; compared for equality only). */
export type SendPosition = [number, number, number];

/** The logical id a send's message id is keyed from. */
export function sendLogicalId(key: string): string {
  return `send.${key}`;
}

const SEND_KEY = /^([A-Za-z0-9_-]{1,128})\.([A-Za-z0-9_-]{1,128})(?:@(\d+))?\.(\d+)\.(\d+)$/;

/**
 * The sender and position of a send whose engine signature the gate accepted, or undefined when
 * the event is no such send (its header absent, malformed, or not the one its message id was keyed from).
 */
export function sendOf(signer: EngineSigner, e: RawEvent): { sender: string; at: SendPosition } | undefined {
  if (e.send === undefined || e.signature === undefined || e.msgId === undefined) return undefined;
  const m = SEND_KEY.exec(e.send);
  if (!m || signer.messageId(sendLogicalId(e.send)) !== e.msgId) return undefined;
  return { sender: `${m[1]}.${m[2]}`, at: [Number(m[3] ?? 0), Number(m[4]), Number(m[5])] };
}

/** A record's `received` while a batch is applied: copied on the first change. */
export class Received {
  private next: Record<string, SendPosition> | undefined;

  constructor(private readonly stored: Readonly<Record<string, SendPosition>> | undefined) {}

  /** True when that send was applied already; otherwise notes it as its sender's newest. */
  seen(sender: string, at: SendPosition): boolean {
    const last = (this.next ?? this.stored)?.[sender];
    if (last && !after(at, last)) return true;
    const next = (this.next ??= { ...this.stored });
    delete next[sender]; // re-inserted last: the order is who was heard from last
    next[sender] = at;
    const senders = Object.keys(next);
    for (let i = 0; i < senders.length - MAX_SENDERS; i++) delete next[senders[i]!];
    return false;
  }

  /** The record's `received` after the batch, or undefined when no send changed it. */
  get changed(): Record<string, SendPosition> | undefined {
    return this.next;
  }
}

/**
 * Whether `a` comes after `b`. Another `born` is another instance under the id (deleted, then
 * started again): its sends are new, whichever `born` is larger (a partition stream made again
 * numbers its starts from 1 again).
 */
function after(a: SendPosition, b: SendPosition): boolean {
  if (a[0] !== b[0]) return true;
  return a[1] !== b[1] ? a[1] > b[1] : a[2] > b[2];
}
