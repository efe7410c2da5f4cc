/**
 * What the page can do to an instance, each through the same client API as any service: `send`
 * (with the token the page gives, so the engine judges the sender like any other), `verify`, and
 * `cancel` / `terminate` once the client has them. Nothing here decides who may act: the client
 * and the engine refuse, and the page shows their words.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import type { Client, SendOptions, WorkflowDefinition } from '../../engine/index.js';
import { HttpError } from './http.js';
import type { ActionRequest, SendOutcome, SendRequest } from './protocol.js';

/** Methods the client may grow; the page shows their buttons only when they exist. */
export const OPTIONAL_ACTIONS = ['cancel', 'terminate'] as const;
export type OptionalAction = (typeof OPTIONAL_ACTIONS)[number];

type OptionalMethod = (workflow: WorkflowDefinition, id: string, options: { reason?: string; token?: string }) => Promise<unknown>;

/** The actions this client supports, feature-detected. */
export function availableActions(client: Client): string[] {
  return ['send', 'verify', ...OPTIONAL_ACTIONS.filter((a) => typeof (client as unknown as Record<string, unknown>)[a] === 'function')];
}

interface HistoryWire {
  entries?: Array<{ kind?: string; seq?: number; reason?: string; to?: unknown }>;
}

const decoder = new TextDecoder();

/**
 * Sends an event and waits (up to `waitMs`) for the history entry of its stream sequence, so the
 * page can say whether it applied or why the engine refused it. A rejection leaves the record as
 * it was, so only the history tells; the history subject is watched from before the send.
 */
export async function sendAndObserve(
  nc: NatsConnection,
  historySubject: string,
  actor: Client,
  reader: Client,
  def: WorkflowDefinition,
  id: string,
  request: SendRequest,
  waitMs = 5_000,
): Promise<SendOutcome> {
  if (!request.event || typeof request.event !== 'object' || typeof request.event.type !== 'string') {
    throw new HttpError(400, 'BAD_REQUEST', "the body must be { event: { type: 'PAY', ... }, token?: '...' }");
  }
  const sub = nc.subscribe(historySubject);
  try {
    const options: SendOptions = {};
    if (request.token) options.token = request.token;
    if (request.idempotencyKey) options.idempotencyKey = request.idempotencyKey;
    const sent = await actor.send(def, id, request.event as never, options);
    const outcome = (e: { kind?: string; reason?: string; to?: unknown }): SendOutcome => {
      const o: SendOutcome = { seq: sent.seq, duplicate: sent.duplicate, outcome: e.kind === 'rejected' ? 'rejected' : 'applied' };
      if (e.reason !== undefined) o.reason = e.reason;
      if (e.to !== undefined) o.to = e.to;
      return o;
    };
    if (sent.duplicate) {
      // Accepted earlier: its entry, if applied, is already in the history.
      const earlier = (await reader.history(def, id)).find((e) => e.seq === sent.seq);
      if (earlier) return outcome(earlier);
    }
    const timer = setTimeout(() => sub.unsubscribe(), waitMs);
    try {
      for await (const m of sub) {
        let wire: HistoryWire;
        try {
          wire = JSON.parse(decoder.decode(m.data)) as HistoryWire;
        } catch {
          continue;
        }
        const entry = wire.entries?.find((e) => e.seq === sent.seq);
        if (entry) return outcome(entry);
      }
    } finally {
      clearTimeout(timer);
    }
    return { seq: sent.seq, duplicate: sent.duplicate, outcome: 'accepted' };
  } finally {
    sub.unsubscribe();
  }
}

/** Runs `cancel` or `terminate` when the client has it. */
export async function runOptionalAction(actor: Client, action: OptionalAction, def: WorkflowDefinition, id: string, request: ActionRequest): Promise<unknown> {
  const method = (actor as unknown as Record<string, unknown>)[action];
  if (typeof method !== 'function') throw new HttpError(501, 'NOT_AVAILABLE', `this client has no ${action}(); update jetstate`);
  const options: { reason?: string; token?: string } = {};
  if (typeof request.reason === 'string' && request.reason) options.reason = request.reason;
  if (typeof request.token === 'string' && request.token) options.token = request.token;
  return (await (method as OptionalMethod).call(actor, def, id, options)) ?? { ok: true };
}
