// history() read while `reencrypt` rewrites the instance's history (it publishes copies, then
// purges the old messages): the read must return every entry, from the old messages or the copies.
// The rewrite is run between the reader's first look at the subject and its reading of it, by a
// hook on the reader's own JetStream manager; the server, the streams and both clients are real.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { createClient, createEngine, defineWorkflow, type Client, type Engine } from '../../engine/index.js';
import { startNats, uniqueNamespace } from '../helpers.js';

const k1 = `k1:${randomBytes(32).toString('base64')}`;
const k2 = `k2:${randomBytes(32).toString('base64')}`;

const notes = defineWorkflow({
  name: 'notes',
  version: 1,
  input: z.object({ text: z.string() }),
  events: { NOTE: z.object({ text: z.string() }), END: z.object({}) },
  secrets: ['text'],
  machine: setup({
    types: { input: {} as { text: string }, context: {} as { text: string; n: number }, events: {} as { type: 'NOTE'; text: string } | { type: 'END' } },
  }).createMachine({
    id: 'notes',
    initial: 'open',
    context: ({ input }) => ({ text: input.text, n: 0 }),
    states: {
      open: { on: { NOTE: { actions: assign({ text: ({ event }) => event.text, n: ({ context }) => context.n + 1 }) }, END: 'closed' } },
      closed: { type: 'final' },
    },
  }),
});

describe('history() while reencrypt rewrites the history', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let reader: Client;
  let rewriter: Client;
  const namespace = uniqueNamespace('hre');
  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [notes], secrets: { keyRing: k1 }, leaseTtlMs: 1_000 });
    reader = await createClient({ servers: nats.url, namespace, workflows: [notes], secrets: { keyRing: `${k1},${k2}` } });
    rewriter = await createClient({ servers: nats.url, namespace, workflows: [notes], secrets: { keyRing: `${k1},${k2}` } });
  });
  after(async () => {
    await reader?.close();
    await rewriter?.close();
    await engine?.close();
    await nats?.dispose();
  });

  it('returns every entry, once, in order', async () => {
    await engine.start(notes, { id: 'n-1', input: { text: 'secret-0' } });
    for (let i = 1; i <= 5; i++) {
      await new Promise((r) => setTimeout(r, 250)); // each write its own history message
      await engine.send(notes, 'n-1', { type: 'NOTE', text: `secret-${i}` });
    }
    await engine.send(notes, 'n-1', { type: 'END' });
    await engine.waitFor(notes, 'n-1', (i) => i.status === 'done', { timeoutMs: 5_000 });
    await new Promise((r) => setTimeout(r, 300));
    const before = await reader.history(notes, 'n-1');
    assert.equal(before.length, 7);
    // Interleave: the reader has read the subject's last sequence, then reencrypt runs.
    const jsm = (reader as unknown as { rt: { jsm: { streams: { getMessage: (...a: unknown[]) => Promise<unknown> } } } }).rt.jsm;
    const orig = jsm.streams.getMessage.bind(jsm.streams);
    let once = true;
    jsm.streams.getMessage = async (...a: unknown[]) => {
      const r = await orig(...a);
      if (once) {
        once = false;
        const rep = await rewriter.reencrypt(notes);
        assert.ok(rep.history.messages > 0, `the history was rewritten: ${JSON.stringify(rep)}`);
      }
      return r;
    };
    const during = await reader.history(notes, 'n-1');
    jsm.streams.getMessage = orig;
    assert.deepEqual(
      during.map((e) => e.revision),
      before.map((e) => e.revision),
    );
  });
});
