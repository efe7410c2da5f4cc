// A rejected event's dead letter goes out after the write that judged it. When the engine stops
// between the two (a crash, a lost lease), the next owner reads the rejected event again: it is
// at or below the record's lastSeq, so it is skipped as applied, and its dead letter must be
// written then (before, only events in the same batch as the last applied one got theirs).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { createClient, createEngine, type Engine } from '../../engine/index.js';
import { layout, partitionOf } from '../../engine/internal.js';
import { counter } from '../counter-workflow.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('the dead letter of an event rejected just before the engine stopped', () => {
  const suite = natsForSuite();

  it('is written by the next owner, which reads the event again', async () => {
    const namespace = uniqueNamespace('dlrepair');
    const names = layout(namespace);
    const options = { servers: suite.nats.url, namespace, workflows: [counter], logger: memoryLogger(), leaseTtlMs: 1_000, drainTimeoutMs: 0 };
    const client = await createClient({ servers: suite.nats.url, namespace, workflows: [counter] });
    const jsm = await jetstreamManager(suite.nc);
    const engines: Engine[] = [];
    const engine = async (): Promise<Engine> => {
      const e = await createEngine(options);
      engines.push(e);
      return e;
    };
    try {
      const zero = await engine();
      await client.start(counter, { id: 'c1', input: { label: 'one' } });
      await client.history(counter, 'c1'); // the start's history is stored: its event is finished
      await new Promise((r) => setTimeout(r, 300));
      await zero.close();
      // While no engine runs: an ADD, an event the gate rejects, another ADD. An owner that reads
      // them applies the first alone and the other two in one batch (they wait behind the first).
      const subject = names.eventSubject(partitionOf('counter', 'c1', zero.partitions), 'counter', 'c1');
      await client.send(counter, 'c1', { type: 'ADD', k: 1 });
      const rejected = (await jetstream(suite.nc).publish(subject, JSON.stringify({ type: 'ADD', k: 'one' }))).seq;
      await client.send(counter, 'c1', { type: 'ADD', k: 2 });
      // That owner cannot store dead letters (as if its user lost the permission, or the stream its leader).
      const dlq = (await jsm.streams.info(names.deadLetterStream)).config;
      await jsm.streams.update(names.deadLetterStream, { ...dlq, subjects: [`${namespace}.nowhere.>`] });
      const first = await engine();
      await client.waitFor(counter, 'c1', (i) => i.revision === 3, { timeoutMs: 10_000 });
      const history = await client.history(counter, 'c1');
      assert.ok(
        history.some((h) => h.kind === 'rejected' && h.seq === rejected),
        'the rejected event and the ADD after it were judged in one batch, and written',
      );
      await new Promise((r) => setTimeout(r, 300));
      await first.close();
      await jsm.streams.update(names.deadLetterStream, dlq);
      assert.deepEqual(await client.deadLetters(), [], 'no dead letter was stored');

      await engine();
      await eventually(async () => {
        const letters = await client.deadLetters();
        assert.deepEqual(
          letters.map((l) => l.seq),
          [rejected],
          JSON.stringify(letters),
        );
        assert.match(letters[0]!.reason, /payload of 'ADD' is not valid/);
      }, 10_000);
      assert.equal((await client.get(counter, 'c1'))!.context.n, 3, 'each ADD once');
    } finally {
      for (const e of engines) await e.close().catch(() => {});
      await client.close();
    }
  });
});
