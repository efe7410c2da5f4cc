/**
 * The engine's own JetStream publisher (record writes) gives the outcomes nats.js gives for the
 * same publish, against a real nats-server: acknowledgements, compare-and-set conflicts, nobody
 * answering, no answer in time, a permission refused, a closed publisher.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { errors as coreErrors, type NatsConnection } from '@nats-io/nats-core';
import { AckPublisher } from '../../engine/store/ack-publisher.js';
import { isCasConflict, isNoResponders, isTransient, permissionViolation } from '../../engine/store/nats-errors.js';
import { startNats } from '../helpers.js';

const enc = new TextEncoder();

describe('AckPublisher', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let nc: NatsConnection;
  let acks: AckPublisher;

  before(async () => {
    nats = await startNats({
      extraConfig: `authorization { users: [ { user: app, password: pw, permissions: { publish: { allow: [">"], deny: ["forbidden.>"] }, subscribe: { allow: [">"] } } } ] }`,
    });
    nc = await connect({ servers: nats.url, user: 'app', pass: 'pw' });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'acks', subjects: ['acks.>'], storage: 'file' as never });
    acks = new AckPublisher(nc, undefined, 2_000);
  });

  after(async () => {
    acks.close();
    await nc.close();
    await nats.dispose();
  });

  it('acknowledges with the stream and sequence, and marks a duplicate message id', async () => {
    const first = await acks.publish('acks.a', enc.encode('1'), { msgID: 'm1' });
    assert.equal(first.stream, 'acks');
    assert.equal(first.duplicate, false);
    const again = await acks.publish('acks.a', enc.encode('1'), { msgID: 'm1' });
    assert.equal(again.seq, first.seq);
    assert.equal(again.duplicate, true);
  });

  it('compare-and-set on the subject: the expected sequence wins, a stale one is a conflict', async () => {
    const a = await acks.publish('acks.k', enc.encode('a'));
    const b = await acks.publish('acks.k', enc.encode('b'), { expectLastSubjectSequence: a.seq });
    assert.ok(b.seq > a.seq);
    const stale = await acks.publish('acks.k', enc.encode('c'), { expectLastSubjectSequence: a.seq }).catch((e: unknown) => e);
    assert.ok(isCasConflict(stale), `expected a compare-and-set conflict, got ${String(stale)}`);
  });

  it('a subject no stream takes fails as nobody answering, at once', async () => {
    const e = await acks.publish('nostream.x', enc.encode('x')).catch((x: unknown) => x);
    assert.ok(isNoResponders(e), `expected no responders, got ${String(e)}`);
  });

  it('an answer that never comes is a timeout', async () => {
    const silent = nc.subscribe('silent.x', { callback: () => {} });
    await nc.flush();
    const quick = new AckPublisher(nc, undefined, 300);
    const e = await quick.publish('silent.x', enc.encode('x')).catch((x: unknown) => x);
    assert.ok(e instanceof coreErrors.TimeoutError, `expected a timeout, got ${String(e)}`);
    assert.ok(isTransient(e));
    quick.close();
    silent.unsubscribe();
  });

  it('a publish the server refuses for permissions fails with the violation, not a timeout', async () => {
    const slow = new AckPublisher(nc, undefined, 60_000);
    const e = await slow.publish('forbidden.x', enc.encode('x')).catch((x: unknown) => x);
    assert.equal(permissionViolation(e)?.subject, 'forbidden.x');
    slow.close();
  });

  it('once closed, what waits and what comes fails', async () => {
    const silent = nc.subscribe('silent.y', { callback: () => {} });
    await nc.flush();
    const p = new AckPublisher(nc, undefined, 60_000);
    const waiting = p.publish('silent.y', enc.encode('x')).catch((x: unknown) => x);
    p.close();
    assert.ok((await waiting) instanceof coreErrors.ClosedConnectionError);
    assert.ok((await p.publish('acks.z', enc.encode('x')).catch((x: unknown) => x)) instanceof coreErrors.ClosedConnectionError);
    silent.unsubscribe();
  });
});
