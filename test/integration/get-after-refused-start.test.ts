// A start the engine refuses (here its input, which the sender's looser definition let through)
// creates nothing: get() says so at once. It showed the instance pending until the partition's
// checkpoint passed the start (a lease renewal later: up to a third of `leaseTtlMs`).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { createClient, createEngine, defineWorkflow, JetstateError } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const machine = setup({}).createMachine({ initial: 'open', states: { open: {} } });
/** What the engine runs: an amount is required. */
const strict = defineWorkflow({ name: 'invoice', version: 1, input: z.object({ amount: z.number() }), events: {}, machine });
/** What an older sender was built with: any object. */
const loose = defineWorkflow({ name: 'invoice', version: 1, input: z.object({}).passthrough(), events: {}, machine });

describe('get() after a start the engine refused', () => {
  const suite = natsForSuite();

  it('finds nothing, not a pending instance', async () => {
    const namespace = uniqueNamespace('getrefused');
    // The default lease TTL: its checkpoint is renewed every 10 s.
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [strict], logger: memoryLogger() });
    const sender = await createClient({ servers: suite.nats.url, namespace, workflows: [loose], logger: memoryLogger() });
    try {
      await assert.rejects(sender.start(loose, { id: 'i-1', input: { amount: 'ten' } }), (e: unknown) => e instanceof JetstateError, 'the engine refuses it');
      assert.equal(await sender.get(loose, 'i-1'), null, 'nothing was created, and nothing waits');
      assert.equal(await engine.get(strict, 'i-1'), null);
      const h = await engine.history(strict, 'i-1');
      assert.deepEqual(
        h.map((e) => e.kind),
        ['rejected'],
        'the refusal is in the history',
      );
    } finally {
      await sender.close();
      await engine.close();
    }
  });
});
