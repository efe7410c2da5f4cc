/**
 * The web view in a real browser (Debian's Chromium driven by playwright-core) against a real
 * nats-server and engine: the list follows new instances, the statechart follows sends, the
 * page's form sends events that apply and show in the timeline, a sender without the role is
 * refused with the engine's words, secrets stay redacted unless the server reveals them; and,
 * over plain HTTP, the list's paging and filters and the server's Host and Origin checks.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { createEngine, type Engine } from '../../engine/index.js';
import { createUiServer, type InstanceDetail, type InstancePage, type UiServer } from '../../adapters/ui/index.js';
import { order, payment } from '../../workflows/index.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';
import { jwt, oidcSigner, type Signer } from '../security/engine-fixtures.js';
import { startJwksServer, type JwksServer } from '../security/jwks-server.js';
import { chromiumMissing, launchChromium, type Browser } from './chromium.js';
import { ticket } from './ticket-workflow.js';
import { callback, escalation } from './escalation-workflow.js';

const ISSUER = { iss: 'https://auth.example.test/realms/support', aud: 'jetstate-ui-test' };
const CARD = '4111111111111111';

describe('web view', { skip: chromiumMissing() ?? false, timeout: 60_000 }, () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let jwks: JwksServer;
  let signer: Signer;
  let engine: Engine;
  let ui: UiServer;
  let browser: Browser;
  const namespace = uniqueNamespace('ui');
  const keyRing = `k1:${randomBytes(32).toString('base64')}`;
  // The callback child workflow comes with escalation (childWorkflow), for the engine and the UI alike.
  const workflows = [order, payment, ticket, escalation];
  const token = (sub: string, roles: string[]): Promise<string> => jwt(signer, ISSUER, { sub, realm_access: { roles } });

  before(async () => {
    signer = await oidcSigner('ui-1');
    [nats, jwks] = await Promise.all([startNats(), startJwksServer([signer.jwk])]);
    engine = await createEngine({
      servers: nats.url,
      namespace,
      workflows,
      secrets: { keyRing },
      identity: { oidc: { issuer: ISSUER.iss, audience: ISSUER.aud, jwks: jwks.url }, roles: { claims: [{ claim: 'realm_access.roles' }] } },
      leaseTtlMs: 1_000,
    });
    // The UI has the key ring (to seal what it sends) but does not reveal; it verifies no tokens itself: the engine decides.
    ui = await createUiServer({ servers: nats.url, namespace, workflows, keyRing, port: 0, traceUrl: 'http://localhost:16686/trace/{traceId}' });
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await ui?.close();
    await engine?.close();
    await jwks?.close();
    await nats?.dispose();
  });

  async function open(hash: string): Promise<Page> {
    const page = await browser.context.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(`${ui.url}${hash}`);
    return page;
  }

  const startOrder = (id: string, amount = 30) => engine.start(order, { id, input: { orderId: id, customer: 'ada', amount } });

  it('the list shows an instance as soon as it starts', async () => {
    const page = await open('#/instances?workflow=order');
    await page.locator('.pager .summary', { hasText: 'match' }).waitFor();
    await startOrder('live-1');
    const row = page.locator('tr[data-key="order.live-1"]');
    await row.waitFor();
    assert.equal(await row.locator('td.state').textContent(), 'awaitingPayment');
    await page.close();
  });

  it('highlights the state an event moves the instance to, pushed by the KV watch', async (t) => {
    await startOrder('chart-1');
    const page = await open('#/i/order/chart-1');
    await page.locator('svg.chart .node.active[data-path="awaitingPayment"]').waitFor();
    // The payment window is a pending durable timer: its `after` transition is marked.
    await page.locator('svg.chart .edge.after.timer-pending').waitFor();
    const sent = performance.now();
    await engine.send(order, 'chart-1', { type: 'PAY', amount: 30 });
    await page.locator('svg.chart .node.active[data-path="paid"]').waitFor();
    t.diagnostic(`highlighted ${Math.round(performance.now() - sent)} ms after send() returned`);
    assert.deepEqual(await page.locator('svg.chart .node.active').evaluateAll((els) => els.map((e) => e.getAttribute('data-path'))), ['paid']);
    assert.equal(await page.locator('svg.chart .edge.timer-pending').count(), 0, 'the timer left with its state');
    // Verify from the page replays the history.
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.locator('.verify-result .ok', { hasText: 'ok: replaying 1 events' }).waitFor();
    await page.close();
  });

  it("sends an event from the page's form; it applies and shows in the timeline", async () => {
    await startOrder('form-1', 40);
    const page = await open('#/i/order/form-1');
    await page.locator('svg.chart .node.active').waitFor();
    await page.locator('select[name="type"]').selectOption('PAY');
    // Invalid first: the client's zod check answers, nothing is sent.
    await page.locator('input[name="amount"]').fill('-5');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('.send-result .refused', { hasText: 'INVALID_EVENT' }).waitFor();
    await page.locator('input[name="amount"]').fill('12.5');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('.send-result [data-outcome="applied"]').waitFor();
    await page.locator('ol.timeline li[data-label="PAY"][data-revision="2"]').waitFor();
    await page.locator('.context .json-tree', { hasText: 'paid: 12.5' }).waitFor();
    assert.equal(((await engine.get(order, 'form-1'))!.context as { paid: number }).paid, 12.5);
    await page.close();
  });

  it('draws parallel and nested states and refuses a sender without the role, in the engine’s words', async () => {
    await engine.start(ticket, { id: 't-1', input: { title: 'printer on fire' }, token: await token('ann', ['agent']) });
    const page = await open('#/i/ticket/t-1');
    for (const path of ['open', 'open.triage', 'open.triage.new', 'open.sla', 'open.sla.ok'])
      await page.locator(`svg.chart .node.active[data-path="${path}"]`).waitFor();
    assert.equal(await page.locator('svg.chart .node.parallel[data-path="open"]').count(), 1);
    assert.equal(await page.locator('svg.chart .node.region').count(), 2, 'two regions in the parallel state');
    assert.equal(await page.locator('svg.chart .edge-label', { hasText: 'after 1h' }).count(), 1);

    // An agent may not close.
    await page.locator('input[name="token"]').fill(await token('ann', ['agent']));
    await page.locator('select[name="type"]').selectOption('CLOSE');
    await page.getByRole('button', { name: 'Send' }).click();
    const refused = page.locator('.send-result [data-outcome="rejected"]');
    await refused.waitFor();
    assert.match(
      (await refused.textContent())!,
      /\[permission\.denied\] 'ann' \(roles: agent\) may not send 'CLOSE' to workflow 'ticket'; it needs one of the roles 'lead'/,
    );
    await page.locator('ol.timeline li.rejected', { hasText: '[permission.denied]' }).waitFor();
    assert.equal(await page.locator('svg.chart .node.active[data-path="open.triage.new"]').count(), 1, 'the instance did not move');

    // Without a token the client refuses before publishing.
    await page.locator('input[name="token"]').fill('');
    await page.locator('select[name="type"]').selectOption('ASSIGN');
    await page.locator('input[name="to"]').fill('bob');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('.send-result .refused', { hasText: 'UNAUTHENTICATED: [identity.missing]' }).waitFor();

    // A lead may.
    await page.locator('input[name="token"]').fill(await token('lee', ['agent', 'lead']));
    await page.locator('select[name="type"]').selectOption('CLOSE');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('.send-result [data-outcome="applied"]').waitFor();
    await page.locator('svg.chart .node.active[data-path="closed"]').waitFor();
    await page.locator('ol.timeline li[data-label="CLOSE"] .identity', { hasText: 'by lee' }).waitFor();

    // The refusal is a dead letter, with its reason.
    await page.goto(`${ui.url}#/deadletters`);
    await page.locator('table.deadletters td.reason', { hasText: "[permission.denied] 'ann'" }).waitFor();
    await page.close();
  });

  it('shows secrets redacted; a send seals them; only a revealing server shows them', async () => {
    await engine.start(payment, { id: 'p-1', input: { paymentId: 'p-1', amount: 12, card: { number: CARD, expiry: '12/29' } } });
    const page = await open('#/i/payment/p-1');
    await page.locator('.context .secret', { hasText: '[encrypted:k1]' }).waitFor();
    assert.ok(!(await page.content()).includes(CARD), 'the card number is nowhere on the page');
    const api = await (await fetch(`${ui.url}api/instances/payment/p-1`)).text();
    assert.ok(!api.includes(CARD) && api.includes('[encrypted:k1]'));

    await page.locator('select[name="type"]').selectOption('CONFIRM');
    assert.equal(await page.locator('input[name="cvc"]').getAttribute('type'), 'password');
    await page.locator('input[name="cvc"]').fill('123');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('.send-result [data-outcome="applied"]').waitFor();
    await page.locator('svg.chart .node.active[data-path="captured"]').waitFor();
    const history = (JSON.parse(await (await fetch(`${ui.url}api/instances/payment/p-1`)).text()) as InstanceDetail).history;
    assert.deepEqual((history.find((h) => h.label === 'CONFIRM')!.event as { cvc: string }).cvc, '[encrypted:k1]');
    await page.close();

    const revealing = await createUiServer({ servers: nats.url, namespace, workflows, keyRing, reveal: true, port: 0 });
    try {
      const detail = (await (await fetch(`${revealing.url}api/instances/payment/p-1`)).json()) as InstanceDetail;
      assert.equal((detail.context as { card: { number: string } }).card.number, CARD);
      assert.equal(detail.revealed, true);
    } finally {
      await revealing.close();
    }
    await assert.rejects(createUiServer({ servers: nats.url, namespace, workflows, reveal: true, port: 0 }), /reveal needs the key ring/);
  });

  it('links a child instance and its parent both ways, and follows the child to its end', async () => {
    await engine.start(escalation, { id: 'e-1', input: { phone: '+100' } });
    const page = await open('#/i/escalation/e-1');
    const child = page.locator('.children-panel a', { hasText: 'callback e-1_call' });
    await child.waitFor();
    await child.click();
    await page.locator('svg.chart .node.active[data-path="ringing"]').waitFor();
    await page.locator('p.meta a', { hasText: 'escalation e-1' }).waitFor();
    await engine.send(callback, 'e-1_call', { type: 'ANSWERED' });
    await page.locator('svg.chart .node.active[data-path="answered"]').waitFor();
    await page.locator('p.meta a', { hasText: 'escalation e-1' }).click();
    await page.locator('svg.chart .node.active[data-path="reached"]').waitFor();
    await page.close();
  });

  it('pages through the index with filters, both ways', async () => {
    const ids = Array.from({ length: 23 }, (_, i) => `pg-${String(i).padStart(2, '0')}`);
    await Promise.all(ids.map((id) => startOrder(id, 10)));
    await engine.send(order, 'pg-07', { type: 'PAY', amount: 10 });
    const list = async (q: string, prefix = 'pg-'): Promise<InstancePage> =>
      (await (await fetch(`${ui.url}api/instances?workflow=order&prefix=${prefix}&${q}`)).json()) as InstancePage;
    await eventually(async () => assert.equal((await list('state=paid')).total, 1), 10_000);
    const forward: string[][] = [];
    let page = await list('limit=5');
    assert.equal(page.total, 23);
    assert.equal(page.prev, null);
    for (;;) {
      forward.push(page.rows.map((r) => r.id));
      if (!page.next) break;
      page = await list(`limit=5&after=${page.next}`);
    }
    assert.deepEqual(forward.flat(), ids);
    assert.deepEqual(
      forward.map((p) => p.length),
      [5, 5, 5, 5, 3],
    );
    const backward: string[][] = [];
    page = await list(`limit=5&before=order.pg-22`);
    for (;;) {
      backward.unshift(page.rows.map((r) => r.id));
      if (!page.prev) break;
      page = await list(`limit=5&before=${page.prev}`);
    }
    assert.deepEqual(backward.flat(), ids.slice(0, 22));
    const paid = await list('state=paid');
    assert.deepEqual(
      paid.rows.map((r) => r.id),
      ['pg-07'],
    );
    assert.equal((await list('status=running', 'pg-1')).total, 10);
    assert.equal((await list('state=awaitingPayment', 'pg-0')).total, 9, 'pg-07 is paid');
  });

  it('answers only to its own loopback host, and takes writes only as JSON from its own origin', async () => {
    const call = (method: string, path: string, headers: Record<string, string>, body = ''): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: ui.port, method, path, headers }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end(body);
      });
    const host = `127.0.0.1:${ui.port}`;
    assert.equal(await call('GET', '/api/overview', { host }), 200);
    assert.equal(await call('GET', '/api/overview', { host: `attacker.example:${ui.port}` }), 421, 'a DNS-rebinding page sends its own name');
    const send = JSON.stringify({ event: { type: 'PAY', amount: 1 } });
    assert.equal(
      await call('POST', '/api/instances/order/live-1/send', { host, 'content-type': 'text/plain' }, send),
      415,
      'a cross-site form cannot send JSON',
    );
    assert.equal(
      await call('POST', '/api/instances/order/live-1/send', { host, 'content-type': 'application/json', origin: 'http://attacker.example' }, send),
      403,
    );
  });
});
