/**
 * Fields of a record that this engine's version does not know (written by a newer engine during a
 * rolling upgrade) are kept through this engine's writes, at the top of the record and inside its
 * parts; before, the record schema dropped them at the next write (as an older engine dropped an
 * instance's `born`, so its later keys fell back to the plain id).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { assign, raise, setup } from 'xstate';
import { z } from 'zod';
import { createEngine, defineWorkflow } from '../../engine/index.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';

const armed = defineWorkflow({
  name: 'armed',
  version: 1,
  input: z.object({}),
  events: { ADD: z.object({ k: z.number() }) },
  machine: setup({ types: { context: {} as { n: number } } }).createMachine({
    context: { n: 0 },
    initial: 'on',
    // A timer an hour away stays pending in the record.
    entry: raise({ type: 'LATER' }, { id: 'later', delay: 3_600_000 }),
    states: { on: { on: { ADD: { actions: assign(({ context, event }) => ({ n: context.n + (event as unknown as { k: number }).k })) } } } },
  }),
});

describe("a record's fields unknown to this version", () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  before(async () => (nats = await startNats()));
  after(async () => nats?.dispose());

  it('are kept through the writes of this engine, at the top and inside the timers', async () => {
    const namespace = uniqueNamespace('fields');
    const engine = await createEngine({ servers: nats.url, namespace, workflows: [armed] });
    const nc = await connect({ servers: nats.url });
    try {
      await engine.start(armed, { id: 'a', input: {} });
      const kv = await new Kvm(nc).open(engine.recordBucketOf('armed', 'a'));
      const stored = JSON.parse(new TextDecoder().decode((await kv.get('armed.a'))!.value)) as Record<string, unknown> & {
        timers: Record<string, Record<string, unknown>>;
      };
      assert.deepEqual(Object.keys(stored.timers), ['later']);
      // What a newer engine would have written: a field of the record and one of a timer.
      stored['fromTheFuture'] = { note: 'kept' };
      stored.timers['later']!['fromTheFuture'] = 7;
      await kv.put('armed.a', new TextEncoder().encode(JSON.stringify(stored)));

      await engine.send(armed, 'a', { type: 'ADD', k: 2 });
      await eventually(async () => assert.equal((await engine.get(armed, 'a'))?.context.n, 2));
      const after = JSON.parse(new TextDecoder().decode((await kv.get('armed.a'))!.value)) as Record<string, unknown> & {
        timers: Record<string, Record<string, unknown>>;
      };
      assert.equal(after['revision'], 2);
      assert.deepEqual(after['fromTheFuture'], { note: 'kept' });
      assert.equal(after.timers['later']?.['fromTheFuture'], 7);
    } finally {
      await engine.close();
      await nc.close();
    }
  });
});
