/**
 * Secrets end to end: a live engine and clients on a real nats-server, a workflow whose input,
 * events, context, task input, task output, pending timer and output hold declared secrets. The
 * machine and the activity see plaintext; a client with the key ring reads plaintext, one without
 * reads `[encrypted:<key id>]`; the server's files hold no plaintext; keys rotate and
 * `reencrypt` moves every record to the newest key.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { assign, raise, setup } from 'xstate';
import { z } from 'zod';
import { activity } from '../../engine/define/activity.js';
import { childWorkflow } from '../../engine/define/child.js';
import { createClient, type Client } from '../../engine/client.js';
import { defineWorkflow } from '../../engine/define/definition.js';
import { createEngine, type Engine } from '../../engine/engine.js';
import { ErrorCode, JetstateError } from '../../engine/errors.js';
import type { HistoryEntry, Instance } from '../../engine/protocol/record.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';
import { envelopeKeyIds, Outside, scanFor } from './engine-fixtures.js';

/** Unique per run, so a scan cannot find a marker of an earlier run. */
const RUN = randomBytes(6).toString('hex');
const cardOf = (id: string): string => `cardsecret-${RUN}-${id}`;
const ssnOf = (id: string): string => `ssnsecret-${RUN}-${id}`;
const holderOf = (id: string): string => `holdercontrol-${RUN}-${id}`;

type Card = { number: string; holder: string };
type Ctx = { orderId: string; card: Card; sawPlainCard: boolean; ssn?: string; ssnChecked?: boolean; auth?: string; outputEchoed?: boolean };
type Ev = { type: 'VERIFY'; ssn: string } | { type: 'CONFIRM' } | { type: 'CHECK'; ssn: string } | { type: 'AUDIT'; ssn: string };

/** What the activity was given, by order id. */
const charged = new Map<string, unknown>();

const charge = activity<{ orderId: string; card: Card }>(async ({ input }) => {
  charged.set(input.orderId, input.card.number);
  // A card vault answering with the card it charged: the secret comes back in the task output.
  return { authCode: `auth-${input.orderId}`, card: { number: input.card.number, holder: input.card.holder } };
});

const checkout = defineWorkflow({
  name: 'checkout',
  version: 1,
  input: z.object({ orderId: z.string(), card: z.object({ number: z.string(), holder: z.string() }) }),
  events: { VERIFY: z.object({ ssn: z.string() }), CONFIRM: z.object({}) },
  // Raised by the machine only (timers), never sent.
  internalEvents: ['CHECK', 'AUDIT'],
  secrets: ['card.number', 'ssn'],
  machine: setup({
    types: { context: {} as Ctx, events: {} as Ev, input: {} as { orderId: string; card: Card } },
    actors: { charge },
  }).createMachine({
    // Derived, undeclared flags show what the machine saw without copying a secret anywhere.
    context: ({ input }) => ({ orderId: input.orderId, card: input.card, sawPlainCard: input.card.number === cardOf(input.orderId) }),
    initial: 'awaitingSsn',
    on: {
      CHECK: { actions: assign({ ssnChecked: ({ context, event }) => event.ssn === context.ssn && event.ssn === ssnOf(context.orderId) }) },
      AUDIT: {},
    },
    states: {
      awaitingSsn: {
        on: {
          VERIFY: {
            guard: ({ context, event }) => event.ssn === ssnOf(context.orderId),
            target: 'charging',
            actions: [
              assign({ ssn: ({ event }) => event.ssn }),
              // A timer that fires soon, and one that stays pending with the secret in its event.
              raise(({ event }) => ({ type: 'CHECK' as const, ssn: event.ssn }), { delay: 50 }),
              raise(({ event }) => ({ type: 'AUDIT' as const, ssn: event.ssn }), { delay: 3_600_000, id: 'audit' }),
            ],
          },
        },
      },
      charging: {
        invoke: {
          id: 'charge',
          src: 'charge',
          input: ({ context }) => ({ orderId: context.orderId, card: context.card }),
          onDone: {
            target: 'authorized',
            actions: assign({
              auth: ({ event }) => (event.output as { authCode: string }).authCode,
              outputEchoed: ({ context, event }) => (event.output as { card: Card }).card.number === context.card.number,
            }),
          },
        },
      },
      authorized: { on: { CONFIRM: 'done' } },
      done: { type: 'final' },
    },
    output: ({ context }) => ({ orderId: context.orderId, card: context.card, auth: context.auth }),
  }),
});

