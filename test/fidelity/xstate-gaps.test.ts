// Machines the corpus did not cover, each run by the engine (a real nats-server) and compared with
// what plain XState v5 (`createActor`) does with the same events: an id given by a function to
// spawnChild, a send to a child found by its systemId, a delay that computes to NaN, `self.send`
// from an inline action, a delayed event holding a Date; and two things the engine decides: a catch-all '*' handler does not
// swallow cancel(), and `onSnapshot` (which the engine cannot deliver) is refused at definition.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assign, createActor, fromPromise, raise, sendTo, setup, spawnChild, type AnyStateMachine } from 'xstate';
import { z } from 'zod';
import { activity, childWorkflow, createEngine, defineWorkflow, type Engine } from '../../engine/index.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';

/** XState in memory: the events one after the other, each once the actor has settled. */
async function inMemory(machine: AnyStateMachine, events: { type: string }[]): Promise<{ value: unknown; context: unknown }> {
  const actor = createActor(machine, { input: {} }).start();
  const settle = () => new Promise((r) => setTimeout(r, 100));
  await settle();
  for (const e of events) {
    actor.send(e);
    await settle();
  }
  const s = actor.getSnapshot();
  actor.stop();
  return { value: s.value, context: s.context };
}

const double = async ({ input }: { input: { n: number } }) => input.n * 2;
const spawnFnId = defineWorkflow({
  name: 'spawnfnid',
  version: 1,
  input: z.object({}),
  events: { GO: z.object({}) },
  machine: setup({ types: {} as { context: { n: number; got: number[] } }, actors: { double: activity(double) } }).createMachine({
    context: { n: 3, got: [] },
    initial: 'a',
    on: { 'xstate.done.actor.w3': { actions: assign({ got: ({ context, event }) => [...context.got, (event as unknown as { output: number }).output] }) } },
    states: { a: { on: { GO: { actions: spawnChild('double', { id: ({ context }) => `w${context.n}`, input: ({ context }) => ({ n: context.n }) }) } } } },
  }),
});

const kid = defineWorkflow({
  name: 'syskid',
  version: 1,
  input: z.object({}),
  events: { PING: z.object({}) },
  machine: setup({}).createMachine({ initial: 'idle', states: { idle: { on: { PING: 'pinged' } }, pinged: {} } }),
});
const sysGet = defineWorkflow({
  name: 'sysget',
  version: 1,
  input: z.object({}),
  events: { POKE: z.object({}), PING: z.object({}) },
  machine: setup({ types: {} as { context: { selfPings: number } }, actors: { kid: childWorkflow(kid) } }).createMachine({
    context: { selfPings: 0 },
    initial: 'a',
    states: {
      a: {
        invoke: { src: 'kid', id: 'k', systemId: 'theKid' },
        on: {
          POKE: { actions: sendTo(({ system }) => system.get('theKid'), { type: 'PING' }) },
          PING: { actions: assign({ selfPings: ({ context }) => context.selfPings + 1 }) },
        },
      },
    },
  }),
});

const nanDelay = defineWorkflow({
  name: 'nandelay',
  version: 1,
  input: z.object({}),
  events: { GO: z.object({}) },
  machine: setup({ types: {} as { context: { secs?: number } }, delays: { wait: ({ context }) => (context.secs as number) * 1000 } }).createMachine({
    context: {},
    initial: 'a',
    states: { a: { on: { GO: 'b' } }, b: { after: { wait: 'c' } }, c: {} },
  }),
});

const selfSend = defineWorkflow({
  name: 'selfsend',
  version: 1,
  input: z.object({}),
  events: { GO: z.object({}), NEXT: z.object({}) },
  machine: setup({}).createMachine({
    initial: 'a',
    states: { a: { on: { GO: { target: 'b', actions: ({ self }) => self.send({ type: 'NEXT' }) } } }, b: { on: { NEXT: 'c' } }, c: {} },
  }),
});

const catchAll = defineWorkflow({
  name: 'catchall',
  version: 1,
  input: z.object({}),
  events: { PING: z.object({}) },
  machine: setup({ types: {} as { context: { unknown: string[] } } }).createMachine({
    context: { unknown: [] },
    initial: 'a',
    states: { a: { on: { PING: {}, '*': { actions: assign({ unknown: ({ context, event }) => [...context.unknown, event.type] }) } } } },
  }),
});

