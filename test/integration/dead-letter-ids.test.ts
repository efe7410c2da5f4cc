// A dead letter's message id tells apart two different events read at the same sequence of one
// stream (a stream deleted and made again starts at 1): the second is kept, not taken for a
// duplicate of the first. The same event dead-lettered twice (a retry) is kept once.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createEngine, type EngineExtension, type ExtensionHost } from '../../engine/index.js';
import { counter } from '../counter-workflow.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('dead-letter ids', () => {
  const suite = natsForSuite();

  it('keep two events of one stream sequence apart, and a retried one once', async () => {
    let host!: ExtensionHost;
    const probe: EngineExtension = { name: 'probe', start: async (h) => void (host = h), stop: async () => {} };
    const namespace = uniqueNamespace('dlqids');
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [counter], logger: memoryLogger(), extensions: [probe] });
    try {
      const letter = { workflow: 'counter', id: 'c1', stream: 'SOME_STREAM', subject: 'some.subject', seq: 1, reason: '[test] refused' };
      await host.deadLetter({ ...letter, data: new TextEncoder().encode('{"type":"FIRST"}') });
      await host.deadLetter({ ...letter, data: new TextEncoder().encode('{"type":"FIRST"}') }); // its retry
      // The stream made anew: another event at sequence 1.
      await host.deadLetter({ ...letter, data: new TextEncoder().encode('{"type":"SECOND"}') });
      const letters = await engine.deadLetters();
      assert.deepEqual(
        letters.map((l) => l.size),
        [16, 17],
      );
    } finally {
      await engine.close();
    }
  });
});