/** A parent whose pending child is a checkout: the parent's record holds the child's first snapshot. */
const basket = defineWorkflow({
  name: 'basket',
  version: 1,
  input: z.object({ orderId: z.string(), card: z.object({ number: z.string(), holder: z.string() }) }),
  events: { DROP: z.object({}) },
  secrets: ['card.number'],
  machine: setup({
    types: { context: {} as { orderId: string; card: Card }, input: {} as { orderId: string; card: Card } },
    actors: { pay: childWorkflow(checkout) },
  }).createMachine({
    context: ({ input }) => input,
    initial: 'paying',
    states: {
      paying: { invoke: { id: 'pay', src: 'pay', input: ({ context }) => ({ orderId: context.orderId, card: context.card }) }, on: { DROP: 'dropped' } },
      dropped: { type: 'final' },
    },
  }),
});

/**
 * A child workflow that declares no secrets and gets the card from a parent that declares
 * `card.number`: its record keeps the card as passed and under another name (`pan`), hands `pan`
 * to an activity that answers with it under yet another name (`receipt`), and returns the card to
 * its parent. Nothing of it may be stored in the clear.
 */
type VaultCtx = { orderId: string; card: Card; pan: string; sawPlainCard: boolean; vaulted?: boolean };
const vaulted = new Map<string, unknown>();
const store = activity<{ orderId: string; pan: string }>(async ({ input }) => {
  vaulted.set(input.orderId, input.pan);
  return { stored: true, receipt: input.pan };
});
const vault = defineWorkflow({
  name: 'vault',
  version: 1,
  input: z.object({ orderId: z.string(), card: z.object({ number: z.string(), holder: z.string() }) }),
  events: { RELEASE: z.object({}) },
  machine: setup({ types: { context: {} as VaultCtx, input: {} as { orderId: string; card: Card } }, actors: { store } }).createMachine({
    context: ({ input }) => ({ orderId: input.orderId, card: input.card, pan: input.card.number, sawPlainCard: input.card.number === cardOf(input.orderId) }),
    initial: 'storing',
    states: {
      storing: {
        invoke: {
          id: 'store',
          src: 'store',
          input: ({ context }) => ({ orderId: context.orderId, pan: context.pan }),
          onDone: { target: 'held', actions: assign({ vaulted: ({ context, event }) => (event.output as { receipt: string }).receipt === context.pan }) },
        },
      },
      held: { on: { RELEASE: 'released' } },
      released: { type: 'final' },
    },
    output: ({ context }) => ({ orderId: context.orderId, card: context.card }),
  }),
});

/** The parent: declares the card number secret and passes the whole card to the vault. */
const wallet = defineWorkflow({
  name: 'wallet',
  version: 1,
  input: z.object({ orderId: z.string(), card: z.object({ number: z.string(), holder: z.string() }) }),
  events: {},
  secrets: ['card.number'],
  machine: setup({
    types: { context: {} as { orderId: string; card: Card; sawPlainCard: boolean; childDone?: boolean }, input: {} as { orderId: string; card: Card } },
    actors: { vault: childWorkflow(vault) },
  }).createMachine({
    context: ({ input }) => ({ ...input, sawPlainCard: input.card.number === cardOf(input.orderId) }),
    initial: 'vaulting',
    states: {
      vaulting: {
        invoke: {
          id: 'v',
          src: 'vault',
          input: ({ context }) => ({ orderId: context.orderId, card: context.card }),
          onDone: {
            target: 'done',
            actions: assign({ childDone: ({ context, event }) => (event.output as { card: Card }).card.number === context.card.number }),
          },
        },
      },
      done: { type: 'final' },
    },
  }),
});