const dateRaise = defineWorkflow({
  name: 'dateraise',
  version: 1,
  input: z.object({}),
  events: { GO: z.object({}) },
  machine: setup({ types: {} as { context: { sawDate: boolean | null } } }).createMachine({
    context: { sawDate: null },
    initial: 'a',
    states: {
      a: {
        on: {
          GO: { actions: raise(() => ({ type: 'T', at: new Date(0) }), { delay: 50 }) },
          T: { target: 'b', actions: assign({ sawDate: ({ event }) => (event as { at?: unknown }).at instanceof Date }) },
        },
      },
      b: {},
    },
  }),
});

/** What `self.getSnapshot()` showed each action, by the instance's label. */
const peeks = new Map<string, Array<{ where: string; value: unknown; context: unknown }>>();
type PeekContext = { label: string; n: number };
const peekAt =
  (where: string) =>
  ({ context, self }: { context: PeekContext; self: { getSnapshot(): { value: unknown; context: unknown } } }) => {
    const s = self.getSnapshot();
    peeks.set(context.label, [...(peeks.get(context.label) ?? []), { where, value: s.value, context: s.context }]);
  };
const peekMachine = setup({ types: {} as { context: PeekContext; input: { label: string } } }).createMachine({
  context: ({ input }) => ({ label: input.label, n: 0 }),
  initial: 'a',
  entry: peekAt('entry'),
  states: { a: { on: { GO: { target: 'b', actions: [assign({ n: ({ context }) => context.n + 1 }), peekAt('go')] } } }, b: {} },
});
const peek = defineWorkflow({ name: 'peek', version: 1, input: z.object({ label: z.string() }), events: { GO: z.object({}) }, machine: peekMachine });

