// Custom actions run after the state write, at least once, with a stable idempotency key.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { createEngine, defineWorkflow, type Engine } from '../../engine/index.js';
import { eventually, memoryLogger, startNats, uniqueNamespace } from '../helpers.js';

const calls: Array<{ id: string; key: string; n: number; event: string; to?: string }> = [];
let failNext = 0;

const notifier = defineWorkflow({
  name: 'notifier',
  version: 1,
  input: z.object({ id: z.string() }),
  events: { BUMP: z.object({}), FLAKY: z.object({}) },
  machine: setup({
    types: { context: {} as { id: string; n: number }, input: {} as { id: string } },
    actions: {
      notify: (
        { context, event, idempotencyKey }: { context: { id: string; n: number }; event: { type: string }; idempotencyKey?: string },
        params?: { to: string },
      ) => {
        calls.push({ id: context.id, key: idempotencyKey!, n: context.n, event: event.type, ...(params ? { to: params.to } : {}) });
      },
      flaky: () => {
        if (failNext > 0) {
          failNext--;
          throw new Error('downstream unavailable');
        }
        calls.push({ id: 'flaky', key: 'flaky', n: 0, event: 'FLAKY' });
      },
    },
  }).createMachine({
    context: ({ input }) => ({ id: input.id, n: 0 }),
    initial: 'on',
    entry: { type: 'notify', params: { to: 'ops' } },
    states: {
      on: {
        on: {
          BUMP: { actions: [assign({ n: ({ context }) => context.n + 1 }), 'notify'] },
          FLAKY: { actions: 'flaky' },
        },
      },
    },
  }),
});

/** A call with its key's `@<born>` (the start's sequence, see instanceTag) written as `@N`. */
function bornAsN<T extends { key: string }>(call: T): T {
  return { ...call, key: call.key.replace(/@\d+\./, '@N.') };
}

describe('custom actions', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let crashAfterWriteOf: string | undefined;
  const logger = memoryLogger();
  before(async () => {
    nats = await startNats();
    engine = await createEngine({
      servers: nats.url,
      namespace: uniqueNamespace('actions'),
      workflows: [notifier],
      logger,
      testHooks: {
        afterStateWrite: (key) => {
          if (key === crashAfterWriteOf) {
            crashAfterWriteOf = undefined;
            throw new Error('simulated crash after the state write');
          }
        },
      },
    });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('runs the start action and transition actions after the write, with stable keys', async () => {
    await engine.start(notifier, { id: 'a', input: { id: 'a' } });
    await eventually(() =>
      assert.deepEqual(calls.filter((c) => c.id === 'a').map(bornAsN), [{ id: 'a', key: 'notifier.a@N.1.0', n: 0, event: 'xstate.init', to: 'ops' }]),
    );
    await engine.send(notifier, 'a', { type: 'BUMP' });
    await eventually(() => assert.equal(calls.filter((c) => c.id === 'a').length, 2));
    assert.deepEqual(bornAsN(calls.filter((c) => c.id === 'a')[1]!), { id: 'a', key: 'notifier.a@N.2.0', n: 1, event: 'BUMP' });
  });

  it('runs an action again when the engine failed between the write and running it', async () => {
    await engine.start(notifier, { id: 'b', input: { id: 'b' } });
    await eventually(() => assert.equal(calls.filter((c) => c.id === 'b').length, 1));
    crashAfterWriteOf = 'notifier.b';
    await engine.send(notifier, 'b', { type: 'BUMP' });
    await eventually(() => assert.equal(calls.filter((c) => c.id === 'b').length, 2));
    assert.equal(bornAsN(calls.filter((c) => c.id === 'b')[1]!).key, 'notifier.b@N.2.0');
    const inst = await engine.get(notifier, 'b');
    assert.equal(inst!.revision, 2, 'the event was applied once');
  });

  it('retries a throwing action, then goes on', async () => {
    await engine.start(notifier, { id: 'c', input: { id: 'c' } });
    failNext = 2;
    await engine.send(notifier, 'c', { type: 'FLAKY' });
    await eventually(() => assert.equal(calls.filter((c) => c.id === 'flaky').length, 1), 5_000);
    failNext = 10;
    await engine.send(notifier, 'c', { type: 'FLAKY' });
    await eventually(() => assert.ok(logger.lines.some((l) => /action 'flaky' .* failed 4 times/.test(l))), 5_000);
    await engine.send(notifier, 'c', { type: 'BUMP' });
    await engine.waitFor(notifier, 'c', (s) => (s.context as { n: number }).n === 1, { timeoutMs: 5_000 });
  });
});
