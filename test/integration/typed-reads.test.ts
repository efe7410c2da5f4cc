// What the typed reads promise, checked at runtime against a real nats-server: the values the
// types describe are the values that come back (context, nested state values, tags, output, the
// history's event union), and waitFor/list refuse a state the workflow does not have.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import {
  activity,
  createEngine,
  defineWorkflow,
  ErrorCode,
  eventsOf,
  inputOf,
  JetstateError,
  type Engine,
  type Instance,
  type WorkflowHistoryEntry,
} from '../../engine/index.js';
import { startNats, uniqueNamespace } from '../helpers.js';

const ParcelInput = z.object({ parcelId: z.string(), note: z.string().default('none') });
const ParcelEvents = { PACK: z.object({ box: z.string() }), SEND: z.object({ carrier: z.string().default('post') }) };
type ParcelContext = z.output<typeof ParcelInput> & { box?: string; labelId?: string; carrier?: string };

const label = activity<{ parcelId: string }, { labelId: string }>(async ({ input }) => ({ labelId: `L-${input.parcelId}` }));

const parcel = defineWorkflow({
  name: 'parcel',
  version: 1,
  input: ParcelInput,
  events: ParcelEvents,
  machine: setup({
    types: {
      input: inputOf(ParcelInput),
      context: {} as ParcelContext,
      events: eventsOf(ParcelEvents),
      tags: {} as 'waiting' | 'busy',
      output: {} as { box: string; labelId: string; carrier: string },
    },
    actors: { label },
  }).createMachine({
    context: ({ input }) => ({ ...input }),
    initial: 'open',
    states: {
      open: { tags: ['waiting'], on: { PACK: { target: 'shipping', actions: assign({ box: ({ event }) => event.box }) } } },
      shipping: {
        tags: ['busy'],
        initial: 'labelling',
        states: {
          labelling: {
            invoke: {
              id: 'label',
              src: 'label',
              input: ({ context }) => ({ parcelId: context.parcelId }),
              onDone: { target: 'settling', actions: assign({ labelId: ({ event }) => event.output.labelId }) },
            },
          },
          settling: { after: { 20: 'ready' } },
          ready: { on: { SEND: { target: 'sent', actions: assign({ carrier: ({ event }) => event.carrier }) } } },
          sent: { type: 'final' },
        },
        onDone: 'done',
      },
      done: { type: 'final' },
    },
    output: ({ context }) => ({ box: context.box ?? '', labelId: context.labelId ?? '', carrier: context.carrier ?? '' }),
  }),
});

const isInvalidState = (name: string) => (e: unknown) =>
  e instanceof JetstateError &&
  e.code === ErrorCode.InvalidOptions &&
  e.message.startsWith(
    `state '${name}' does not exist in workflow 'parcel'; its states are: open, shipping, shipping.labelling, shipping.settling, shipping.ready, shipping.sent, done`,
  );

