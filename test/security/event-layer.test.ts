// The event layer under a sender who may publish to the event subjects: it cannot inject an
// identity, replay or re-address an engine's signed event, suppress an engine event by taking
// its message id first, or make someone else's send() a silent "duplicate".
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { createEngine, defineWorkflow, ErrorCode, identityOf, JetstateError, partitionOf, shortHash, type Engine } from '../../engine/internal.js';
import { layout } from '../../engine/internal.js';
import { EngineSigner } from '../../engine/security/signer.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';

interface Ctx {
  approvedBy: string | null;
  n: number;
}

/** A loose payload schema (any fields pass), a guard over the verified identity, a counter, a timer. */
const approval = defineWorkflow({
  name: 'approval4',
  version: 1,
  input: z.object({}),
  events: { APPROVE: z.looseObject({}), ADD: z.object({ k: z.number() }), PING: z.object({}) },
  machine: setup({ types: { context: {} as Ctx } }).createMachine({
    id: 'approval4',
    initial: 'waiting',
    context: { approvedBy: null, n: 0 },
    states: {
      waiting: {
        after: { 400: 'timedOut' },
        on: {
          APPROVE: {
            guard: ({ event }) => identityOf(event)?.roles.includes('approver') === true,
            target: 'approved',
            actions: assign({ approvedBy: ({ event }) => identityOf(event)!.subject }),
          },
          ADD: { actions: assign({ n: ({ context, event }) => context.n + event.k }) },
          PING: {},
        },
      },
      approved: { on: { ADD: { actions: assign({ n: ({ context, event }) => context.n + event.k }) } } },
      timedOut: { on: { ADD: { actions: assign({ n: ({ context, event }) => context.n + event.k }) } } },
    },
  }),
});

describe('the event layer against a sender with publish rights', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let nc: NatsConnection;
  let js: JetStreamClient;
  let signer: EngineSigner;
  const namespace = uniqueNamespace('evtlayer');
  const subject = (id: string): string => layout(namespace).eventSubject(partitionOf(approval.name, id, engine.partitions), approval.name, id);

  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [approval], leaseTtlMs: 1_000 });
    nc = await connect({ servers: nats.url });
    js = jetstream(nc);
    const key = Buffer.from((await (await new Kvm(js).open(`${namespace}_control`)).get('auth.engine-key'))!.value);
    signer = new EngineSigner(async () => key);
    await signer.ready();
  });
  after(async () => {
    await engine?.close();
    await nc?.close();
    await nats?.dispose();
  });

  const history = async (id: string): Promise<Array<{ kind: string; seq: number; reason?: string | undefined; identity?: unknown }>> =>
    engine.history(approval, id);

  it('a $identity in a payload never reaches a guard: removed, through send() and raw', async () => {
    await engine.start(approval, { id: 'inj', input: {} });
    const forged = { method: 'oidc', subject: 'bob', issuer: 'https://idp.example', roles: ['approver'] };
    await engine.send(approval, 'inj', { type: 'APPROVE', $identity: forged } as never);
    await js.publish(subject('inj'), JSON.stringify({ type: 'APPROVE', $identity: forged }));
    await engine.send(approval, 'inj', { type: 'PING' });
    const inst = await engine.waitFor(approval, 'inj', (s) => s.revision === 4, { timeoutMs: 5_000 });
    assert.deepEqual(inst.value, 'waiting', 'the guard never saw an approver');
    assert.equal((inst.context as Ctx).approvedBy, null);
    for (const h of await history('inj')) assert.equal(h.identity, undefined, 'no identity recorded for anonymous events');
  });

  it('an engine signature is bound to its message id and time: re-addressed, re-keyed or stale copies are refused', async () => {
    await engine.start(approval, { id: 'sig', input: {} });
    const data = new TextEncoder().encode(JSON.stringify({ type: 'ADD', k: 5 }));
    // A genuine engine-signed event (as another instance's send would be): applied once.
    const msgID = `e.${randomBytes(8).toString('hex')}`;
    const headers = signer.headers(subject('sig'), msgID, data);
    const first = await js.publish(subject('sig'), data, { msgID, headers });
    // The same message again (a replay within the duplicate window): not even stored.
    const again = await js.publish(subject('sig'), data, { msgID, headers });
    assert.deepEqual([again.seq, again.duplicate], [first.seq, true]);
    // The same signature under another message id, or on another instance's subject: forged.
    const other = await js.publish(subject('sig'), data, { msgID: `${msgID}x`, headers });
    await engine.start(approval, { id: 'sig-other', input: {} });
    const moved = await js.publish(subject('sig-other'), data, { msgID: `${msgID}y`, headers: signer.headers(subject('sig'), `${msgID}y`, data) });
    // A signature made long before the stream accepted it: a replay after the window.
    const staleId = `e.${randomBytes(8).toString('hex')}`;
    const stale = await js.publish(subject('sig'), data, {
      msgID: staleId,
      headers: signer.headers(subject('sig'), staleId, data, undefined, Date.now() - 10 * 60_000),
    });
    await eventually(async () => {
      const h = await history('sig');
      const bySeq = new Map(h.map((e) => [e.seq, e]));
      assert.equal(bySeq.get(first.seq)?.kind, 'event');
      assert.match(bySeq.get(other.seq)?.reason ?? '', /^\[forged\]/);
      assert.match(bySeq.get(stale.seq)?.reason ?? '', /^\[replayed\]/);
    });
    await eventually(async () => assert.match((await history('sig-other')).find((e) => e.seq === moved.seq)?.reason ?? '', /^\[forged\]/));
    assert.equal(((await engine.get(approval, 'sig'))!.context as Ctx).n, 5, 'applied exactly once');
    assert.equal(((await engine.get(approval, 'sig-other'))!.context as Ctx).n, 0);
  });

  it("an engine event's message id cannot be taken first: junk under the old, predictable id does not stop a timer", async () => {
    await engine.start(approval, { id: 'tmr', input: {} });
    const record = (await (await new Kvm(js).open(engine.recordBucketOf(approval.name, 'tmr'))).get(`${approval.name}.tmr`))!.json<{
      timers: Record<string, { token: number }>;
    }>();
    const [timerId, timer] = Object.entries(record.timers)[0]!;
    // What the id of this timer's fire used to be, computable from the record.
    await js.publish(subject('tmr'), '{"type":"PING"}', { msgID: `fire.${approval.name}.tmr.${timer.token}.${shortHash(timerId)}` });
    const fired = await engine.waitFor(approval, 'tmr', (s) => s.matches('timedOut'), { timeoutMs: 5_000 });
    assert.equal(fired.revision, 3, 'the PING and the timer');
  });

  it('a send whose idempotency key another sender took first fails loudly instead of passing as a duplicate', async () => {
    await engine.start(approval, { id: 'dup', input: {} });
    const key = `pay-${randomBytes(4).toString('hex')}`;
    await js.publish(subject('dup'), '{"type":"ADD","k":1000}', { msgID: key });
    await assert.rejects(
      engine.send(approval, 'dup', { type: 'ADD', k: 1 }, { idempotencyKey: key }),
      (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.DuplicateConflict,
    );
    // The same send retried with its own key is an ordinary duplicate.
    const mine = `pay-${randomBytes(4).toString('hex')}`;
    const a = await engine.send(approval, 'dup', { type: 'ADD', k: 1 }, { idempotencyKey: mine });
    const b = await engine.send(approval, 'dup', { type: 'ADD', k: 1 }, { idempotencyKey: mine });
    assert.deepEqual([b.seq, b.duplicate], [a.seq, true]);
  });
});
