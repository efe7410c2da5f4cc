// What a target remembers of the sends it applied (engine/gate/received.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_SENDERS, Received, sendLogicalId, sendOf } from '../../engine/gate/received.js';
import { rawEvent } from '../../engine/gate/event-gate.js';
import { EngineSigner } from '../../engine/security/signer.js';

describe('received sends', () => {
  it('skip a send at or before its sender’s newest of the same instance (born), in revision, index order', () => {
    const r = new Received({ 'w.a': [5, 10, 1] });
    assert.equal(r.seen('w.a', [5, 10, 1]), true, 'the same send');
    assert.equal(r.seen('w.a', [5, 9, 3]), true, 'an earlier revision');
    assert.equal(r.changed, undefined, 'nothing changed');
    assert.equal(r.seen('w.a', [5, 10, 2]), false, 'the next index');
    assert.equal(r.seen('w.a', [5, 10, 2]), true, 'the same one again, in the same batch');
    assert.equal(r.seen('w.a', [7, 1, 0]), false, 'an instance started again under the id');
    assert.equal(r.seen('w.a', [2, 1, 0]), false, 'and again, its born smaller (its partition stream made again)');
    assert.equal(r.seen('w.a', [2, 1, 0]), true);
    assert.equal(r.seen('w.a', [7, 1, 0]), false, 'another born is never taken for a duplicate');
    assert.equal(r.seen('w.b', [0, 3, 0]), false, 'another sender');
    assert.deepEqual(r.changed, { 'w.b': [0, 3, 0], 'w.a': [7, 1, 0] });
  });

  it('keep the senders heard from last, at most MAX_SENDERS', () => {
    const stored: Record<string, [number, number, number]> = {};
    for (let i = 0; i < MAX_SENDERS; i++) stored[`w.s${i}`] = [1, 1, 0];
    const r = new Received(stored);
    assert.equal(r.seen('w.s0', [1, 2, 0]), false, 's0 heard from again: now the newest');
    assert.equal(r.seen('w.new', [1, 1, 0]), false);
    const kept = Object.keys(r.changed!);
    assert.equal(kept.length, MAX_SENDERS);
    assert.ok(!kept.includes('w.s1'), 'the one heard from longest ago goes');
    assert.ok(kept.includes('w.s0') && kept.includes('w.new'));
    assert.equal(Object.keys(stored).length, MAX_SENDERS, 'the stored record is not changed in place');
  });

  it('take the sender from the header only when the message id was keyed from it', async () => {
    const signer = new EngineSigner(async () => Buffer.alloc(32, 7));
    await signer.ready();
    const key = 'pinger.p1@12.4.0';
    const headers = (send: string, logical: string) => {
      const msgId = signer.messageId(logical);
      const h = signer.headers('ns.evt.0.counter.a', msgId, new Uint8Array());
      h.set('Nats-Msg-Id', msgId); // as JetStream stores it
      h.set('Jetstate-Send', send);
      return h;
    };
    const at = (h: ReturnType<typeof headers>) => sendOf(signer, rawEvent(1, 'ns.evt.0.counter.a', new Uint8Array(), Date.now(), h));
    assert.deepEqual(at(headers(key, sendLogicalId(key))), { sender: 'pinger.p1', at: [12, 4, 0] });
    assert.equal(at(headers('pinger.p1@12.9.0', sendLogicalId(key))), undefined, 'a header that claims another send');
    assert.equal(at(headers('not a key', sendLogicalId('not a key'))), undefined, 'a malformed key');
    assert.deepEqual(at(headers('old.p2.3.1', sendLogicalId('old.p2.3.1'))), { sender: 'old.p2', at: [0, 3, 1] }, 'an instance without born');
  });
});