const key = (): string => randomBytes(32).toString('base64');
const K1 = `k1:${key()}`;
const K2 = `k2:${key()}`;
const K0 = `k0:${key()}`;
const K3 = `k3:${key()}`;
const ctx = (i: Instance): Ctx => i.context as Ctx;
const input = (id: string) => ({ orderId: id, card: { number: cardOf(id), holder: holderOf(id) } });

/** Starts an order and takes it to `authorized`: ssn sent, card charged, the audit timer pending. */
async function authorize(engine: Client, id: string): Promise<Instance> {
  await engine.start(checkout, { id, input: input(id) });
  await engine.send(checkout, id, { type: 'VERIFY', ssn: ssnOf(id) });
  return engine.waitFor(checkout, id, (s) => s.matches('authorized') && ctx(s).ssnChecked === true, { timeoutMs: 10_000 });
}

/** The history, once it holds `n` entries. */
function historyOf(client: Client, id: string, n: number): Promise<HistoryEntry[]> {
  return eventually(async () => {
    const h = await client.history(checkout, id);
    assert.equal(h.length, n, `history of '${id}': ${h.map((e) => (e.event as { type: string }).type).join(', ')}`);
    return h;
  });
}

/** History entries by event type (the timer and the task may finish in either order). */
const byType = (entries: HistoryEntry[]): Map<string, HistoryEntry> => {
  const types = entries.map((e) => (e.event as { type: string }).type);
  assert.deepEqual([...types].sort(), ['VERIFY', 'jetstate.start', 'jetstate.task', 'jetstate.timer']);
  return new Map(entries.map((e, i) => [types[i]!, e]));
};

