/**
 * `reencrypt` racing an engine's delete of an instance: reencrypt reads an instance's history,
 * then publishes every message again, resealed. A delete in between (it purges the history) must
 * stay a delete: the old instance's history must not come back, nor show (with its secrets) in an
 * instance started again under the id. The delete is run between the read and the first publish
 * by a hook on the rotating client's own JetStream client; the server and the clients are real.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { createClient, type Client } from '../../engine/client.js';
import { defineWorkflow } from '../../engine/define/definition.js';
import { createEngine, type Engine } from '../../engine/engine.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';

const key = (): string => randomBytes(32).toString('base64');
const K1 = `k1:${key()}`;
const K2 = `k2:${key()}`;

const note = defineWorkflow({
  name: 'note',
  version: 1,
  input: z.object({ s: z.string(), gen: z.string() }),
  events: { FINISH: z.object({ tag: z.string() }) },
  secrets: ['s'],
  machine: setup({ types: { context: {} as { s: string; gen: string }, input: {} as { s: string; gen: string } } }).createMachine({
    context: ({ input }) => input,
    initial: 'open',
    states: { open: { on: { FINISH: 'done' } }, done: { type: 'final' } },
  }),
});

describe('reencrypt and a delete at the same time', { timeout: 90_000 }, () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine | undefined;
  let rotator: Client | undefined;
  let user: Client | undefined;
  const namespace = uniqueNamespace('reencdel');

  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await rotator?.close().catch(() => {});
    await user?.close().catch(() => {});
    await engine?.close().catch(() => {});
    await nats?.dispose();
  });

  it('a delete during reencrypt stays deleted: the history does not come back, nor show in a new instance under the id', async () => {
    engine = await createEngine({ servers: nats.url, namespace, workflows: [note], secrets: { keyRing: `${K2},${K1}` }, leaseTtlMs: 1_000 });
    // Step 1 of the rotation: every process knows k2, k1 still primary.
    user = await createClient({ servers: nats.url, namespace, secrets: { keyRing: `${K2},${K1}` } });
    await user.start(note, { id: 'a', input: { s: 'secret-old', gen: 'old' } });
    await user.send(note, 'a', { type: 'FINISH', tag: 'old-finish' });
    await eventually(async () => assert.equal((await user!.get(note, 'a'))?.status, 'done'), 15_000);
    await eventually(async () => assert.equal((await user!.history(note, 'a')).length, 2), 15_000);

    rotator = await createClient({ servers: nats.url, namespace, secrets: { keyRing: `${K1},${K2}` } });
    // Interleave deterministically: the engine deletes the instance after reencrypt read its history
    // and before it publishes the resealed copies.
    const rt = (rotator as unknown as { rt: { js: { publish: (...a: unknown[]) => Promise<unknown> } } }).rt;
    const real = rt.js.publish.bind(rt.js);
    let raced = false;
    rt.js.publish = async (subject: unknown, ...rest: unknown[]) => {
      if (!raced && typeof subject === 'string' && subject.includes('.hist.note.a')) {
        raced = true;
        await user!.delete(note, 'a');
        await eventually(async () => assert.equal(await user!.get(note, 'a'), null), 15_000);
      }
      return real(subject, ...rest);
    };
    const report = await rotator.reencrypt(note);
    rt.js.publish = real;
    assert.ok(raced, 'reencrypt rewrote the history');
    assert.equal(await user.get(note, 'a'), null, 'instance deleted');

    const afterDelete = await user.history(note, 'a');
    // The same id started again: a new instance, with its own history only.
    await user.start(note, { id: 'a', input: { s: 'secret-new', gen: 'new' } });
    const fresh = await eventually(async () => {
      const h = await user!.history(note, 'a');
      assert.ok(h.length >= 1);
      return h;
    }, 15_000);
    const summary = fresh.map((e) => ({ kind: e.kind, revision: e.revision, event: e.event }));
    assert.deepEqual(
      summary.map((e) => (e.event as { input?: { gen?: string } }).input?.gen ?? (e.event as { tag?: string }).tag),
      ['new'],
      `new instance's history: ${JSON.stringify(summary)}`,
    );
    assert.deepEqual(
      { afterDelete: afterDelete.length, report: report.failed },
      { afterDelete: 0, report: [] },
      `history of the deleted instance came back after reencrypt: ${JSON.stringify(afterDelete.map((e) => e.event))}`,
    );
  });
});
