// The watch of leases and members is what an engine sees the others by. A watch that stops
// delivering without ending (its consumer on a server that died, before the client noticed) left
// an engine blind: it kept every partition and saw no other engine. It is noticed by this
// engine's own heartbeat not coming back through it, and opened again.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createEngine, type Engine } from '../../engine/index.js';
import { counter } from '../recovery/counter-workflow.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';

describe('the watch of partition leases', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  const engines: Engine[] = [];
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    for (const e of engines) await e.close().catch(() => {});
    await nats?.dispose();
  });

  it('is opened again when it stops delivering, so the engine sees a new engine and shares its partitions', { timeout: 60_000 }, async () => {
    const namespace = uniqueNamespace('watch');
    let latest = 0;
    let stalledUpTo = 0;
    const logger = memoryLogger();
    const a = await createEngine({
      servers: nats.url,
      namespace,
      workflows: [counter],
      partitions: 4,
      leaseTtlMs: 1_000,
      logger,
      testHooks: {
        dropWatchEntry: (generation) => {
          latest = Math.max(latest, generation);
          return generation <= stalledUpTo;
        },
      },
    });
    engines.push(a);
    await eventually(() => assert.equal(a.status().owned.length, 4), 15_000);
    // From now on the watch open in `a` delivers nothing, as a stalled one.
    stalledUpTo = latest;
    const b = await createEngine({ servers: nats.url, namespace, workflows: [counter], partitions: 4, leaseTtlMs: 1_000, logger: memoryLogger() });
    engines.push(b);
    await eventually(() => assert.ok(b.status().owned.length >= 1, `b owns ${b.status().owned.length} partitions`), 20_000);
    assert.ok(latest > stalledUpTo, 'a opened a new watch');
    assert.ok(
      logger.lines.some((l) => l.includes("has not delivered this engine's heartbeat")),
      `a says why it watches again:\n${logger.lines.join('\n')}`,
    );
    await eventually(() => assert.equal(a.status().owned.length + b.status().owned.length, 4), 10_000);
  });

  it('is opened again when the first one never delivers, so the engine starts (it waited for ever)', { timeout: 60_000 }, async () => {
    const logger = memoryLogger();
    const starting = createEngine({
      servers: nats.url,
      namespace: uniqueNamespace('watchstart'),
      workflows: [counter],
      partitions: 4,
      leaseTtlMs: 1_000,
      logger,
      testHooks: { dropWatchEntry: (generation) => generation === 1 },
    });
    // Bounded here, so that the old behaviour fails this test instead of hanging it.
    const engine = await Promise.race([starting, new Promise<undefined>((r) => setTimeout(() => r(undefined), 20_000))]);
    if (!engine) void starting.then((e) => e.close()).catch(() => {});
    assert.ok(engine, `the engine did not start within 20 s:\n${logger.lines.join('\n')}`);
    engines.push(engine);
    await eventually(() => assert.equal(engine.status().owned.length, 4), 15_000);
    assert.ok(
      logger.lines.some((l) => l.includes("did not deliver this engine's first heartbeat")),
      `it says why it watches again:\n${logger.lines.join('\n')}`,
    );
  });
});