describe('engine secrets', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let keyless: Client;
  let outside: Outside;
  const namespace = uniqueNamespace('engsecrets');

  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [checkout, basket], secrets: { keyRing: K1 }, leaseTtlMs: 1_000 });
    keyless = await createClient({ servers: nats.url, namespace });
    outside = await Outside.open(nats.url, namespace);
  });
  after(async () => {
    await outside?.close();
    await keyless?.close();
    await engine?.close();
    await nats?.stop();
    if (nats) await rm(nats.storeDir, { recursive: true, force: true });
  });

  it('the machine and the activity see plaintext; a client with the ring reads it', async () => {
    const done = await authorize(engine, 's-1');
    assert.equal(ctx(done).sawPlainCard, true, 'the machine saw the card in the clear');
    assert.equal(ctx(done).ssnChecked, true, 'the fired timer carried the ssn in the clear');
    assert.equal(ctx(done).outputEchoed, true, 'the task output reached the machine in the clear');
    assert.equal(ctx(done).auth, 'auth-s-1');
    assert.equal(charged.get('s-1'), cardOf('s-1'), 'the activity got the card in the clear');
    assert.deepEqual(ctx(done).card, { number: cardOf('s-1'), holder: holderOf('s-1') });
    assert.equal(ctx(done).ssn, ssnOf('s-1'));
    assert.deepEqual(
      done.timers.map((t) => t.id),
      ['audit'],
    );

    const history = byType(await historyOf(engine, 's-1', 4));
    assert.equal((history.get('jetstate.start')!.event as { input: { card: Card } }).input.card.number, cardOf('s-1'));
    assert.equal((history.get('VERIFY')!.event as { ssn: string }).ssn, ssnOf('s-1'));
    assert.equal((history.get('jetstate.task')!.event as { output: { card: Card } }).output.card.number, cardOf('s-1'));
    assert.equal((await engine.verify(checkout, 's-1')).ok, true);
  });

  it('a client without the ring reads [encrypted:<key id>] in get() and history()', async () => {
    await authorize(engine, 's-2');
    const seen = (await keyless.get(checkout, 's-2'))!;
    assert.deepEqual(ctx(seen).card, { number: '[encrypted:k1]', holder: holderOf('s-2') });
    assert.equal(ctx(seen).ssn, '[encrypted:k1]');
    assert.equal(ctx(seen).auth, 'auth-s-2', 'undeclared fields stay readable');

    const entries = await historyOf(keyless, 's-2', 4);
    const history = byType(entries);
    assert.equal((history.get('jetstate.start')!.event as { input: { card: Card } }).input.card.number, '[encrypted:k1]');
    assert.equal((history.get('VERIFY')!.event as { ssn: string }).ssn, '[encrypted:k1]');
    assert.equal(
      (history.get('jetstate.task')!.event as { output: { card: Card } }).output.card.number,
      '[encrypted:k1]',
      'the task output in history is sealed',
    );
    assert.doesNotMatch(JSON.stringify(entries), new RegExp(`secret-${RUN}`));

    // What NATS holds: the record's secrets are envelopes of k1, the control field is plain.
    const stored = (await outside.storedRecords()).get('checkout.s-2')!;
    assert.doesNotMatch(stored, new RegExp(`secret-${RUN}`));
    assert.match(stored, new RegExp(holderOf('s-2')));
    const ids = envelopeKeyIds(JSON.parse(stored));
    assert.ok(ids.length >= 4, `envelopes: ${ids.length}`); // input, context card and ssn, the audit timer's ssn (and maybe the last history)
    assert.deepEqual(new Set(ids), new Set(['k1']));
  });

  // Reads register the workflow they are given, so the codec knows its secret paths.
  it('a client with the ring that only reads (no workflows option) reads plaintext', async () => {
    await using reader = await createClient({ servers: nats.url, namespace, secrets: { keyRing: K1 } });
    const seen = (await reader.get(checkout, 's-1'))!;
    assert.equal(ctx(seen).card.number, cardOf('s-1'));
    const history = await reader.history(checkout, 's-1');
    assert.equal((history.find((h) => h.kind === 'start')!.event as { input: { card: Card } }).input.card.number, cardOf('s-1'));
  });

  it('a client without a key ring cannot start or send to a workflow with secrets', async () => {
    const before = await outside.eventsLastSeq();
    for (const attempt of [
      () => keyless.send(checkout, 's-1', { type: 'VERIFY', ssn: ssnOf('s-1') }),
      () => keyless.start(checkout, { id: 's-9', input: input('s-9') }),
    ]) {
      await assert.rejects(attempt(), (e: unknown) => {
        assert.ok(e instanceof JetstateError);
        assert.equal(e.code, ErrorCode.InvalidOptions);
        assert.match(e.message, /workflow 'checkout' declares secrets.*keyRing/);
        return true;
      });
    }
    assert.equal(await outside.eventsLastSeq(), before, 'nothing was sent');
    assert.equal(await engine.get(checkout, 's-9'), null, 'nothing was started');
    // Nor can an engine run it.
    await assert.rejects(
      createEngine({ servers: nats.url, namespace, workflows: [checkout] }),
      (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.InvalidOptions && /keyRing/.test(e.message),
    );
  });

  it('leaves no secret in the clear in the server files (and finds the unsealed control)', async () => {
    await authorize(engine, 's-3');
    await engine.send(checkout, 's-3', { type: 'CONFIRM' });
    const done = await engine.waitFor(checkout, 's-3', (s) => s.status === 'done', { timeoutMs: 5_000 });
    assert.equal((done.output as { card: Card }).card.number, cardOf('s-3'));
    // An event sent by a client that has the ring is sealed before it leaves the process.
    await engine.send(checkout, 's-1', { type: 'VERIFY', ssn: ssnOf('s-1') });
    await historyOf(engine, 's-1', 5);
    // A child workflow's first snapshot inside its parent's record, and the child's own record.
    await engine.start(basket, { id: 's-4', input: input('s-4') });
    const child = await engine.waitFor(checkout, 's-4_pay', (s) => s.matches('awaitingSsn'), { timeoutMs: 5_000 });
    assert.equal(ctx(child).sawPlainCard, true);

    await outside.close();
    await keyless.close();
    await engine.close();
    await nats.stop();
    const ids = ['s-1', 's-2', 's-3', 's-4'];
    const secrets = ids.flatMap((id) => [cardOf(id), ssnOf(id)]);
    const found = await scanFor(nats.storeDir, [...secrets, ...ids.map(holderOf)]);
    for (const s of secrets) assert.deepEqual(found.get(s), [], `plaintext '${s}' found in the store`);
    for (const id of ids) assert.ok(found.get(holderOf(id))!.length > 0, `control '${holderOf(id)}' not found: the scan reads the store`);
  });
});

