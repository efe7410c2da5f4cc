// A verify that finds a mismatch reports the replayed and the stored snapshots; with the key ring
// (which the replay needs) they were opened, so `jetstate verify` printed a card number without
// --reveal, in its text and its --json. The report now shows secret paths redacted unless asked.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { createClient, createEngine, defineWorkflow, type Engine } from '../../engine/index.js';
import { memoryLogger, startNats, uniqueNamespace } from '../helpers.js';

const CARD = '4111111111111111';
const KEYS = `k1:${randomBytes(32).toString('base64')}`;

/** Keeps a card in its context; NOTE adds `step` to n (the "changed" definition adds 2: same name and version). */
function vault(step: number) {
  return defineWorkflow({
    name: 'vault',
    version: 1,
    input: z.object({ card: z.object({ number: z.string() }) }),
    events: { NOTE: z.object({}) },
    secrets: ['card.number'],
    machine: setup({ types: { context: {} as { card: { number: string }; n: number }, input: {} as { card: { number: string } } } }).createMachine({
      context: ({ input }) => ({ card: input.card, n: 0 }),
      on: { NOTE: { actions: assign({ n: ({ context }) => context.n + step }) } },
    }),
  });
}

const original = vault(1);
const changed = vault(2);

describe('verify with secrets', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  const namespace = uniqueNamespace('verifysecret');
  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [original], secrets: { keyRing: KEYS }, logger: memoryLogger() });
    await engine.start(original, { id: 'v1', input: { card: { number: CARD } } });
    await engine.send(original, 'v1', { type: 'NOTE' });
    await engine.waitFor(original, 'v1', (i) => i.context.n === 1, { timeoutMs: 10_000 });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('reports a mismatch with the secret paths redacted, and shows them only when asked', async () => {
    const client = await createClient({ servers: nats.url, namespace, workflows: [changed], secrets: { keyRing: KEYS } });
    try {
      const report = await client.verify(changed, 'v1');
      assert.equal(report.ok, false);
      const text = report.problems.join('\n');
      assert.match(text, /snapshot differs/);
      assert.ok(!text.includes(CARD), `the card number is not in the report: ${text}`);
      assert.match(text, /\[redacted\]/);
      const revealed = await client.verify(changed, 'v1', { reveal: true });
      assert.ok(revealed.problems.join('\n').includes(CARD), 'asked, the report shows it');
    } finally {
      await client.close();
    }
  });
});
