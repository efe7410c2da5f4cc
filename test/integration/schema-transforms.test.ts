// Schemas that transform (README: the machine's input and event types are the schemas' outputs).
// The client checks an event or input with its schema and the engine's gate parses what arrives
// again, so what goes on the wire must parse at the engine to the same value the client's check
// gave: a transform must be applied once, not refused as its own output nor applied twice.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { createClient, createEngine, defineWorkflow, ErrorCode, JetstateError, type Client, type Engine } from '../../engine/index.js';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { startNats, uniqueNamespace } from '../helpers.js';

const ledger = defineWorkflow({
  name: 'ledger',
  version: 1,
  // A string amount as a number of cents (a type-changing transform), and a scaled one (the same type).
  input: z.object({ owner: z.string().transform((s) => s.toUpperCase()), opening: z.string().transform((s) => Math.round(Number(s) * 100)) }),
  events: {
    CREDIT: z.object({ cents: z.string().transform(Number) }),
    SCALED: z.object({ euros: z.number().transform((n) => n * 100) }),
    PLAIN: z.object({ cents: z.number(), note: z.string().default('none') }),
    WHEN: z.object({ at: z.date() }),
    // A transform that gives another value each time: the engine's parse is the one applied.
    // Renames its field: its output does not parse as its input, and the given form keeps no field of the output.
    RENAMED: z.object({ card_number: z.string() }).transform((o) => ({ card: { number: o.card_number } })),
    TAGGED: z.object({ cents: z.number() }).transform((e) => ({ ...e, tag: randomUUID() as string })),
  },
  machine: setup({
    types: {} as {
      context: { owner: string; balance: number; notes: string[] };
      input: { owner: string; opening: number };
      events:
        | { type: 'CREDIT'; cents: number }
        | { type: 'SCALED'; euros: number }
        | { type: 'PLAIN'; cents: number; note: string }
        | { type: 'WHEN'; at: Date }
        | { type: 'TAGGED'; cents: number; tag: string }
        | { type: 'RENAMED'; card: { number: string } };
    },
  }).createMachine({
    context: ({ input }) => ({ owner: input.owner, balance: input.opening, notes: [] }),
    on: {
      CREDIT: { actions: assign({ balance: ({ context, event }) => context.balance + event.cents }) },
      SCALED: { actions: assign({ balance: ({ context, event }) => context.balance + event.euros }) },
      RENAMED: { actions: assign({ notes: ({ context, event }) => [...context.notes, event.card.number] }) },
      TAGGED: {
        actions: assign({ balance: ({ context, event }) => context.balance + event.cents, notes: ({ context, event }) => [...context.notes, event.tag] }),
      },
      WHEN: { actions: assign({ notes: ({ context, event }) => [...context.notes, event.at.toISOString()] }) },
      PLAIN: {
        actions: assign({ balance: ({ context, event }) => context.balance + event.cents, notes: ({ context, event }) => [...context.notes, event.note] }),
      },
    },
  }),
});

describe('schemas that transform', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let client: Client;
  const namespace = uniqueNamespace('transforms');

  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace, workflows: [ledger], leaseTtlMs: 1_000, partitions: 1 });
    client = await createClient({ servers: nats.url, namespace });
  });
  after(async () => {
    await client?.close();
    await engine?.close();
    await nats?.dispose();
  });

  it("applies a start input's and an event's transform once, through the client and the engine alike", async () => {
    for (const [name, via] of [
      ['client', () => client],
      ['engine', () => engine],
    ] as const) {
      const id = `l-${name}`;
      const started = await via().start(ledger, { id, input: { owner: 'ada', opening: '1.5' } });
      assert.deepEqual(started.context, { owner: 'ADA', balance: 150, notes: [] }, `${name}: the input's transforms applied once`);
      await via().send(ledger, id, { type: 'CREDIT', cents: '30' });
      await via().send(ledger, id, { type: 'SCALED', euros: 2 });
      await via().send(ledger, id, { type: 'PLAIN', cents: 1 });
      const done = await via().waitFor(ledger, id, (s) => s.context.notes.length === 1, { timeoutMs: 10_000 });
      assert.deepEqual(done.context, { owner: 'ADA', balance: 150 + 30 + 200 + 1, notes: ['none'] }, `${name}: each event's transform applied once`);
      assert.equal(done.revision, 4, `${name}: every event applied`);
      assert.deepEqual(
        (await via().deadLetters()).filter((x) => x.id === id).map((x) => x.reason),
        [],
        `${name}: nothing dead-lettered`,
      );
      const report = await via().verify(ledger, id);
      assert.equal(report.ok, true, report.problems.join('\n'));
    }
  });

  it('a value that cannot reach the engine as JSON is refused with the fix, and nothing is sent', async () => {
    await client.start(ledger, { id: 'l-date', input: { owner: 'bo', opening: '0' } });
    await assert.rejects(
      client.send(ledger, 'l-date', { type: 'WHEN', at: new Date(0) }),
      (e: unknown) =>
        e instanceof JetstateError &&
        e.code === ErrorCode.InvalidEvent &&
        /'WHEN'/.test(e.message) &&
        /JSON/.test(e.message) &&
        /nothing was sent/.test(e.message),
    );
    // A transform that renames its fields: refused too, and the message says so.
    await assert.rejects(
      client.send(ledger, 'l-date', { type: 'RENAMED', card_number: '4111' }),
      (e: unknown) =>
        e instanceof JetstateError && e.code === ErrorCode.InvalidEvent && /renames or moves fields/.test(e.message) && /nothing was sent/.test(e.message),
    );
    const history = await client.history(ledger, 'l-date');
    assert.equal(history.length, 1, 'only the start');
  });

  it('publishes no field the schema strips, and takes a transform that differs on every parse', async () => {
    await client.start(ledger, { id: 'l-wire', input: { owner: 'cy', opening: '0' } });
    // A type-changing transform goes as given: only the fields the schema keeps.
    await client.send(ledger, 'l-wire', { type: 'CREDIT', cents: '7', password: 'hunter2' } as never);
    const jsm = await jetstreamManager(await connect({ servers: nats.url }));
    const stored = await jsm.streams.getMessage(`${namespace}_evt_ledger_0`, { last_by_subj: `${namespace}.evt.0.ledger.l-wire` });
    assert.deepEqual(JSON.parse(new TextDecoder().decode(stored!.data)), { type: 'CREDIT', cents: '7' }, 'what the stream holds');
    await client.send(ledger, 'l-wire', { type: 'TAGGED', cents: 1 });
    const tagged = await client.waitFor(ledger, 'l-wire', (i) => i.context.notes.length === 1, { timeoutMs: 10_000 });
    assert.equal(tagged.context.balance, 8);
    assert.match(tagged.context.notes[0]!, /^[0-9a-f-]{36}$/);
  });
});
