/**
 * The shop service: an HTTP API for orders on 127.0.0.1, and an engine that runs the order
 * workflow (only that one) in the shared namespace.
 *
 *   POST /orders             {"orderId","customer","amount"}   start an order (idempotent by orderId)
 *   GET  /orders/:id                                           the order, or 404
 *   POST /orders/:id/ship    {"carrier","trackingId"}          ship it (once billing says it is paid)
 *   POST /orders/:id/cancel  {"reason"}
 *
 * NATS_URL, JETSTATE_NAMESPACE (default "demo") and PORT (default 0: a free one) configure it.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createEngine, ErrorCode, JetstateError } from 'jetstate';
import { billingDesk, order, OrderInput } from './workflows.js';

const engine = await createEngine({
  servers: process.env['NATS_URL'] || 'nats://127.0.0.1:4222',
  namespace: process.env['JETSTATE_NAMESPACE'] || 'demo',
  workflows: [order],
  extensions: [billingDesk()],
  name: 'shop',
});

async function body(req: IncomingMessage): Promise<unknown> {
  let text = '';
  for await (const chunk of req) text += String(chunk);
  return text ? JSON.parse(text) : {};
}

function reply(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
}

/** JetstateError codes as HTTP statuses: the caller's mistakes are 4xx, the rest 503 (retry). */
function statusOf(e: unknown): number {
  if (!(e instanceof JetstateError)) return e instanceof SyntaxError ? 400 : 500;
  if (e.code === ErrorCode.InstanceNotFound) return 404;
  if (e.code === ErrorCode.InvalidInput || e.code === ErrorCode.InvalidEvent || e.code === ErrorCode.InvalidId) return 400;
  return 503;
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname.split('/').filter(Boolean);
  if (req.method === 'POST' && path.length === 1 && path[0] === 'orders') {
    const parsed = OrderInput.safeParse(await body(req));
    if (!parsed.success) return reply(res, 400, { error: parsed.error.message });
    const input = parsed.data;
    const started = await engine.start(order, { id: input.orderId, input });
    return reply(res, 202, { id: started.id, status: started.status });
  }
  const id = path[0] === 'orders' ? path[1] : undefined;
  if (!id) return reply(res, 404, { error: 'no such route' });
  if (req.method === 'GET' && path.length === 2) {
    const found = await engine.get(order, id);
    return found ? reply(res, 200, found) : reply(res, 404, { error: `order ${id} does not exist` });
  }
  if (req.method === 'POST' && path[2] === 'ship') {
    const { carrier, trackingId } = (await body(req)) as { carrier: string; trackingId: string };
    return reply(res, 202, await engine.send(order, id, { type: 'SHIP', carrier, trackingId }));
  }
  if (req.method === 'POST' && path[2] === 'cancel') {
    const { reason } = (await body(req)) as { reason?: string };
    return reply(res, 202, await engine.send(order, id, { type: 'CANCEL', reason: reason ?? 'customer request' }));
  }
  reply(res, 404, { error: 'no such route' });
}

const server = createServer((req, res) => {
  route(req, res).catch((e: unknown) => reply(res, statusOf(e), { error: (e as Error).message }));
});
server.listen(Number(process.env['PORT'] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`shop listening on http://127.0.0.1:${(server.address() as AddressInfo).port} (engine ${engine.engineId})\n`);
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    server.close();
    // Drains the events in flight; pending tasks stay durable for the next shop engine.
    void engine.close().then(() => process.exit(0));
  });
}
