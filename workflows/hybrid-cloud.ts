/**
 * The cloud side of the hybrid example (workflows/hybrid.ts), wired for offline runs and tests:
 *
 *   Step Functions task 'Settle' (.waitForTaskToken, FunctionName 'hybrid-settle')
 *     -> forwarder: stores { taskToken, input } in the JetStream stream HYBRID_TOKENS
 *     -> callback server: consumes the token, asks the settlement service over NATS
 *        (request/reply on 'hybrid.settle'), answers SendTaskSuccess / SendTaskFailure
 *
 * On AWS the forwarder is a Lambda function (`export const handler = taskTokenForwarder({ servers,
 * subject, stream })`) and the callback server runs beside your services; offline, sfn-local
 * calls a forwarder in place of the Lambda function (`--handlers dist/workflows/hybrid-handlers.js`,
 * or `hybridTaskHandlers(nc)` in process).
 */
import { type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { ensureTaskTokenStream, serveCallbackTasks, taskTokenForwarder, type CallbackTaskServer } from '../adapters/step-functions/callback.js';
import type { StepFunctionsClients } from '../adapters/step-functions/clients.js';
import { natsServiceHandler, respondWithTaskError } from '../adapters/step-functions/nats-service.js';

export const HYBRID_TOKEN_STREAM = 'HYBRID_TOKENS';
export const HYBRID_TOKEN_SUBJECT = 'hybrid.tokens.settle';
/** The settlement service's subject (request/reply). */
export const HYBRID_SETTLE_SUBJECT = 'hybrid.settle';
/** Amounts above this are declined (`Payment.Declined`), to show the failure path. */
export const SETTLEMENT_LIMIT = 10_000;

/** sfn-local's stand-ins for the Lambda function of hybrid.asl.json, forwarding over `connection`. */
export function hybridTaskHandlers(connection: NatsConnection): Record<string, (payload: unknown) => Promise<unknown>> {
  return { 'hybrid-settle': taskTokenForwarder({ connection, subject: HYBRID_TOKEN_SUBJECT, stream: HYBRID_TOKEN_STREAM }) };
}

export interface SettlementService {
  /** Requests answered, by outcome. */
  readonly stats: { settled: number; declined: number };
  stop(): void;
}

/**
 * The settlement service: a plain NATS service (no AWS in it) that settles `{ orderId, amount }`
 * and replies `{ settlementId, amount }`, or declines amounts over `limit` with the
 * `Jetstate-Error: Payment.Declined` header, which fails the Step Functions task with that error.
 */
export function startSettlementService(nc: NatsConnection, options: { limit?: number } = {}): SettlementService {
  const limit = options.limit ?? SETTLEMENT_LIMIT;
  const stats = { settled: 0, declined: 0 };
  const sub: Subscription = nc.subscribe(HYBRID_SETTLE_SUBJECT, {
    queue: 'hybrid-settle',
    callback: (err, msg: Msg) => {
      if (err) return;
      let request: { orderId?: unknown; amount?: unknown };
      try {
        request = JSON.parse(new TextDecoder().decode(msg.data)) as { orderId?: unknown; amount?: unknown };
      } catch {
        respondWithTaskError(msg, 'Payment.BadRequest', 'the request is not JSON');
        return;
      }
      const amount = Number(request.amount);
      if (typeof request.orderId !== 'string' || !(amount > 0)) {
        respondWithTaskError(msg, 'Payment.BadRequest', 'expected { orderId, amount }');
        return;
      }
      if (amount > limit) {
        stats.declined++;
        respondWithTaskError(msg, 'Payment.Declined', `amount ${amount} is over the limit of ${limit}`);
        return;
      }
      stats.settled++;
      // Keyed by the order, so a token answered twice (after a crash) settles once.
      msg.respond(JSON.stringify({ settlementId: `stl-${request.orderId}`, amount }));
    },
  });
  return {
    get stats() {
      return { ...stats };
    },
    stop: () => sub.unsubscribe(),
  };
}

/**
 * Creates the token stream if needed and serves the tokens: each goes to the settlement service
 * and its reply back to Step Functions through `clients` (a pool on the endpoint, e.g. sfn-local's).
 */
export async function serveHybridCallbacks(options: { connection: NatsConnection; clients: StepFunctionsClients }): Promise<CallbackTaskServer> {
  const { connection, clients } = options;
  await ensureTaskTokenStream({ connection, stream: HYBRID_TOKEN_STREAM, subjects: [HYBRID_TOKEN_SUBJECT] });
  return serveCallbackTasks({
    connection,
    stream: HYBRID_TOKEN_STREAM,
    subject: HYBRID_TOKEN_SUBJECT,
    durable: 'hybrid-settle',
    clients,
    handler: natsServiceHandler({ connection, subject: HYBRID_SETTLE_SUBJECT, timeoutMs: 10_000 }),
  });
}