describe('typed reads against a real nats-server', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;

  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace: uniqueNamespace('typed'), workflows: [parcel], leaseTtlMs: 1_000 });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('returns context, nested state values, tags and output as the machine declares them', async () => {
    const started = await engine.start(parcel, { id: 'p-1', input: { parcelId: 'p-1' } });
    assert.equal(started.context.note, 'none');
    assert.equal(started.hasTag('waiting'), true);
    assert.equal(started.hasTag('busy'), false);
    // No options: the default timeout applies.
    const open = await engine.waitFor(parcel, 'p-1', (s) => s.matches('open'));
    assert.equal(open.value, 'open');

    await engine.send(parcel, 'p-1', { type: 'PACK', box: 'b-7' });
    const ready = await engine.waitFor(parcel, 'p-1', (s) => s.matches({ shipping: 'ready' }), { timeoutMs: 10_000 });
    assert.deepEqual(ready.value, { shipping: 'ready' });
    assert.equal(ready.context.labelId, 'L-p-1');
    assert.equal(ready.hasTag('busy'), true);
    assert.equal(ready.hasTag('waiting'), false);
    const got = await engine.get(parcel, 'p-1');
    assert.equal(got?.hasTag('busy'), true);
    assert.equal(got?.matches('shipping'), true);

    const listed: string[] = [];
    for await (const i of engine.list(parcel, { state: { shipping: 'ready' } })) listed.push(i.id);
    assert.deepEqual(listed, ['p-1']);

    await engine.send(parcel, 'p-1', { type: 'SEND' });
    const done = await engine.waitFor(parcel, 'p-1', (s) => s.status === 'done', { timeoutMs: 10_000 });
    assert.deepEqual(done.output, { box: 'b-7', labelId: 'L-p-1', carrier: 'post' });
  });

  it('records the events the history type describes, narrowed by kind and type', async () => {
    const entries: WorkflowHistoryEntry<typeof parcel>[] = await engine.history(parcel, 'p-1');
    const seen: string[] = [];
    for (const e of entries) {
      if (e.kind === 'start') {
        assert.deepEqual(e.event, { type: 'jetstate.start', input: { parcelId: 'p-1', note: 'none' } });
        seen.push(e.event.type);
      } else if (e.kind === 'event') {
        seen.push(e.event.type);
        switch (e.event.type) {
          case 'PACK':
            assert.equal(e.event.box, 'b-7');
            break;
          case 'SEND':
            assert.equal(e.event.carrier, 'post'); // as parsed: the default filled in
            break;
          case 'jetstate.task':
            assert.equal(e.event.ok, true);
            assert.equal(e.event.invokeId, 'label');
            assert.equal(typeof e.event.token, 'number');
            break;
          case 'jetstate.timer':
            assert.equal(typeof e.event.timerId, 'string');
            assert.equal(typeof e.event.token, 'number');
            break;
          default:
            assert.fail(`unexpected event ${JSON.stringify(e.event)}`);
        }
      } else {
        assert.fail(`unexpected rejection ${e.reason}`);
      }
    }
    assert.deepEqual(seen, ['jetstate.start', 'PACK', 'jetstate.task', 'jetstate.timer', 'SEND']);
    assert.deepEqual(entries.at(-1)?.to, 'done');
  });

  it('waitFor refuses at once a matches() of a state the workflow does not have', async () => {
    await engine.start(parcel, { id: 'p-2', input: { parcelId: 'p-2' } });
    await assert.rejects(
      // @ts-expect-error: also a compile error; this checks the runtime guard for untyped callers (the CLI)
      engine.waitFor(parcel, 'p-2', (s) => s.matches('resovled')),
      isInvalidState('resovled'),
    );
    await assert.rejects(
      // @ts-expect-error: 'redy' is not a child of 'shipping'
      engine.waitFor(parcel, 'p-2', (s) => s.matches({ shipping: 'redy' }), { timeoutMs: 10_000 }),
      isInvalidState('shipping.redy'),
    );
    // Dotted paths are checked too (what `jetstate wait --state` passes).
    const untyped = (s: Instance) => s.matches('shipping.redy');
    await assert.rejects(engine.waitFor(parcel, 'p-2', untyped), isInvalidState('shipping.redy'));
    // A known state that does not hold yet is fine: it times out, as before.
    await assert.rejects(
      engine.waitFor(parcel, 'p-2', (s) => s.matches('done'), { timeoutMs: 300 }),
      (e: JetstateError) => e.code === ErrorCode.Timeout,
    );
  });

  it('list refuses a state filter the workflow does not have', async () => {
    const names: string[] = [];
    await assert.rejects(async () => {
      // @ts-expect-error: 'shiping' is not a state of parcel
      for await (const i of engine.list(parcel, { state: 'shiping' })) names.push(i.id);
    }, isInvalidState('shiping'));
    assert.deepEqual(names, []);
  });
});