describe('XState features beyond the corpus', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  before(async () => {
    nats = await startNats();
    engine = await createEngine({
      servers: nats.url,
      namespace: uniqueNamespace('xsgaps'),
      workflows: [spawnFnId, kid, sysGet, nanDelay, selfSend, catchAll, dateRaise, peek],
      leaseTtlMs: 1_000,
      logger: memoryLogger(),
    });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('spawnChild with an id from a function spawns the activity under that id', async () => {
    const ref = await inMemory(spawnFnId.machine.provide({ actors: { double: fromPromise(double) } } as never), [{ type: 'GO' }]);
    assert.deepEqual(ref.context, { n: 3, got: [6] });
    await engine.start(spawnFnId, { id: 's1', input: {} });
    await engine.send(spawnFnId, 's1', { type: 'GO' });
    const got = await engine.waitFor(spawnFnId, 's1', (i) => i.status !== 'running' || (i.context as { got: number[] }).got.length > 0, { timeoutMs: 10_000 });
    assert.deepEqual({ status: got.status, context: got.context, error: got.error }, { status: 'running', context: ref.context, error: undefined });
  });

  it('sendTo a child found by its systemId reaches the child workflow, not the parent', async () => {
    const ref = await inMemory(sysGet.machine.provide({ actors: { kid: kid.machine } } as never), [{ type: 'POKE' }]);
    assert.deepEqual(ref.context, { selfPings: 0 });
    await engine.start(sysGet, { id: 'g1', input: {} });
    const started = await engine.waitFor(sysGet, 'g1', (i) => i.children.length === 1, { timeoutMs: 10_000 });
    const childId = started.children[0]!.instanceId;
    await engine.waitFor(kid, childId, (i) => i.status === 'running', { timeoutMs: 10_000 });
    await engine.send(sysGet, 'g1', { type: 'POKE' });
    const child = await engine.waitFor(kid, childId, (i) => i.value === 'pinged', { timeoutMs: 10_000 });
    assert.equal(child.value, 'pinged');
    assert.deepEqual((await engine.get(sysGet, 'g1'))?.context, ref.context);
  });

  it('a delay that computes to NaN fires at once, as in XState', async () => {
    const ref = await inMemory(nanDelay.machine, [{ type: 'GO' }]);
    assert.equal(ref.value, 'c');
    await engine.start(nanDelay, { id: 'n1', input: {} });
    await engine.send(nanDelay, 'n1', { type: 'GO' });
    const got = await engine.waitFor(nanDelay, 'n1', (i) => i.value === 'c', { timeoutMs: 10_000 });
    assert.deepEqual({ value: got.value, status: got.status, timers: got.timers }, { value: 'c', status: 'running', timers: [] });
  });

  it('self.send from an inline action delivers the event', async () => {
    const ref = await inMemory(selfSend.machine, [{ type: 'GO' }]);
    assert.equal(ref.value, 'c');
    await engine.start(selfSend, { id: 'x1', input: {} });
    await engine.send(selfSend, 'x1', { type: 'GO' });
    const got = await engine.waitFor(selfSend, 'x1', (i) => i.value === 'c' || i.status !== 'running', { timeoutMs: 10_000 });
    assert.deepEqual({ value: got.value, status: got.status }, { value: 'c', status: 'running' });
    assert.equal((await engine.verify(selfSend, 'x1')).ok, true);
  });

  it("self.getSnapshot() in an action shows this instance's snapshot before the event, as in XState (never another instance's)", async () => {
    const actor = createActor(peekMachine, { input: { label: 'mem' } }).start();
    actor.send({ type: 'GO' });
    actor.stop();
    const ref = peeks.get('mem');
    assert.deepEqual(ref, [
      { where: 'entry', value: 'a', context: { label: 'mem', n: 0 } },
      { where: 'go', value: 'a', context: { label: 'mem', n: 0 } },
    ]);
    // One instance moves first, so the machine's last computation was another instance's.
    await engine.start(peek, { id: 'p1', input: { label: 'one' } });
    await engine.send(peek, 'p1', { type: 'GO' });
    await engine.waitFor(peek, 'p1', (i) => i.value === 'b', { timeoutMs: 10_000 });
    await engine.start(peek, { id: 'p2', input: { label: 'two' } });
    await engine.send(peek, 'p2', { type: 'GO' });
    await engine.waitFor(peek, 'p2', (i) => i.value === 'b', { timeoutMs: 10_000 });
    await eventually(() => assert.equal(peeks.get('two')?.length, 2), 5_000);
    for (const label of ['one', 'two'])
      assert.deepEqual(
        peeks.get(label),
        ref!.map((p) => ({ ...p, context: { ...(p.context as object), label } })),
        label,
      );
  });

  it('a delayed event carries what its timer stored, whether the record was cached or read again (verify agrees)', async () => {
    await engine.start(dateRaise, { id: 'd1', input: {} });
    await engine.send(dateRaise, 'd1', { type: 'GO' });
    const fired = await engine.waitFor(dateRaise, 'd1', (i) => i.value === 'b', { timeoutMs: 10_000 });
    // The timer keeps its event as JSON: the Date is its ISO string when it fires, as after a reload.
    assert.deepEqual(fired.context, { sawDate: false });
    assert.equal((await engine.verify(dateRaise, 'd1')).ok, true);
  });

  it('cancel() stops an instance whose state has only a catch-all * handler', async () => {
    await engine.start(catchAll, { id: 'c1', input: {} });
    await engine.cancel(catchAll, 'c1', { reason: 'test' });
    const got = await engine.waitFor(catchAll, 'c1', (i) => i.status !== 'running', { timeoutMs: 10_000 }).catch(async () => engine.get(catchAll, 'c1'));
    assert.deepEqual({ status: got?.status, context: got?.context }, { status: 'stopped', context: { unknown: [] } });
  });

  it('refuses onSnapshot at definition: the engine does not deliver a child snapshot', () => {
    assert.throws(
      () =>
        defineWorkflow({
          name: 'watcher',
          version: 1,
          input: z.object({}),
          events: {},
          machine: setup({ actors: { kid: childWorkflow(kid) } }).createMachine({
            initial: 'w',
            states: { w: { invoke: { src: 'kid', id: 'k', onSnapshot: { actions: () => {} } } } },
          }),
        }),
      /onSnapshot/,
    );
  });
});