describe('engine secrets: key rotation', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let outside: Outside;
  const namespace = uniqueNamespace('engrotate');
  const open: Array<{ close(): Promise<void> }> = [];
  const engineWith = async (keyRing: string): Promise<Engine> => {
    const e = await createEngine({ servers: nats.url, namespace, workflows: [checkout], secrets: { keyRing }, leaseTtlMs: 1_000 });
    open.push(e);
    return e;
  };
  /** Key ids of every envelope in each stored record. */
  const storedKeyIds = async (): Promise<Map<string, string[]>> =>
    new Map([...(await outside.storedRecords())].map(([k, v]) => [k, envelopeKeyIds(JSON.parse(v))]));

  before(async () => {
    nats = await startNats();
    outside = await Outside.open(nats.url, namespace);
  });
  after(async () => {
    for (const c of open.reverse()) await c.close();
    await outside?.close();
    await nats?.dispose();
  });

  it('new writes use the newest key, old values still open, reencrypt moves all to it, the old key can go', async () => {
    // Ring [k1]: one order waits authorized (timer pending), one is done.
    const first = await engineWith(K1);
    await authorize(first, 'r-1');
    await authorize(first, 'r-2');
    await first.send(checkout, 'r-2', { type: 'CONFIRM' });
    await first.waitFor(checkout, 'r-2', (s) => s.status === 'done', { timeoutMs: 5_000 });
    await first.close();
    let ids = await storedKeyIds();
    assert.deepEqual(new Set([...ids.values()].flat()), new Set(['k1']));

    // Ring [k1, k2], k2 newest: new writes use k2, k1 values still open.
    const second = await engineWith(`${K1},${K2}`);
    const r1 = (await second.get(checkout, 'r-1'))!;
    assert.equal(ctx(r1).card.number, cardOf('r-1'));
    assert.equal(ctx(r1).ssn, ssnOf('r-1'));
    await authorize(second, 'r-3');
    assert.equal(charged.get('r-3'), cardOf('r-3'));
    ids = await storedKeyIds();
    assert.deepEqual(new Set(ids.get('checkout.r-3')), new Set(['k2']));
    assert.deepEqual(new Set(ids.get('checkout.r-1')), new Set(['k1']));
    const staleBefore = [...ids.values()].flat().filter((k) => k === 'k1').length;

    const result = await second.reencrypt(checkout);
    assert.deepEqual(result.failed, []);
    assert.equal(result.records, 2);
    // r-1 and r-2 were written under k1 (records and history); r-3 only under k2.
    assert.deepEqual(result.history.instances, 2);
    // History goes out in batches: at least one message for each of the two instances.
    assert.ok(result.history.messages >= 2, `history messages republished: ${result.history.messages}`);
    assert.ok(result.resealed > staleBefore, `envelopes moved: ${result.resealed} (${staleBefore} in records)`);
    ids = await storedKeyIds();
    assert.equal(ids.size, 3);
    for (const [k, v] of ids) assert.deepEqual(new Set(v), new Set(['k2']), `record ${k}`);
    assert.deepEqual(await second.reencrypt(checkout), { records: 0, resealed: 0, failed: [], history: { instances: 0, messages: 0 } }, 'nothing left to move');

    // The running engine still has r-1 cached from before: its next write must see the new record.
    await second.send(checkout, 'r-1', { type: 'CONFIRM' });
    const r1done = await second.waitFor(checkout, 'r-1', (s) => s.status === 'done', { timeoutMs: 5_000 });
    assert.equal((r1done.output as { card: Card }).card.number, cardOf('r-1'));
    await second.close();

    // Ring [k2] alone opens every record, and an engine with it keeps going.
    const third = await engineWith(K2);
    for (const id of ['r-1', 'r-2', 'r-3']) {
      const inst = (await third.get(checkout, id))!;
      assert.equal(ctx(inst).card.number, cardOf(id), id);
      assert.equal(ctx(inst).ssn, ssnOf(id), id);
    }
    await third.send(checkout, 'r-3', { type: 'CONFIRM' });
    const r3 = await third.waitFor(checkout, 'r-3', (s) => s.status === 'done', { timeoutMs: 5_000 });
    assert.equal((r3.output as { card: Card }).card.number, cardOf('r-3'));
    for (const [k, v] of await storedKeyIds()) assert.deepEqual(new Set(v), new Set(['k2']), `record ${k}`);
    // History was re-encrypted too, in its order: without k1, r-1's whole history opens and replays.
    const history = await third.history(checkout, 'r-1');
    assert.equal(history.filter((h) => h.kind === 'start').length, 1, 'each entry once');
    assert.deepEqual(
      history.map((h) => h.revision),
      history.map((_, i) => i + 1),
      'in order',
    );
    assert.equal((history[0]!.event as { input: { card: Card } }).input.card.number, cardOf('r-1'));
    assert.equal((history.find((h) => (h.event as { type: string }).type === 'VERIFY')!.event as { ssn: string }).ssn, ssnOf('r-1'));
    assert.equal((await third.verify(checkout, 'r-1')).ok, true);
    assert.deepEqual(new Set(envelopeKeyIds(await outside.storedHistory())), new Set(['k2']), 'no history message holds a k1 envelope');
  });

  it('reencrypt goes through every record and history, reports those it cannot open, and finishes them once the key is back', async () => {
    for (const c of open.splice(0).reverse()) await c.close();
    // f-1 is sealed under k0 only; the r-* instances are under k2 since the test above.
    const lost = await engineWith(K0);
    await authorize(lost, 'f-1');
    await lost.close();

    // k0 is not in this ring: f-1 (first in key order) is reported, every other instance moves to k3.
    await using rotator = await createClient({ servers: nats.url, namespace, secrets: { keyRing: `${K2},${K3}` } });
    const report = await rotator.reencrypt(checkout);
    assert.equal(report.records, 3, JSON.stringify(report));
    assert.equal(report.history.instances, 3);
    assert.deepEqual(
      report.failed.map((f) => f.key),
      ['checkout.f-1', 'checkout.f-1'],
    );
    assert.match(report.failed[0]!.reason, /sealed with key 'k0', which is not in the key ring/);
    assert.match(report.failed[1]!.reason, /^history: .*key 'k0'/);
    const ids = await storedKeyIds();
    for (const id of ['r-1', 'r-2', 'r-3']) assert.deepEqual(new Set(ids.get(`checkout.${id}`)), new Set(['k3']), id);
    assert.deepEqual(new Set(ids.get('checkout.f-1')), new Set(['k0']), 'f-1 left as it was');

    // With k0 back in the ring, the rest moves.
    await using fixer = await createClient({ servers: nats.url, namespace, secrets: { keyRing: `${K0},${K3}` } });
    const again = await fixer.reencrypt(checkout);
    assert.deepEqual([again.records, again.history.instances, again.failed], [1, 1, []]);
    assert.deepEqual(new Set([...(await storedKeyIds()).values()].flat()), new Set(['k3']));
    assert.deepEqual(new Set(envelopeKeyIds(await outside.storedHistory())), new Set(['k3']));
  });
});

