// A start for an id that exists is compared with the instance's input to tell a retry (the
// existing instance) from a conflict. Its secret fields must not take part: a sender allowed to
// start the workflow, who can read the instance's other fields, would otherwise test guesses of a
// secret (a PIN, part of a card number) by starting again and seeing "exists" or "conflict".
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { createEngine, defineWorkflow, ErrorCode, JetstateError } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const account = defineWorkflow({
  name: 'account',
  version: 1,
  input: z.object({ owner: z.string(), pin: z.string() }),
  events: {},
  secrets: ['pin'],
  machine: setup({}).createMachine({ initial: 'open', states: { open: {} } }),
});

describe('a start for an existing instance with secret fields', () => {
  const suite = natsForSuite();

  it('answers the same whatever its secret fields hold, and still refuses another non-secret input', async () => {
    const namespace = uniqueNamespace('oracle');
    const keyRing = `k1:${randomBytes(32).toString('base64')}`;
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [account], secrets: { keyRing }, logger: memoryLogger() });
    try {
      const first = await engine.start(account, { id: 'a1', input: { owner: 'ann', pin: '4711' } });
      // A right guess and a wrong one: the same answer, the existing instance.
      const right = await engine.start(account, { id: 'a1', input: { owner: 'ann', pin: '4711' } });
      const wrong = await engine.start(account, { id: 'a1', input: { owner: 'ann', pin: '0000' } });
      assert.equal(right.revision, first.revision);
      assert.equal(wrong.revision, first.revision);
      // Another owner is another request: a conflict.
      await assert.rejects(
        engine.start(account, { id: 'a1', input: { owner: 'bob', pin: '4711' } }),
        (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.InstanceConflict,
      );
    } finally {
      await engine.close();
    }
  });
});
