// Two parents of different workflows with the same id invoke the same child workflow under the
// same invoke id: the child id is taken by the first, and the second parent's invoke ends with an
// error. Their child starts shared a message id (the parent's workflow was not in it), so the
// second was dropped as a conflicting duplicate and its parent waited for ever.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assign, sendTo, setup } from 'xstate';
import { z } from 'zod';
import { childWorkflow, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const hold = defineWorkflow({
  name: 'hold',
  version: 1,
  input: z.object({ by: z.string() }),
  events: { RELEASE: z.object({}) },
  machine: setup({}).createMachine({ initial: 'held', states: { held: { on: { RELEASE: 'released' } }, released: { type: 'final' } } }),
});

function parentNamed(name: string) {
  return defineWorkflow({
    name,
    version: 1,
    input: z.object({}),
    events: {},
    machine: setup({ types: { context: {} as { error?: string } }, actors: { hold: childWorkflow(hold) } }).createMachine({
      context: {},
      initial: 'holding',
      states: {
        holding: {
          invoke: {
            id: 'h',
            src: 'hold',
            input: () => ({ by: name }),
            onDone: 'done',
            onError: { target: 'refused', actions: assign({ error: ({ event }) => (event.error as { message?: string }).message }) },
          },
        },
        done: { type: 'final' },
        refused: { type: 'final' },
      },
    }),
  });
}
const left = parentNamed('left');
const right = parentNamed('right');

/** Invokes `hold` under the same invoke id, and leaves on QUIT (which stops its child). */
const quitter = defineWorkflow({
  name: 'quitter',
  version: 1,
  input: z.object({}),
  events: { QUIT: z.object({}) },
  machine: setup({ actors: { hold: childWorkflow(hold) } }).createMachine({
    initial: 'holding',
    states: {
      holding: { invoke: { id: 'h', src: 'hold', input: () => ({ by: 'quitter' }), onError: 'refused' }, on: { QUIT: 'gone' } },
      gone: { type: 'final' },
      refused: { type: 'final' },
    },
  }),
});

/** Invokes `hold` under the same invoke id and sends its child RELEASE at once (before it can hear of a refusal). */
const poker = defineWorkflow({
  name: 'poker',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({ actors: { hold: childWorkflow(hold) } }).createMachine({
    initial: 'holding',
    states: {
      holding: {
        invoke: { id: 'h', src: 'hold', input: () => ({ by: 'poker' }), onError: 'refused' },
        initial: 'poking',
        states: { poking: { entry: sendTo('h', { type: 'RELEASE' }) } },
      },
      refused: { type: 'final' },
    },
  }),
});

/** As poker, but its RELEASE is delayed: the timer fires after it heard of the refusal, and it still runs. */
const latePoker = defineWorkflow({
  name: 'latepoker',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({ actors: { hold: childWorkflow(hold) } }).createMachine({
    initial: 'holding',
    states: {
      holding: {
        invoke: { id: 'h', src: 'hold', input: () => ({ by: 'latepoker' }), onError: 'refused' },
        initial: 'poking',
        states: { poking: { entry: sendTo('h', { type: 'RELEASE' }, { delay: 600 }) } },
      },
      refused: {},
    },
  }),
});

describe('two parents of different workflows, same id, same invoke id', () => {
  const suite = natsForSuite();

  it("the second one's invoke ends with an error", async () => {
    const namespace = uniqueNamespace('twoparents');
    const options = { servers: suite.nats.url, namespace, workflows: [left, right, hold], logger: memoryLogger() };
    const engine = await createEngine(options);
    const client = await createClient(options);
    try {
      await client.start(left, { id: 'x', input: {} });
      await client.waitFor(hold, 'x_h', (i) => i.context !== undefined, { timeoutMs: 10_000 });
      await client.start(right, { id: 'x', input: {} });
      const second = await client.waitFor(right, 'x', (i) => i.status === 'done', { timeoutMs: 10_000 });
      assert.equal(second.value, 'refused');
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it("the second one's stop of its child (before it heard of the refusal) leaves the first one's child alone", async () => {
    const namespace = uniqueNamespace('twoparentsstop');
    const options = { servers: suite.nats.url, namespace, workflows: [left, quitter, hold], logger: memoryLogger() };
    const engine = await createEngine(options);
    const client = await createClient(options);
    try {
      await client.start(left, { id: 'x', input: {} });
      await client.waitFor(hold, 'x_h', (i) => i.context !== undefined, { timeoutMs: 10_000 });
      // QUIT is in quitter's inbox right behind its start, so it leaves its state (stopping what it
      // takes for its child, x_h) before it hears that the child's start was refused.
      await client.start(quitter, { id: 'x', input: {}, wait: false });
      await client.send(quitter, 'x', { type: 'QUIT' });
      assert.equal((await client.waitFor(quitter, 'x', (i) => i.status === 'done', { timeoutMs: 10_000 })).value, 'gone');
      // A stop is sent with quitter's write, at once: applied to x_h, it would show within this wait.
      await new Promise((r) => setTimeout(r, 1_000));
      assert.equal((await client.get(hold, 'x_h'))?.status, 'running', "left's child still runs");
      assert.equal((await client.get(left, 'x'))?.value, 'holding', 'left still waits for it');
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it("the second one's sends to its child (before it heard of the refusal) do not reach the first one's child", async () => {
    const namespace = uniqueNamespace('twoparentssend');
    const options = { servers: suite.nats.url, namespace, workflows: [left, poker, hold], logger: memoryLogger() };
    const engine = await createEngine(options);
    const client = await createClient(options);
    try {
      await client.start(left, { id: 'x', input: {} });
      await client.waitFor(hold, 'x_h', (i) => i.context !== undefined, { timeoutMs: 10_000 });
      await client.start(poker, { id: 'x', input: {} });
      assert.equal((await client.waitFor(poker, 'x', (i) => i.status === 'done', { timeoutMs: 10_000 })).value, 'refused');
      // The RELEASE went out with poker's first write, before the refusal: applied, it would show by now.
      await new Promise((r) => setTimeout(r, 1_000));
      assert.equal((await client.get(hold, 'x_h'))?.value, 'held', "left's child was not released by poker");
      assert.equal((await client.get(left, 'x'))?.value, 'holding', 'left still waits for it');
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it("the second one's delayed send to its child, fired after it heard of the refusal, does not reach the first one's child", async () => {
    const namespace = uniqueNamespace('twoparentslate');
    const options = { servers: suite.nats.url, namespace, workflows: [left, latePoker, hold], logger: memoryLogger() };
    const engine = await createEngine(options);
    const client = await createClient(options);
    try {
      await client.start(left, { id: 'x', input: {} });
      await client.waitFor(hold, 'x_h', (i) => i.context !== undefined, { timeoutMs: 10_000 });
      await client.start(latePoker, { id: 'x', input: {} });
      assert.equal((await client.waitFor(latePoker, 'x', (i) => i.value === 'refused', { timeoutMs: 10_000 })).status, 'running');
      // The timer (600 ms after latepoker's start) fires while latepoker still runs.
      await client.waitFor(latePoker, 'x', (i) => i.timers.length === 0, { timeoutMs: 10_000 });
      await new Promise((r) => setTimeout(r, 1_000));
      assert.equal((await client.get(hold, 'x_h'))?.value, 'held', "left's child was not released by latepoker's timer");
      assert.equal((await client.get(left, 'x'))?.value, 'holding', 'left still waits for it');
      const letters = await client.deadLetters();
      assert.ok(
        letters.some((l) => l.workflow === 'hold' && l.id === 'x_h' && l.reason.includes('[not_parent]')),
        `the send is dead-lettered as not from the parent: ${JSON.stringify(letters)}`,
      );
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