describe('engine secrets: a secret passed to a child follows the data', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let keyless: Client;
  const namespace = uniqueNamespace('engchild');
  const vaultCtx = (i: Instance): VaultCtx => i.context as VaultCtx;

  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [wallet], secrets: { keyRing: K1 }, leaseTtlMs: 1_000 });
    keyless = await createClient({ servers: nats.url, namespace });
  });
  after(async () => {
    await keyless?.close();
    await engine?.close();
    await nats?.stop();
    if (nats) await rm(nats.storeDir, { recursive: true, force: true });
  });

  /** Starts a wallet and waits until its vault child holds the card (its activity ran). */
  async function vaultFor(id: string): Promise<Instance> {
    await engine.start(wallet, { id, input: input(id) });
    return engine.waitFor(vault, `${id}_v`, (s) => s.matches('held') && vaultCtx(s).vaulted === true, { timeoutMs: 10_000 });
  }

  it("parent, child and the child's activity see the card in the clear; NATS holds it sealed, also in the child", async () => {
    const child = await vaultFor('c-1');
    assert.equal(vaultCtx(child).sawPlainCard, true, 'the child machine saw the card in the clear');
    assert.equal(vaultCtx(child).pan, cardOf('c-1'));
    assert.deepEqual(vaultCtx(child).card, { number: cardOf('c-1'), holder: holderOf('c-1') });
    assert.equal(vaulted.get('c-1'), cardOf('c-1'), "the child's activity got the card in the clear");
    assert.equal(vaultCtx(child).vaulted, true, "the activity's answer reached the child in the clear");
    const parent = (await engine.get(wallet, 'c-1'))!;
    assert.equal((parent.context as { sawPlainCard: boolean }).sawPlainCard, true);
    assert.equal((parent.context as { card: Card }).card.number, cardOf('c-1'));

    // Without the ring, the child's card (as passed and as copied into `pan`) reads as sealed.
    const seen = (await keyless.get(vault, 'c-1_v'))!;
    assert.deepEqual(vaultCtx(seen).card, { number: '[encrypted:k1]', holder: holderOf('c-1') });
    assert.equal(vaultCtx(seen).pan, '[encrypted:k1]');
    const sealedHistory = await eventually(async () => {
      const h = await keyless.history(vault, 'c-1_v');
      assert.ok(h.length >= 2, `child history: ${h.length} entries`);
      return h;
    });
    assert.doesNotMatch(JSON.stringify(sealedHistory), new RegExp(`secret-${RUN}`));
    // With it, the child's history opens (its messages name the inherited paths) and replays.
    const history = await engine.history(vault, 'c-1_v');
    assert.equal((history.find((h) => h.kind === 'start')!.event as { input: { card: Card } }).input.card.number, cardOf('c-1'));
    assert.equal((await engine.verify(vault, 'c-1_v')).ok, true);
    assert.equal((await engine.verify(wallet, 'c-1')).ok, true);
  });

  it('a finished child returns to its parent; no plaintext card anywhere in the server files', async () => {
    await vaultFor('c-2');
    await engine.send(vault, 'c-2_v', { type: 'RELEASE' });
    const parent = await engine.waitFor(wallet, 'c-2', (s) => s.status === 'done', { timeoutMs: 10_000 });
    assert.equal((parent.context as { childDone?: boolean }).childDone, true);
    assert.equal((await engine.get(vault, 'c-2_v'))!.status, 'done');

    await keyless.close();
    await engine.close();
    await nats.stop();
    const ids = ['c-1', 'c-2'];
    const found = await scanFor(nats.storeDir, [...ids.map(cardOf), ...ids.map(holderOf)]);
    for (const id of ids) assert.deepEqual(found.get(cardOf(id)), [], `plaintext card of '${id}' found in the store`);
    for (const id of ids) assert.ok(found.get(holderOf(id))!.length > 0, `control '${holderOf(id)}' not found: the scan reads the store`);
  });
});

