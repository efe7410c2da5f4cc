/**
 * A send from one service's workflow to another service's workflow (two engines sharing a
 * namespace, each registering only its own workflow, as in examples/two-services): the event's
 * fields that the receiving workflow declares secret are sealed on the way, although the sending
 * engine does not have that workflow. The server's store holds no plaintext of them.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { assign, sendTo, setup } from 'xstate';
import { z } from 'zod';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { layout } from '../../engine/internal.js';
import { KeyRingMissingError } from '../../engine/errors.js';
import { SecretCodec } from '../../engine/security/codec.js';
import { createKeyRing } from '../../engine/security/secrets.js';
import { InstanceRecordSchema, RECORD_SCHEMA_VERSION, type InstanceRecord } from '../../engine/protocol/record.js';
import { OutboxKind } from '../../engine/protocol/events.js';
import { childWorkflow, createClient, createEngine, defineWorkflow, sendToInstance, type Engine } from '../../engine/index.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';
import { scanFor } from './engine-fixtures.js';

const RUN = randomBytes(6).toString('hex');
const pinOf = (id: string): string => `pinsecret-${RUN}-${id}`;
const labelOf = (id: string): string => `labelcontrol-${RUN}-${id}`;
const K1 = `k1:${randomBytes(32).toString('base64')}`;
const K2 = `k2:${randomBytes(32).toString('base64')}`;

/** The receiving service's workflow: it declares `pin` secret. */
const vault = defineWorkflow({
  name: 'vault',
  version: 1,
  input: z.object({}),
  events: { PIN: z.object({ pin: z.string(), label: z.string() }) },
  secrets: ['pin'],
  machine: setup({ types: { context: {} as { ok: boolean }, events: {} as { type: 'PIN'; pin: string; label: string } } }).createMachine({
    context: { ok: false },
    initial: 'waiting',
    states: {
      waiting: { on: { PIN: { target: 'done', actions: assign({ ok: ({ event }) => event.pin.startsWith(`pinsecret-${RUN}-`) }) } } },
      done: { type: 'final' },
    },
    output: ({ context }) => ({ ok: context.ok }),
  }),
});

/** The vault as an older deployment knows it: version 1, nothing declared secret (version 2 is `vaultSealed`). */
const vaultPlain = defineWorkflow({ ...vault, secrets: [] });
const vaultSealed = defineWorkflow({ ...vault, version: 2 });

/**
 * A sending service's workflow: it holds the pin in its context under `field` (declared secret
 * here) and sends it to vault 'v-<id>' as the vault's `pin`.
 */
function pinSender(name: string, field: string) {
  type Held = Record<string, string>;
  const idOf = (held: Held): string => held[field]!.split('-').pop()!;
  return defineWorkflow({
    name,
    version: 1,
    input: z.object({ [field]: z.string() }),
    events: { GO: z.object({}) },
    secrets: [field],
    machine: setup({ types: { context: {} as Held, input: {} as Held } }).createMachine({
      context: ({ input }) => ({ [field]: input[field]! }),
      initial: 'idle',
      states: {
        idle: {
          on: {
            GO: {
              target: 'sent',
              actions: sendToInstance(
                ({ context }: { context: Held }) => ({ workflow: 'vault', id: `v-${idOf(context)}` }),
                ({ context }: { context: Held }) => ({ type: 'PIN', pin: context[field]!, label: labelOf(idOf(context)) }),
              ),
            },
          },
        },
        sent: { type: 'final' },
      },
    }),
  });
}

/** Holds the pin as `pin`, the name the vault gives it too. */
const teller = pinSender('teller', 'pin');
/** Keeps the pin under another name (`code`): only the vault's paths name the field it sends. */
const cashier = pinSender('cashier', 'code');

