/**
 * An instance whose step keeps failing (here: its state write throws, as a store that refuses it
 * would) is retried with backoff, and said once, not on every retry: an outage, or an engine
 * that waits for its key ring, would otherwise fill the log with the same line every 2 s per
 * instance. When it goes through, the instance goes on as if nothing happened.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createEngine, type Engine } from '../../engine/index.js';
import { memoryLogger, startNats, uniqueNamespace } from '../helpers.js';
import { counter } from '../counter-workflow.js';

describe('an instance whose step keeps failing', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine | undefined;
  before(async () => (nats = await startNats()));
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('is retried, said once while the same failure lasts, and goes on once it passes', { timeout: 60_000 }, async () => {
    const logger = memoryLogger();
    let failing = true;
    let attempts = 0;
    engine = await createEngine({
      servers: nats.url,
      namespace: uniqueNamespace('retrywarn'),
      workflows: [counter],
      logger,
      testHooks: {
        beforeStateWrite: (key, revision) => {
          if (key !== 'counter.c-1' || revision < 2 || !failing) return;
          attempts++;
          throw new Error('the store refused the write');
        },
      },
    });
    await engine.start(counter, { id: 'c-1', input: { label: 'x' } });
    await engine.send(counter, 'c-1', { type: 'ADD', k: 2 });
    // Backoff from 100 ms up to 2 s: about seven attempts in 6 s.
    await new Promise((r) => setTimeout(r, 6_000));
    failing = false;
    const done = await engine.waitFor(counter, 'c-1', (i) => i.context.n === 2, { timeoutMs: 15_000 });
    assert.equal(done.revision, 2);
    assert.ok(attempts >= 4, `retried (${attempts} attempts)`);
    const said = logger.lines.filter((l) => l.includes('the store refused the write'));
    assert.equal(said.length, 1, `said once, not per attempt:\n${said.join('\n')}`);
    assert.match(said[0]!, /instance 'counter\.c-1': the store refused the write; retrying/);
  });
});
