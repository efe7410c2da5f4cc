// An instance's own engine events, captured and published again once the events stream's
// duplicate window has passed (while their signature is still fresh), after the id was deleted and
// started again: they belonged to the earlier instance and must change nothing in the new one. A
// `jetstate.fail` (an inline action threw) failed the new instance; a `jetstate.self` (a sendTo
// self) was applied to it.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { headers as natsHeaders, type NatsConnection } from '@nats-io/nats-core';
import { assign, sendTo, setup } from 'xstate';
import { z } from 'zod';
import { createEngine, defineWorkflow, layout, partitionOf, type Engine } from '../../engine/internal.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';

/** BOOM: an inline action that throws (the instance fails); KICK { k }: sends ADD { k } to itself; NOOP: a revision. */
const fragile = defineWorkflow({
  name: 'fragile',
  version: 1,
  input: z.object({}),
  events: { BOOM: z.object({}), KICK: z.object({ k: z.number() }), ADD: z.object({ k: z.number() }), NOOP: z.object({}) },
  machine: setup({
    types: {} as { context: { n: number }; events: { type: 'BOOM' } | { type: 'KICK'; k: number } | { type: 'ADD'; k: number } | { type: 'NOOP' } },
  }).createMachine({
    context: { n: 0 },
    on: {
      BOOM: {
        actions: () => {
          throw new Error('boom');
        },
      },
      KICK: {
        actions: sendTo(
          ({ self }) => self,
          ({ event }) => ({ type: 'ADD', k: event.k }),
        ),
      },
      ADD: { actions: assign({ n: ({ context, event }) => context.n + event.k }) },
      NOOP: { actions: assign({ n: ({ context }) => context.n }) },
    },
  }),
});

describe("an earlier instance's engine events, replayed after the duplicate window into the instance started again under its id", () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let nc: NatsConnection;
  let js: JetStreamClient;
  let jsm: JetStreamManager;
  const namespace = uniqueNamespace('replayearlier');
  const subject = (id: string): string => layout(namespace).eventSubject(partitionOf(fragile.name, id, engine.partitions), fragile.name, id);

  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [fragile], duplicateWindowMs: 300, logger: memoryLogger() });
    nc = await connect({ servers: nats.url });
    js = jetstream(nc);
    jsm = await jetstreamManager(nc);
  });
  after(async () => {
    await engine?.close();
    await nc?.close();
    await nats?.dispose();
  });

  /** The instance's last stored event of type `type`, as someone reading the stream would keep it. */
  async function capture(id: string, type: string): Promise<{ data: Uint8Array; headers: Array<[string, string]> }> {
    const stream = await jsm.streams.find(subject(id));
    const info = await jsm.streams.info(stream);
    for (let seq = info.state.last_seq; seq >= info.state.first_seq; seq--) {
      const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
      if (!m || m.subject !== subject(id) || (JSON.parse(new TextDecoder().decode(m.data)) as { type?: string }).type !== type) continue;
      const headers: Array<[string, string]> = [];
      for (const [k, v] of m.header ?? []) for (const x of v) headers.push([k, x]);
      return { data: m.data, headers };
    }
    throw new Error(`no ${type} event of '${id}' in ${stream}`);
  }

  /** Ends and deletes the instance and starts it again; then, past the duplicate window, publishes the captured event again. */
  async function replayIntoNext(id: string, captured: { data: Uint8Array; headers: Array<[string, string]> }): Promise<void> {
    if ((await engine.get(fragile, id))?.status === 'running') await engine.terminate(fragile, id);
    await engine.delete(fragile, id);
    await eventually(async () => assert.equal(await engine.get(fragile, id), null, 'deleted'));
    await engine.start(fragile, { id, input: {} });
    await sleep(600);
    const h = natsHeaders();
    for (const [k, v] of captured.headers) h.append(k, v);
    const ack = await js.publish(subject(id), captured.data, { headers: h });
    assert.equal(ack.duplicate, false, 'stored again: past the duplicate window');
    // Applied in order behind it: once NOOP shows, the replay was decided.
    await engine.send(fragile, id, { type: 'NOOP' });
    await engine.waitFor(fragile, id, (s) => s.status !== 'running' || s.revision >= 2, { timeoutMs: 10_000 });
  }

  it('a jetstate.fail (an inline action of the earlier instance threw) does not fail the new one', async () => {
    await engine.start(fragile, { id: 'f', input: {} });
    await engine.send(fragile, 'f', { type: 'BOOM' });
    await engine.waitFor(fragile, 'f', (s) => s.status === 'failed', { timeoutMs: 10_000 });
    const fail = await capture('f', 'jetstate.fail');
    await replayIntoNext('f', fail);
    const now = (await engine.get(fragile, 'f'))!;
    assert.equal(now.status, 'running', `the new instance runs (${now.error ?? ''})`);
    assert.equal(now.revision, 2, 'its start and the NOOP');
  });

  it('a jetstate.self (a sendTo self of the earlier instance) is not applied to the new one', async () => {
    await engine.start(fragile, { id: 'k', input: {} });
    await engine.send(fragile, 'k', { type: 'KICK', k: 7 });
    await engine.waitFor(fragile, 'k', (s) => s.context.n === 7, { timeoutMs: 10_000 });
    const self = await capture('k', 'jetstate.self');
    await replayIntoNext('k', self);
    const now = (await engine.get(fragile, 'k'))!;
    assert.equal(now.context.n, 0, 'the earlier instance’s ADD is not applied');
    assert.equal(now.revision, 2, 'its start and the NOOP');
  });
});
