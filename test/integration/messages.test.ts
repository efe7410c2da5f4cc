// sendToInstance: events between instances go through the target's inbox after the sender's
// write, once, in order with the target's other events.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { createEngine, defineWorkflow, sendToInstance, type Engine } from '../../engine/index.js';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { layout, partitionOf } from '../../engine/internal.js';
import { startNats, uniqueNamespace } from '../helpers.js';

const ponger = defineWorkflow({
  name: 'ponger',
  version: 1,
  input: z.object({}),
  events: { PING: z.object({ from: z.string(), n: z.number() }) },
  machine: setup({ types: { context: {} as { seen: number[] } } }).createMachine({
    context: { seen: [] },
    initial: 'up',
    states: {
      up: {
        on: {
          PING: {
            actions: [
              assign({ seen: ({ context, event }) => [...context.seen, (event as unknown as { n: number }).n] }),
              sendToInstance(
                ({ event }) => ({ workflow: 'pinger', id: (event as unknown as { from: string }).from }),
                ({ event }) => ({ type: 'PONG', n: (event as unknown as { n: number }).n }),
              ),
            ],
          },
        },
      },
    },
  }),
});

const pinger = defineWorkflow({
  name: 'pinger',
  version: 1,
  input: z.object({ peer: z.string(), me: z.string() }),
  events: { GO: z.object({}), PONG: z.object({ n: z.number() }) },
  machine: setup({ types: { context: {} as { peer: string; me: string; pongs: number[] }, input: {} as { peer: string; me: string } } }).createMachine({
    context: ({ input }) => ({ ...input, pongs: [] }),
    initial: 'idle',
    states: {
      idle: {
        on: {
          GO: {
            target: 'waiting',
            actions: [
              sendToInstance(
                ({ context }) => ({ workflow: ponger, id: context.peer }),
                ({ context }) => ({ type: 'PING', from: context.me, n: 1 }),
              ),
              sendToInstance(
                ({ context }) => ({ workflow: ponger, id: context.peer }),
                ({ context }) => ({ type: 'PING', from: context.me, n: 2 }),
              ),
            ],
          },
        },
      },
      waiting: {
        on: {
          PONG: [
            {
              guard: ({ context }) => context.pongs.length === 1,
              target: 'done',
              actions: assign({ pongs: ({ context, event }) => [...context.pongs, (event as unknown as { n: number }).n] }),
            },
            { actions: assign({ pongs: ({ context, event }) => [...context.pongs, (event as unknown as { n: number }).n] }) },
          ],
        },
      },
      done: { type: 'final' },
    },
  }),
});

describe('messages between instances', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  const namespace = uniqueNamespace('msgs');
  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [pinger, ponger] });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('delivers sends in order, once, and the replies come back', async () => {
    await engine.start(ponger, { id: 'pong-1', input: {} });
    await engine.start(pinger, { id: 'ping-1', input: { peer: 'pong-1', me: 'ping-1' } });
    await engine.send(pinger, 'ping-1', { type: 'GO' });
    const done = await engine.waitFor(pinger, 'ping-1', (s) => s.status === 'done', { timeoutMs: 5_000 });
    assert.deepEqual((done.context as { pongs: number[] }).pongs, [1, 2]);
    const pong = await engine.get(ponger, 'pong-1');
    assert.deepEqual((pong!.context as { seen: number[] }).seen, [1, 2]);
    assert.equal(pong!.revision, 3);
  });

  it("a send the target's stream cannot take for a while (here: no stream stores its subject for 4 s) is delivered once it can, not given up", async () => {
    await engine.start(ponger, { id: 'pong-2', input: {} });
    await engine.start(pinger, { id: 'ping-2', input: { peer: 'pong-2', me: 'ping-2' } });
    const names = layout(namespace);
    const stream = names.eventStream('ponger', partitionOf('ponger', 'pong-2', engine.partitions));
    const nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    const config = (await jsm.streams.info(stream)).config;
    // JetStream answers "no responders" to a publish no stream takes, as while a stream elects its leader.
    await jsm.streams.update(stream, { ...config, subjects: [`${namespace}.parked.ponger`] });
    try {
      await engine.send(pinger, 'ping-2', { type: 'GO' });
      await new Promise((r) => setTimeout(r, 4_000));
      assert.equal((await engine.get(ponger, 'pong-2'))!.revision, 1, 'nothing reached the target yet');
    } finally {
      await jsm.streams.update(stream, config);
      await nc.close();
    }
    const done = await engine.waitFor(pinger, 'ping-2', (s) => s.status === 'done', { timeoutMs: 15_000 });
    assert.deepEqual((done.context as { pongs: number[] }).pongs, [1, 2]);
    const pong = await engine.get(ponger, 'pong-2');
    assert.deepEqual((pong!.context as { seen: number[] }).seen, [1, 2], 'each PING once, in order');
  });

  it('an engine that closes while such a send waits leaves it to the next owner, which sends it once the stream takes it', async () => {
    const ns = uniqueNamespace('msgsclose');
    const options = { servers: nats.url, namespace: ns, workflows: [pinger, ponger], leaseTtlMs: 1_000, drainTimeoutMs: 500 };
    const first = await createEngine(options);
    const stream = layout(ns).eventStream('ponger', partitionOf('ponger', 'pong-3', first.partitions));
    const nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    let second: Engine | undefined;
    try {
      await first.start(ponger, { id: 'pong-3', input: {} });
      await first.start(pinger, { id: 'ping-3', input: { peer: 'pong-3', me: 'ping-3' } });
      const config = (await jsm.streams.info(stream)).config;
      await jsm.streams.update(stream, { ...config, subjects: [`${ns}.parked.ponger`] });
      await first.send(pinger, 'ping-3', { type: 'GO' });
      await first.waitFor(pinger, 'ping-3', (s) => s.value === 'waiting', { timeoutMs: 10_000 });
      const closing = Date.now();
      await first.close();
      assert.ok(Date.now() - closing < 10_000, `the close did not wait for the send (${Date.now() - closing} ms)`);
      await jsm.streams.update(stream, config);
      second = await createEngine(options);
      const done = await second.waitFor(pinger, 'ping-3', (s) => s.status === 'done', { timeoutMs: 15_000 });
      assert.deepEqual((done.context as { pongs: number[] }).pongs, [1, 2]);
      assert.deepEqual(((await second.get(ponger, 'pong-3'))!.context as { seen: number[] }).seen, [1, 2], 'each PING once, in order');
    } finally {
      await second?.close();
      await first.close();
      await nc.close();
    }
  });
});
