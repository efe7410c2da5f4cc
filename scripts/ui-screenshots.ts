/**
 * Makes the web view's screenshots in docs/ (ui-order.png, ui-approval.png, ui-hybrid.png): a
 * nats-server, sfn-local and an engine on loopback, one instance of each example brought into an
 * interesting state, the UI server, and Debian's Chromium driven by playwright-core.
 *
 *   npm run screenshots
 *
 * - order: partly paid, its payment window (a durable timer) pending;
 * - approval: approved, provisioning, the first attempt failed (the engine is stopped right after,
 *   so the picture holds still);
 * - hybrid: validated and reserved locally, settling in a Step Functions execution that waits for
 *   its task token (no callback server answers it here).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { createEngine, type Engine } from '../engine/index.js';
import { NatsServer } from '../adapters/nats-server/launcher.js';
import { startLocalStepFunctions } from '../adapters/local/step-functions/server.js';
import { stepFunctions } from '../adapters/step-functions/execution.js';
import { createUiServer } from '../adapters/ui/index.js';
import { approval, order, payment } from '../workflows/index.js';
import { hybrid } from '../workflows/hybrid.js';
import { launchChromium } from '../test/ui/chromium.js';

const root = resolve(import.meta.dirname, '..');
const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };

async function until<T>(what: string, check: () => Promise<T | undefined | null | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const storeDir = await mkdtemp(join(tmpdir(), 'jetstate-shots-'));
const nats = await NatsServer.start({ storeDir });
const sfn = await startLocalStepFunctions({
  credentials: [CREDENTIALS],
  // The Settle task's forwarder accepts the token and tells nobody: the execution keeps waiting.
  taskHandlers: { 'hybrid-settle': async () => ({}) },
});
sfn.createStateMachine('hybrid', await readFile(join(root, 'workflows', 'hybrid.asl.json'), 'utf8'));
const keyRing = `k1:${randomBytes(32).toString('base64')}`;
const namespace = 'shop';
// A tracer provider, so records carry the trace context of their last transition.
const tracerProvider = new BasicTracerProvider();
let engine: Engine | undefined = await createEngine({
  servers: nats.url,
  namespace,
  workflows: [order, approval, payment, hybrid],
  secrets: { keyRing },
  telemetry: { tracerProvider },
  extensions: [stepFunctions({ region: sfn.region, endpoint: sfn.endpoint, credentials: CREDENTIALS })],
});
const ui = await createUiServer({
  servers: nats.url,
  namespace,
  workflows: [order, approval, payment, hybrid],
  keyRing,
  port: 0,
  traceUrl: 'http://localhost:16686/trace/{traceId}',
});
const browser = await launchChromium();
try {
  const e = engine;
  // hybrid: settling in the cloud.
  await e.start(hybrid, { id: 'h-2001', input: { orderId: 'h-2001', sku: 'lamp', quantity: 2, amount: 84.5 } });
  await e.waitFor(hybrid, 'h-2001', (i) => i.matches('settling'), { timeoutMs: 15_000 });
  // order: partly paid, the payment window running.
  await e.start(order, { id: 'o-1042', input: { orderId: 'o-1042', customer: 'ada', amount: 120 } });
  await e.send(order, 'o-1042', { type: 'PAY', amount: 50 });
  await e.waitFor(order, 'o-1042', (i) => (i.context as { payments: number }).payments === 1, { timeoutMs: 5_000 });
  for (let n = 0; n < 6; n++) await e.start(order, { id: `o-10${50 + n}`, input: { orderId: `o-10${50 + n}`, customer: 'grace', amount: 10 + n } });
  // approval: the first provisioning attempt failed (its retry waits 200 ms); the engine stops
  // before the retry, so the picture holds still.
  const approvalId = 'a-7';
  await e.start(approval, { id: approvalId, input: { requester: 'ada', resource: 'db-prod', simulateOutage: true } });
  await e.send(approval, approvalId, { type: 'APPROVE', by: 'grace' });
  await until('the failed first attempt', async () => (await e.get(approval, approvalId))?.tasks[0]?.attempt === 1);
  await e.close();
  engine = undefined;
  const stopped = (await (await fetch(`${ui.url}api/instances/approval/${approvalId}`)).json()) as { value: unknown };
  if (stopped.value !== 'provisioning') throw new Error(`the retry came before the engine stopped (${JSON.stringify(stopped.value)}); run again`);

  const page = await browser.context.newPage();
  for (const [name, workflow, id] of [
    ['order', 'order', 'o-1042'],
    ['approval', 'approval', approvalId],
    ['hybrid', 'hybrid', 'h-2001'],
  ] as const) {
    await page.goto(`${ui.url}#/i/${workflow}/${id}`);
    await page.waitForSelector('svg.chart .node.active');
    await page.waitForSelector('ol.timeline li');
    const file = join(root, 'docs', `ui-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    process.stdout.write(`wrote ${file}\n`);
  }
} finally {
  await browser.close();
  await ui.close();
  await engine?.close();
  await sfn.close();
  await nats.stop();
  await rm(storeDir, { recursive: true, force: true });
}