/** A sender that holds nothing secret itself (so it needs no key ring of its own), sending a pin to vault 'v-<id>'. */
const kiosk = defineWorkflow({
  name: 'kiosk',
  version: 1,
  input: z.object({ to: z.string(), pin: z.string() }),
  events: { GO: z.object({}) },
  machine: setup({ types: { context: {} as { to: string; pin: string }, input: {} as { to: string; pin: string } } }).createMachine({
    context: ({ input }) => input,
    initial: 'idle',
    states: {
      idle: {
        on: {
          GO: {
            target: 'sent',
            actions: sendToInstance(
              ({ context }: { context: { to: string; pin: string } }) => ({ workflow: 'vault', id: context.to }),
              ({ context }: { context: { to: string; pin: string } }) => ({ type: 'PIN', pin: context.pin, label: 'kiosk' }),
            ),
          },
        },
      },
      sent: { type: 'final' },
    },
  }),
});

/** Passes on whatever a sender gives it as the vault's pin: an envelope a sender made up included. */
const relayer = defineWorkflow({
  name: 'relayer',
  version: 1,
  input: z.object({}),
  events: { FWD: z.object({ to: z.string(), note: z.unknown() }) },
  machine: setup({ types: { events: {} as { type: 'FWD'; to: string; note: unknown } } }).createMachine({
    on: {
      FWD: {
        actions: sendToInstance(
          ({ event }: { event: { type: string; to?: unknown } }) => ({ workflow: 'vault', id: String(event.to) }),
          ({ event }: { event: { type: string; note?: unknown } }) => ({ type: 'PIN', pin: event.note, label: 'fwd' }),
        ),
      },
    },
  }),
});

/**
 * One nats-server and namespace for a test, and engines on it (each one service), all closed and
 * the server's store removed after `fn`.
 */
async function withServices(label: string, fn: (s: Services) => Promise<void>): Promise<void> {
  const nats = await startNats();
  const s = new Services(nats, uniqueNamespace(label));
  try {
    await fn(s);
  } finally {
    await s.closeAll();
    await nats.dispose();
  }
}

class Services {
  private readonly open: Engine[] = [];
  constructor(
    readonly nats: Awaited<ReturnType<typeof startNats>>,
    readonly namespace: string,
  ) {}

  /** An engine of one service: these workflows, this key ring (none: undefined). */
  async engine(workflows: Parameters<typeof createEngine>[0]['workflows'], keyRing: string | undefined, logger = memoryLogger()): Promise<Engine> {
    const e = await createEngine({
      servers: this.nats.url,
      namespace: this.namespace,
      workflows,
      leaseTtlMs: 1_000,
      drainTimeoutMs: 500,
      logger,
      ...(keyRing ? { secrets: { keyRing } } : {}),
    });
    this.open.push(e);
    return e;
  }

  async close(e: Engine): Promise<void> {
    this.open.splice(this.open.indexOf(e), 1);
    await e.close();
  }

  async closeAll(): Promise<void> {
    for (const e of this.open.splice(0).reverse()) await e.close();
  }

  /** Stops everything, then reads the server's files: which of them hold each marker. */
  async scan(markers: readonly string[]): Promise<Map<string, string[]>> {
    await this.closeAll();
    await this.nats.stop();
    return scanFor(this.nats.storeDir, markers);
  }

  async deadLetters(): Promise<number> {
    const nc = await connect({ servers: this.nats.url });
    try {
      const dead = await (await jetstreamManager(nc)).streams.info(layout(this.namespace).deadLetterStream).catch(() => undefined);
      return dead?.state.messages ?? 0;
    } finally {
      await nc.close();
    }
  }
}

/** Waits for a vault instance to finish, having seen the pin in the clear. */
async function pinArrived(engine: Engine, def: typeof vault, id: string, timeoutMs = 15_000): Promise<void> {
  const done = await engine.waitFor(def, id, (i) => i.status === 'done', { timeoutMs });
  assert.deepEqual(done.output, { ok: true }, 'the vault machine saw the pin in the clear');
}

/** Stops everything and scans the server's files: no plaintext pin of these tags, and each one's control label found. */
async function assertPinsSealed(s: Services, tags: readonly string[]): Promise<void> {
  const found = await s.scan([...tags.map(pinOf), ...tags.map(labelOf)]);
  for (const t of tags) {
    assert.deepEqual(found.get(pinOf(t)), [], `plaintext pin of '${t}' found in the store: ${found.get(pinOf(t))!.join(', ')}`);
    assert.ok(found.get(labelOf(t))!.length > 0, `control '${labelOf(t)}' not found: the scan reads the store`);
  }
}

