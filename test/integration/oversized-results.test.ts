// A task's or a child's result larger than the receiving workflow's maxEventBytes reaches the
// instance as an error of its invoke, saying so: it was dead-lettered, and the instance waited for
// ever in the invoking state.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, childWorkflow, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const BIG = 300_000; // over the default maxEventBytes (256 KiB), under a NATS message (1 MiB)

const report = defineWorkflow({
  name: 'report',
  version: 1,
  input: z.object({}),
  events: {},
  limits: { maxSnapshotBytes: 900_000 },
  machine: setup({}).createMachine({
    initial: 'built',
    states: { built: { type: 'final' } },
    output: () => ({ blob: 'x'.repeat(BIG) }),
  }),
});

const desk = defineWorkflow({
  name: 'desk',
  version: 1,
  input: z.object({ via: z.enum(['task', 'child']) }),
  events: {},
  machine: setup({
    types: { context: {} as { via: 'task' | 'child'; error?: string }, input: {} as { via: 'task' | 'child' } },
    actors: { fetchBig: activity(async () => ({ blob: 'x'.repeat(BIG) })), report: childWorkflow(report) },
  }).createMachine({
    context: ({ input }) => ({ via: input.via }),
    initial: 'choosing',
    states: {
      choosing: { always: [{ guard: ({ context }) => context.via === 'task', target: 'byTask' }, { target: 'byChild' }] },
      byTask: {
        invoke: {
          src: 'fetchBig',
          onDone: 'got',
          onError: { target: 'refused', actions: assign({ error: ({ event }) => (event.error as { message?: string }).message }) },
        },
      },
      byChild: {
        invoke: {
          id: 'rep',
          src: 'report',
          onDone: 'got',
          onError: { target: 'refused', actions: assign({ error: ({ event }) => (event.error as { message?: string }).message }) },
        },
      },
      got: { type: 'final' },
      refused: { type: 'final' },
    },
  }),
});

describe('a result over the receiving workflow maxEventBytes', () => {
  const suite = natsForSuite();

  for (const via of ['task', 'child'] as const) {
    it(`from a ${via}: an error of the invoke that names the limit`, async () => {
      const namespace = uniqueNamespace(`oversized${via}`);
      const options = { servers: suite.nats.url, namespace, workflows: [desk, report], logger: memoryLogger() };
      const engine = await createEngine(options);
      const client = await createClient(options);
      try {
        await client.start(desk, { id: 'd1', input: { via } });
        const settled = await client.waitFor(desk, 'd1', (i) => i.status === 'done', { timeoutMs: 15_000 });
        assert.equal(settled.value, 'refused');
        assert.match(String(settled.context.error), /over this workflow's maxEventBytes limit of 262144/);
      } finally {
        await client.close();
        await engine.close();
      }
    });
  }
});
