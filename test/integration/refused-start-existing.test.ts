// A new owner of an instance it has not cached takes a batch that begins with a start for a new
// instance and creates it without reading first. When that start is refused (here: raw starts
// whose input is not valid, as a hostile or broken sender could publish), the instance may well
// exist: the events behind the start in the same batch must be applied to it, not dead-lettered
// as sent to an instance that "does not exist".
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstream } from '@nats-io/jetstream';
import { createClient, createEngine } from '../../engine/index.js';
import { layout, partitionOf } from '../../engine/internal.js';
import { counter } from '../counter-workflow.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('a refused start at the head of a batch, for an instance that exists', () => {
  const suite = natsForSuite();

  it('the events behind it are applied to the instance, and only the refused starts are dead letters', async () => {
    const namespace = uniqueNamespace('refstart');
    const options = { servers: suite.nats.url, namespace, workflows: [counter], logger: memoryLogger() };
    const first = await createEngine({ ...options, leaseTtlMs: 1_000 });
    const client = await createClient(options);
    let second: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(counter, { id: 'c1', input: { label: 'one' } });
      await client.send(counter, 'c1', { type: 'ADD', k: 1 });
      await client.waitFor(counter, 'c1', (i) => i.context.n === 1, { timeoutMs: 10_000 });
      const partitions = first.status().partitions;
      await first.close();

      // While no engine runs: starts a sender cannot have made with send() (no input), each
      // followed by a valid event, so a new owner's batches begin with a start.
      const subject = layout(namespace).eventSubject(partitionOf('counter', 'c1', partitions), 'counter', 'c1');
      const js = jetstream(suite.nc);
      const refused: number[] = [];
      for (let i = 0; i < 6; i++) {
        refused.push((await js.publish(subject, JSON.stringify({ type: 'jetstate.start' }))).seq);
        refused.push((await js.publish(subject, JSON.stringify({ type: 'jetstate.start' }))).seq);
        await client.send(counter, 'c1', { type: 'ADD', k: 10 });
      }

      second = await createEngine({ ...options, leaseTtlMs: 1_000 });
      const done = await client
        .waitFor(counter, 'c1', (i) => i.context.n === 61, { timeoutMs: 15_000 })
        .catch(async (e: Error) => {
          const letters = await client.deadLetters();
          throw new Error(`${e.message}; dead letters: ${JSON.stringify(letters.map((l) => [l.seq, l.reason]))}`);
        });
      assert.equal(done.context.label, 'one', 'the same instance');
      // Dead letters go out after the write that judged them: the record can be ahead of them.
      const letters = await eventually(async () => {
        const all = await client.deadLetters();
        assert.deepEqual(
          all.map((l) => l.seq).sort((a, b) => a - b),
          refused,
          `only the refused starts: ${JSON.stringify(all.map((l) => [l.seq, l.reason]))}`,
        );
        return all;
      }, 10_000);
      for (const l of letters) assert.match(l.reason, /input is not valid/);
    } finally {
      await second?.close();
      await client.close();
      await first.close().catch(() => {});
    }
  });

  it('a start for a version no engine has does not hold an existing instance: its events are applied', async () => {
    const namespace = uniqueNamespace('refversion');
    const options = { servers: suite.nats.url, namespace, workflows: [counter], logger: memoryLogger() };
    const first = await createEngine({ ...options, leaseTtlMs: 1_000 });
    const client = await createClient(options);
    let second: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(counter, { id: 'c2', input: { label: 'two' } });
      const partitions = first.status().partitions;
      await first.close();
      // A start of the same id for version 99, as a sender on a newer release could send, then an ADD.
      const subject = layout(namespace).eventSubject(partitionOf('counter', 'c2', partitions), 'counter', 'c2');
      await jetstream(suite.nc).publish(subject, JSON.stringify({ type: 'jetstate.start', input: { label: 'two' }, version: 99 }));
      await client.send(counter, 'c2', { type: 'ADD', k: 5 });
      second = await createEngine({ ...options, leaseTtlMs: 1_000 });
      const done = await client.waitFor(counter, 'c2', (i) => i.context.n === 5, { timeoutMs: 15_000 });
      assert.equal(done.parked, undefined, 'not parked waiting for version 99');
      assert.deepEqual(second.status().blocked, []);
    } finally {
      await second?.close();
      await client.close();
      await first.close().catch(() => {});
    }
  });
});