describe('secrets in a send to a workflow another service serves', () => {
  it('are sealed with the receiving workflow’s paths, which the sending engine learns from the namespace', () =>
    withServices('xsvcsecret', async (s) => {
      // Billing-like service first, then the sender: each registers only its own workflow.
      const receiver = await s.engine([vault], K1);
      const sender = await s.engine([teller], K1);
      const ids = ['a', 'b'];
      for (const id of ids) {
        await receiver.start(vault, { id: `v-${id}`, input: {} });
        await sender.start(teller, { id: `t-${id}`, input: { pin: pinOf(id) } });
        await sender.send(teller, `t-${id}`, { type: 'GO' });
      }
      for (const id of ids) {
        await pinArrived(receiver, vault, `v-${id}`);
      }
      await assertPinsSealed(s, ids);
    }));

  it('wait, warned with the fix, in an engine without the key ring, and go sealed once it has one', () =>
    withServices('xsvcnoring', async (s) => {
      const receiver = await s.engine([vault], K1);
      const logger = memoryLogger();
      const ringless = await s.engine([kiosk], undefined, logger);
      await receiver.start(vault, { id: 'v-k', input: {} });
      await ringless.start(kiosk, { id: 'k', input: { to: 'v-k', pin: pinOf('k') } });
      await ringless.send(kiosk, 'k', { type: 'GO' });
      const warning = await eventually(() => {
        const line = logger.lines.find((l) => l.includes("workflow 'vault' declares secrets"));
        assert.ok(line, logger.lines.join('\n'));
        return line;
      }, 15_000);
      assert.match(warning, /give this client or engine the key ring: secrets: \{ keyRing.*trying again until this engine has the key ring/);
      assert.ok(!logger.lines.some((l) => l.includes('giving up')), 'not given up');
      assert.equal((await receiver.get(vault, 'v-k'))!.status, 'running', 'nothing reached the vault');
      // The same service, restarted with the ring: the send goes, sealed.
      await s.close(ringless);
      await s.engine([kiosk], K1);
      await pinArrived(receiver, vault, 'v-k', 20_000);
      // The kiosk's own record, history and start hold the pin in the clear (it declares nothing); the vault's events do not.
      const files = (await s.scan([pinOf('k')])).get(pinOf('k'))!;
      assert.ok(
        files.some((f) => f.includes('_evt_kiosk_')),
        `the scan reads the store: ${files.join(', ')}`,
      );
      assert.deepEqual(
        files.filter((f) => f.includes('_evt_vault_')),
        [],
        "plaintext pin in the vault's events stream",
      );
    }));

  it('sealed with a key the receiving engine does not have yet wait for it, parked, and are applied once it has it', () =>
    withServices('xsvcnewkey', async (s) => {
      // The rotation order not followed: the sender made k2 primary before the receiver had it.
      const receiver = await s.engine([vault], K1);
      const sender = await s.engine([teller], `${K1},${K2}`);
      await receiver.start(vault, { id: 'v-n', input: {} });
      await sender.start(teller, { id: 't-n', input: { pin: pinOf('n') } });
      await sender.send(teller, 't-n', { type: 'GO' });
      const parked = await eventually(async () => {
        const v = (await receiver.get(vault, 'v-n'))!;
        assert.ok(v.parked, 'parked');
        return v;
      }, 15_000);
      assert.equal(parked.status, 'running');
      assert.match(parked.parked!, /key 'k2', which is not in the key ring/);
      assert.equal(await s.deadLetters(), 0, 'nothing dead-lettered');
      // The receiver gets the key: the event that waited is applied.
      await s.close(receiver);
      const restarted = await s.engine([vault], `${K1},${K2}`);
      await pinArrived(restarted, vault, 'v-n', 20_000);
      await eventually(async () => assert.equal((await restarted.get(vault, 'v-n'))!.parked, undefined, 'the parked note goes'), 5_000);
    }));

  it('an envelope a sender made up, passed on by an engine, is refused as unreadable: the receiver is not held up', () =>
    withServices('xsvcforged', async (s) => {
      const receiver = await s.engine([vault], K1);
      const sender = await s.engine([relayer], K1);
      await receiver.start(vault, { id: 'v-f', input: {} });
      await sender.start(relayer, { id: 'r', input: {} });
      const madeUp = { $enc: 'v1', k: 'nope', iv: 'AAAAAAAAAAAAAAAA', ct: 'AAAAAAAAAAAAAAAAAAAAAAAA' };
      await sender.send(relayer, 'r', { type: 'FWD', to: 'v-f', note: madeUp });
      await eventually(async () => assert.equal(await s.deadLetters(), 1, 'the made-up envelope is dead-lettered'), 15_000);
      const history = await receiver.history(vault, 'v-f');
      assert.match(history.at(-1)!.reason ?? '', /^\[secrets\.unreadable\] .*key 'nope', which is not in the key ring/);
      // The vault is not parked: the next event gets through.
      assert.equal((await receiver.get(vault, 'v-f'))!.parked, undefined);
      await sender.send(relayer, 'r', { type: 'FWD', to: 'v-f', note: pinOf('f') });
      await pinArrived(receiver, vault, 'v-f');
    }));

  it('an envelope under a key every ring has dropped, passed on by an engine, is refused too', () =>
    withServices('xsvcretired', async (s) => {
      // An engine once ran with k0; every ring has dropped it since.
      await s.close(await s.engine([vault], `k0:${randomBytes(32).toString('base64')},${K1}`));
      const receiver = await s.engine([vault], K1);
      const sender = await s.engine([relayer], K1);
      await receiver.start(vault, { id: 'v-o', input: {} });
      await sender.start(relayer, { id: 'r', input: {} });
      const retired = { $enc: 'v1', k: 'k0', iv: 'AAAAAAAAAAAAAAAA', ct: 'AAAAAAAAAAAAAAAAAAAAAAAA' };
      await sender.send(relayer, 'r', { type: 'FWD', to: 'v-o', note: retired });
      await eventually(async () => assert.equal(await s.deadLetters(), 1, 'the envelope is dead-lettered'), 15_000);
      assert.equal((await receiver.get(vault, 'v-o'))!.parked, undefined, 'not parked');
      await sender.send(relayer, 'r', { type: 'FWD', to: 'v-o', note: pinOf('o') });
      await pinArrived(receiver, vault, 'v-o');
    }));

  it('are sealed with the paths a newer version published, by an engine that registers only an older one', () =>
    withServices('xsvcolder', async (s) => {
      // An engine of the older deployment (vault v1: nothing secret) runs first; then one with v2,
      // which declares `pin` secret. Both can apply a v1 instance, as in a rolling deployment.
      const older = await s.engine([vaultPlain, teller], K1);
      const newer = await s.engine([vaultPlain, vaultSealed], K1);
      await newer.start(vaultPlain, { id: 'v-o', input: {} });
      await older.start(teller, { id: 't-o', input: { pin: pinOf('o') } });
      await older.send(teller, 't-o', { type: 'GO' });
      await pinArrived(newer, vaultPlain, 'v-o');
      await assertPinsSealed(s, ['o']);
    }));

  it('are sealed with the paths a newer version published, by a client given an older definition', () =>
    withServices('xsvcclient', async (s) => {
      const engine = await s.engine([vaultPlain, vaultSealed], K1);
      const client = await createClient({ servers: s.nats.url, namespace: s.namespace, workflows: [vaultPlain], secrets: { keyRing: K1 } });
      try {
        await client.start(vaultPlain, { id: 'v-c', input: {} });
        await client.send(vaultPlain, 'v-c', { type: 'PIN', pin: pinOf('c'), label: labelOf('c') });
      } finally {
        await client.close();
      }
      await pinArrived(engine, vaultPlain, 'v-c');
      await assertPinsSealed(s, ['c']);
    }));

  it("are sealed with the receiving workflow's paths in the sending instance's record too, while the send waits there", () =>
    withServices('xsvcoutbox', async (s) => {
      const receiver = await s.engine([vault], K1);
      const sender = await s.engine([cashier], K1);
      await receiver.start(vault, { id: 'v-w', input: {} });
      await sender.start(cashier, { id: 'c-w', input: { code: pinOf('w') } });
      await sender.send(cashier, 'c-w', { type: 'GO' });
      await pinArrived(receiver, vault, 'v-w');
      await assertPinsSealed(s, ['w']);
    }));

  it('leave a retried start of an instance started before they were published the same start', () =>
    withServices('xsvcrestart', async (s) => {
      const older = await s.engine([vaultPlain], K1);
      const first = await older.start(vaultPlain, { id: 'v-r', input: {} });
      // A newer version declares `pin` secret: the workflow now has secret paths.
      const newer = await s.engine([vaultPlain, vaultSealed], K1);
      await eventually(async () => {
        const again = await newer.start(vaultPlain, { id: 'v-r', input: {} });
        assert.equal(again.revision, first.revision, 'the existing instance, unchanged');
      }, 15_000);
    }));

  it('reach an engine without a key ring as an event it refuses as unreadable, not as envelopes for its machine', () =>
    withServices('xsvcringless', async (s) => {
      // A newer version declared `pin` (its engine published it and went); what is left has no ring.
      await s.close(await s.engine([vaultPlain, vaultSealed], K1));
      const ringless = await s.engine([vaultPlain], undefined);
      const client = await createClient({ servers: s.nats.url, namespace: s.namespace, workflows: [vaultPlain], secrets: { keyRing: K1 } });
      try {
        await client.start(vaultPlain, { id: 'v-u', input: {} });
        await client.send(vaultPlain, 'v-u', { type: 'PIN', pin: pinOf('u'), label: labelOf('u') });
      } finally {
        await client.close();
      }
      const refused = await eventually(async () => {
        const last = (await ringless.history(vaultPlain, 'v-u')).at(-1)!;
        assert.equal(last.kind, 'rejected');
        return last;
      }, 15_000);
      assert.match(refused.reason ?? '', /^\[secrets\.unreadable\] .*no key ring/);
      assert.equal((await ringless.get(vaultPlain, 'v-u'))!.status, 'running');
    }));

  it('need a key ring only when the event holds a value at one of the paths', () => {
    const codec = new SecretCodec(() => [], undefined);
    codec.learn('vault', ['pin']);
    assert.deepEqual(codec.sealEvent('vault', 'v', { type: 'PING' }), { type: 'PING' }, 'nothing at the paths: no ring needed (a timer, a reply)');
    assert.throws(() => codec.sealEvent('vault', 'v', { type: 'PIN', pin: 'p' }), KeyRingMissingError);
  });
});

/** A child that declares nothing: it keeps the card it is given as `pan`, and finishes. */
const cardChild = defineWorkflow({
  name: 'cardchild',
  version: 1,
  input: z.object({ card: z.string() }),
  events: {},
  machine: setup({ types: { input: {} as { card: string }, context: {} as { pan: string } } }).createMachine({
    context: ({ input }) => ({ pan: input.card }),
    initial: 'done',
    states: { done: { type: 'final' } },
    output: ({ context }) => ({ ok: context.pan.startsWith(`pinsecret-${RUN}-`) }),
  }),
});
/** A parent passing its card to `cardChild`: version 1 declares nothing, version 2 declares `card` secret. */
const cardParent = (version: number, secrets: string[]) =>
  defineWorkflow({
    name: 'cardparent',
    version,
    input: z.object({ card: z.string(), label: z.string() }),
    events: {},
    secrets,
    machine: setup({
      types: { input: {} as { card: string; label: string }, context: {} as { card: string; label: string } },
      actors: { kid: childWorkflow(cardChild) },
    }).createMachine({
      context: ({ input }) => input,
      initial: 'waiting',
      states: { waiting: { invoke: { id: 'k', src: 'kid', input: ({ context }) => ({ card: context.card }), onDone: 'done' } }, done: { type: 'final' } },
    }),
  });

describe('a child started by an engine that has an older version of its parent', () => {
  it("gets the values at the paths a newer version of the parent published as inherited secrets: sealed in the child's record", () =>
    withServices('xsvcchild', async (s) => {
      const [v1, v2] = [cardParent(1, []), cardParent(2, ['card'])];
      // The newer version's engine publishes `card` and goes; the older one applies alone.
      await s.close(await s.engine([v1, v2, cardChild], K1));
      const older = await s.engine([v1, cardChild], K1);
      await older.start(v1, { id: 'p-1', input: { card: pinOf('k'), label: labelOf('k') } });
      const done = await older.waitFor(v1, 'p-1', (i) => i.status === 'done', { timeoutMs: 15_000 });
      assert.equal(done.status, 'done');
      assert.deepEqual((await older.get(cardChild, 'p-1_k'))!.output, { ok: true }, 'the child saw the card in the clear');
      await assertPinsSealed(s, ['k']);
    }));
});

/** A child that declares `pin` secret and waits for it. */
const pinChild = defineWorkflow({
  name: 'pinchild',
  version: 1,
  input: z.object({}),
  events: { PIN: z.object({ pin: z.string() }) },
  secrets: ['pin'],
  machine: setup({ types: { events: {} as { type: 'PIN'; pin: string } } }).createMachine({
    initial: 'waiting',
    states: { waiting: { on: { PIN: 'done' } }, done: { type: 'final' } },
  }),
});
/** A parent that sends its child the pin a minute later: the send waits in its record's timers. */
const laterParent = defineWorkflow({
  name: 'laterparent',
  version: 1,
  input: z.object({ code: z.string() }),
  events: { GO: z.object({}) },
  secrets: ['code'],
  machine: setup({
    types: { input: {} as { code: string }, context: {} as { code: string }, events: {} as { type: 'GO' } },
    actors: { kid: childWorkflow(pinChild) },
  }).createMachine({
    context: ({ input }) => input,
    initial: 'waiting',
    states: {
      waiting: {
        invoke: { id: 'k', src: 'kid', input: {}, onDone: 'done' },
        on: { GO: { actions: sendTo('k', ({ context }) => ({ type: 'PIN', pin: context.code }), { delay: 60_000 }) } },
      },
      done: { type: 'final' },
    },
  }),
});

describe('an instance with a delayed send sealed for its receiver', () => {
  it('verifies: its replay reaches the pending send as stored', () =>
    withServices('xsvcverify', async (s) => {
      const engine = await s.engine([laterParent, pinChild], K1);
      await engine.start(laterParent, { id: 'l-1', input: { code: pinOf('v') } });
      await engine.send(laterParent, 'l-1', { type: 'GO' });
      await eventually(async () => assert.equal((await engine.get(laterParent, 'l-1'))!.timers.length, 1), 15_000);
      const report = await engine.verify(laterParent, 'l-1');
      assert.deepEqual(report.problems, []);
      assert.equal(report.ok, true);
    }));
});

describe('a send waiting in a record, sealed for its receiver', () => {
  const ring = createKeyRing({ keys: [{ id: 'k1', key: randomBytes(32).toString('base64') }] });
  /** A codec that knows these declared paths per workflow. */
  const codecOf = (declared: Record<string, string[]>): SecretCodec => new SecretCodec((wf) => declared[wf] ?? [], ring);
  /** A sender's record with a send to vault 'v-1' waiting in its outbox, and the same as a delayed send (a timer with `to`). */
  const recordWith = (event: Record<string, unknown>): InstanceRecord =>
    InstanceRecordSchema.parse({
      schemaVersion: RECORD_SCHEMA_VERSION,
      workflow: 'cashier',
      version: 1,
      id: 'c-1',
      status: 'running',
      snapshot: { context: { code: 'c' } },
      input: {},
      inputDigest: 'd',
      revision: 2,
      lastSeq: 2,
      createdAtMs: 0,
      updatedAtMs: 0,
      lastHistory: [],
      outbox: [{ key: 'k', type: OutboxKind.Send, params: { workflow: 'vault', id: 'v-1', event }, event: { type: 'GO' } }],
      timers: { t: { dueAtMs: 1, token: 2, event, to: { workflow: 'vault', id: 'v-1' } } },
    });
  const waiting = (r: InstanceRecord): unknown => (r.outbox[0]!.params as { event: unknown }).event;
  /** What the receiver sees: the send as delivered by `deliverer` (sealed for the inbox), opened by the receiver's codec. */
  const received = (deliverer: SecretCodec, receiver: SecretCodec, event: unknown): unknown =>
    receiver.openEvent('vault', 'v-1', JSON.parse(JSON.stringify(deliverer.sealEvent('vault', 'v-1', event))));

  // `receiverOnly`: the receiver's layer alone seals the secret, and it travels sealed even through
  // an engine that does not know the receiver's paths. Where the sender's layer seals it, such an
  // engine opens it and sends it as it would any event it sealed (an engine with a key ring follows
  // the published paths, so it does know them).
  const cases: Array<{ name: string; sender: string[]; receiver: string[]; event: Record<string, unknown>; receiverOnly?: boolean }> = [
    {
      name: 'a path only the receiver declares',
      sender: ['code'],
      receiver: ['pin'],
      event: { type: 'PIN', pin: 'p-secret', label: 'l' },
      receiverOnly: true,
    },
    { name: 'the same path on both sides', sender: ['pin'], receiver: ['pin'], event: { type: 'PIN', pin: 'p-secret', label: 'l' } },
    {
      name: "a sender's path inside the receiver's",
      sender: ['card.number'],
      receiver: ['card'],
      event: { type: 'PIN', card: { number: 'p-secret', cvc: 'c-secret' } },
    },
    {
      name: "a receiver's path inside the sender's",
      sender: ['card'],
      receiver: ['card.number'],
      event: { type: 'PIN', card: { number: 'p-secret', cvc: 'c-secret' } },
    },
  ];
  for (const c of cases) {
    it(`${c.name}: nothing in the clear, and delivered whole by an engine that knows the receiver's paths or not`, () => {
      const writer = codecOf({ cashier: c.sender, vault: c.receiver });
      const record = recordWith(c.event);
      const stored = JSON.stringify(writer.sealRecord(record));
      assert.doesNotMatch(stored, /[pc]-secret/, 'a secret of the send in the clear in the record');
      const parsed = InstanceRecordSchema.parse(JSON.parse(stored));
      const receiver = codecOf({ vault: c.receiver });
      // This engine, and one that knows nothing of the receiver (an older one, or one of another service).
      for (const loader of [writer, codecOf({ cashier: c.sender })]) {
        const opened = loader.openRecord(parsed);
        if (c.receiverOnly) assert.doesNotMatch(JSON.stringify(loader.sealEvent('vault', 'v-1', waiting(opened))), /p-secret/, 'delivered in the clear');
        assert.deepEqual(received(loader, receiver, waiting(opened)), c.event);
        assert.deepEqual(received(loader, receiver, opened.timers['t']!.event), c.event);
        // Written again as loaded (a later write of the same instance): still whole.
        assert.deepEqual(received(writer, receiver, waiting(writer.openRecord(writer.sealRecord(opened)))), c.event);
      }
    });
  }

  it("opens when the sender has since declared a path the receiver's layer sealed", () => {
    const event = { type: 'PIN', pin: 'p-secret' };
    const stored = JSON.parse(JSON.stringify(codecOf({ cashier: ['code'], vault: ['pin'] }).sealRecord(recordWith(event))));
    const later = codecOf({ cashier: ['code', 'pin'], vault: ['pin'] });
    const opened = later.openRecord(InstanceRecordSchema.parse(stored));
    assert.deepEqual(waiting(opened), event, "opened as the receiver's");
    assert.deepEqual(received(later, codecOf({ vault: ['pin'] }), waiting(opened)), event);
  });

  it('a process without a key ring loads a record in which nothing was sealed, although it learned paths for it', () => {
    // A client without a ring, say, that read the paths a newer version published.
    const ringless = new SecretCodec(() => [], undefined);
    ringless.learn('cashier', ['code']);
    const record = recordWith({ type: 'PING' });
    assert.deepEqual(ringless.openRecord(record), record);
    assert.throws(() => ringless.sealRecord(record), KeyRingMissingError, 'a value at a path needs the ring to be written');
  });
});
