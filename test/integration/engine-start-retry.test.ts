// An engine's start meets JetStream that cannot answer yet (a leader being elected, a node
// restarting) only now and then, and only on a cluster under load; here an extension's own start
// meets the same kind of error from the real NATS client (a request no one answers), on demand.
// The start is tried again as a whole, from the beginning, after closing what was started; a
// lasting error is thrown at once; a transient one that outlasts openTimeoutMs is thrown then.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createClient, createEngine, type EngineExtension } from '../../engine/index.js';
import { toggle } from '../toggle-workflow.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('an engine whose start fails partway', () => {
  const suite = natsForSuite();

  /** An extension whose start asks a service no one serves while `unanswered(n)` says so (n: this start, from 1). */
  const flaky = (unanswered: (n: number) => boolean, lasting?: Error) => {
    const calls = { starts: 0, stops: 0 };
    const extension: EngineExtension = {
      name: 'flaky',
      start: async () => {
        calls.starts++;
        if (lasting) throw lasting;
        if (unanswered(calls.starts)) await suite.nc.request(`${uniqueNamespace('nobody')}.listens`, '', { timeout: 1_000 });
      },
      stop: async () => {
        calls.stops++;
      },
    };
    return { extension, calls };
  };

  it('a transient failure: the whole start is tried again after closing the first try, and the engine then serves', async () => {
    const namespace = uniqueNamespace('startretry');
    const logger = memoryLogger();
    const { extension, calls } = flaky((n) => n === 1);
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [toggle], extensions: [extension], logger, openTimeoutMs: 20_000 });
    const client = await createClient({ servers: suite.nats.url, namespace, workflows: [toggle] });
    try {
      assert.deepEqual(calls, { starts: 2, stops: 1 }, 'the first try was stopped before the second');
      assert.ok(
        logger.lines.some((l) => /namespace '.*': waiting for JetStream to start the engine \(.*no responders.*openTimeoutMs/i.test(l)),
        logger.lines.join('\n'),
      );
      await client.start(toggle, { id: 't1', input: {} });
      await client.send(toggle, 't1', { type: 'FLIP' });
      const on = await client.waitFor(toggle, 't1', (i) => i.value === 'on', { timeoutMs: 10_000 });
      assert.equal(on.revision, 2, 'the start and the FLIP, each applied once');
      assert.equal(engine.status().owned.length, engine.status().partitions, 'the second try owns every partition');
    } finally {
      await client.close();
      await engine.close();
    }
    assert.equal(calls.stops, 2);
  });

  it('a lasting failure is thrown at once, not retried, and what had started is stopped', async () => {
    const namespace = uniqueNamespace('startlasting');
    const { extension, calls } = flaky(() => false, new Error('flaky: no licence for this site'));
    const started = Date.now();
    await assert.rejects(
      createEngine({ servers: suite.nats.url, namespace, workflows: [toggle], extensions: [extension], logger: memoryLogger(), openTimeoutMs: 20_000 }),
      /no licence for this site/,
    );
    assert.ok(Date.now() - started < 10_000, 'not retried until openTimeoutMs');
    assert.deepEqual(calls, { starts: 1, stops: 1 });
  });

  it('a transient failure that outlasts openTimeoutMs is thrown then, each try stopped', async () => {
    const namespace = uniqueNamespace('starttimeout');
    const { extension, calls } = flaky(() => true);
    const logger = memoryLogger();
    await assert.rejects(
      createEngine({ servers: suite.nats.url, namespace, workflows: [toggle], extensions: [extension], logger, openTimeoutMs: 2_500 }),
      /no responders/i,
    );
    assert.ok(calls.starts >= 2, `tried again (${calls.starts} starts)`);
    assert.equal(calls.stops, calls.starts, 'every try stopped');
    // Nothing of the engine is left: another one starts in the namespace and owns every partition at once.
    const next = await createEngine({ servers: suite.nats.url, namespace, workflows: [toggle], logger, leaseTtlMs: 1_000 });
    try {
      assert.equal(next.status().owned.length, next.status().partitions);
    } finally {
      await next.close();
    }
  });
});