/** Fails while `processorDown` is set: a task that waits for its retry. */
let processorDown = true;
const attempts: Array<{ attempt: number; number: string }> = [];
const flakyCharge = activity<{ orderId: string; card: Card }>(
  async ({ input, attempt }) => {
    attempts.push({ attempt, number: input.card.number });
    if (processorDown) throw new Error('the card processor is down');
    return { authCode: `auth-${input.orderId}` };
  },
  { retry: { maxAttempts: 1_000, initialIntervalMs: 200, maxIntervalMs: 400, jitter: 0 } },
);
const retrying = defineWorkflow({
  name: 'retrying',
  version: 1,
  input: z.object({ orderId: z.string(), card: z.object({ number: z.string(), holder: z.string() }) }),
  events: {},
  secrets: ['card.number'],
  machine: setup({
    types: { context: {} as { orderId: string; card: Card; auth?: string }, input: {} as { orderId: string; card: Card } },
    actors: { flakyCharge },
  }).createMachine({
    context: ({ input }) => input,
    initial: 'charging',
    states: {
      charging: {
        invoke: {
          id: 'charge',
          src: 'flakyCharge',
          input: ({ context }) => context,
          onDone: { target: 'charged', actions: assign({ auth: ({ event }) => (event.output as { authCode: string }).authCode }) },
        },
      },
      charged: { type: 'final' },
    },
  }),
});

