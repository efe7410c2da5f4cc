/**
 * The billing service: opens invoices when the shop asks (a NATS request on
 * billing.invoices.open), an HTTP API for invoices on 127.0.0.1, and an engine that runs the
 * invoice workflow (only that one) in the shared namespace.
 *
 *   GET  /invoices/:id                  the invoice, or 404
 *   POST /invoices/:id/pay  {"amount"}  a payment
 *
 * NATS_URL, JETSTATE_NAMESPACE (default "demo") and PORT (default 0: a free one) configure it.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from '@nats-io/transport-node';
import { createEngine, ErrorCode, JetstateError } from 'jetstate';
import { z } from 'zod';
import { invoice } from './workflows.js';

const OPEN_INVOICE_SUBJECT = 'billing.invoices.open';
const OpenInvoiceRequest = z.object({ orderId: z.string().min(1), customer: z.string().min(1), amount: z.number().positive() });

// Billing owns its connection (it also answers requests on it); the engine uses it and leaves it open.
const nc = await connect({ servers: process.env['NATS_URL'] || 'nats://127.0.0.1:4222', name: 'billing' });
const engine = await createEngine({ connection: nc, namespace: process.env['JETSTATE_NAMESPACE'] || 'demo', workflows: [invoice], name: 'billing' });

// One invoice per order, id derived from the order: a retried request starts nothing new.
const requests = nc.subscribe(OPEN_INVOICE_SUBJECT, {
  queue: 'billing',
  callback: (err, msg) => {
    if (err) return;
    const parsed = OpenInvoiceRequest.safeParse(msg.json());
    if (!parsed.success) return void msg.respond(JSON.stringify({ error: parsed.error.message }));
    const invoiceId = `inv-${parsed.data.orderId}`;
    engine.start(invoice, { id: invoiceId, input: { invoiceId, ...parsed.data } }).then(
      () => msg.respond(JSON.stringify({ invoiceId })),
      (e: unknown) => {
        // A conflicting start is final; anything else is left unanswered, so the shop's task retries.
        if (e instanceof JetstateError && (e.code === ErrorCode.InstanceConflict || e.code === ErrorCode.InvalidInput))
          msg.respond(JSON.stringify({ error: e.message }));
      },
    );
  },
});

async function body(req: IncomingMessage): Promise<unknown> {
  let text = '';
  for await (const chunk of req) text += String(chunk);
  return text ? JSON.parse(text) : {};
}

function reply(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const [collection, id, action] = new URL(req.url ?? '/', 'http://localhost').pathname.split('/').filter(Boolean);
  if (collection !== 'invoices' || !id) return reply(res, 404, { error: 'no such route' });
  if (req.method === 'GET' && !action) {
    const found = await engine.get(invoice, id);
    return found ? reply(res, 200, found) : reply(res, 404, { error: `invoice ${id} does not exist` });
  }
  if (req.method === 'POST' && action === 'pay') {
    const { amount } = (await body(req)) as { amount: number };
    return reply(res, 202, await engine.send(invoice, id, { type: 'PAY', amount }));
  }
  reply(res, 404, { error: 'no such route' });
}

const server = createServer((req, res) => {
  route(req, res).catch((e: unknown) => {
    const code = e instanceof JetstateError ? e.code : undefined;
    const status = code === ErrorCode.InstanceNotFound ? 404 : code === ErrorCode.InvalidEvent ? 400 : 503;
    reply(res, status, { error: (e as Error).message });
  });
});
server.listen(Number(process.env['PORT'] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`billing listening on http://127.0.0.1:${(server.address() as AddressInfo).port} (engine ${engine.engineId})\n`);
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    server.close();
    requests.unsubscribe();
    void engine
      .close()
      .then(() => nc.drain())
      .then(() => process.exit(0));
  });
}