describe('engine secrets: a task waiting for its retry when the old key leaves the ring', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  const namespace = uniqueNamespace('engretry');
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await nats?.dispose();
  });

  it('runs with the input re-encrypted in its record', async () => {
    const first = await createEngine({ servers: nats.url, namespace, workflows: [retrying], secrets: { keyRing: K1 }, leaseTtlMs: 1_000, drainTimeoutMs: 500 });
    try {
      await first.start(retrying, { id: 't-1', input: input('t-1') });
      await eventually(() => assert.ok(attempts.length >= 1, 'the first attempt ran'));
    } finally {
      await first.close();
    }
    assert.equal(attempts[0]!.number, cardOf('t-1'));

    await using rotator = await createClient({ servers: nats.url, namespace, secrets: { keyRing: `${K1},${K2}` } });
    const report = await rotator.reencrypt(retrying);
    assert.deepEqual([report.records, report.failed], [1, []]);

    // Only k2 now. The task message carries no input: the retry reads it from the record.
    processorDown = false;
    const seen = attempts.length;
    const second = await createEngine({
      servers: nats.url,
      namespace,
      workflows: [retrying],
      secrets: { keyRing: K2 },
      leaseTtlMs: 1_000,
      drainTimeoutMs: 500,
    });
    try {
      const done = await second.waitFor(retrying, 't-1', (s) => s.status === 'done', { timeoutMs: 15_000 });
      assert.equal((done.context as { auth?: string }).auth, 'auth-t-1');
      const retries = attempts.slice(seen);
      assert.ok(retries.length >= 1, 'a retry ran on the engine with the new ring only');
      assert.ok(
        retries.every((a) => a.attempt > 1 && a.number === cardOf('t-1')),
        JSON.stringify(retries.map((a) => a.attempt)),
      );
      assert.equal((await second.verify(retrying, 't-1')).ok, true);
    } finally {
      await second.close();
    }
  });
});
