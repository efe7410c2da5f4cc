// A child workflow terminated or cancelled directly (not by its parent) ends its parent's invoke
// with an error: the parent waited in the invoking state for ever, nothing logged.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { childWorkflow, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const approval = defineWorkflow({
  name: 'approval_child',
  version: 1,
  input: z.object({}),
  events: { APPROVE: z.object({}) },
  machine: setup({}).createMachine({ initial: 'waiting', states: { waiting: { on: { APPROVE: 'approved' } }, approved: { type: 'final' } } }),
});

const request = defineWorkflow({
  name: 'request',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({
    types: { context: {} as { error?: string } },
    actors: { approval: childWorkflow(approval) },
  }).createMachine({
    context: {},
    initial: 'asking',
    states: {
      asking: {
        invoke: {
          id: 'ask',
          src: 'approval',
          onDone: 'granted',
          onError: { target: 'abandoned', actions: assign({ error: ({ event }) => (event.error as { message?: string }).message }) },
        },
      },
      granted: { type: 'final' },
      abandoned: { type: 'final' },
    },
  }),
});

describe('a child workflow stopped from outside', () => {
  const suite = natsForSuite();

  for (const how of ['terminate', 'cancel'] as const) {
    it(`${how}: its parent's invoke ends with an error`, async () => {
      const namespace = uniqueNamespace(`childstopped${how}`);
      const options = { servers: suite.nats.url, namespace, workflows: [request, approval], logger: memoryLogger() };
      const engine = await createEngine(options);
      const client = await createClient(options);
      try {
        await client.start(request, { id: 'r1', input: {} });
        await client.waitFor(approval, 'r1_ask', (i) => i.status === 'running', { timeoutMs: 10_000 });
        await client[how](approval, 'r1_ask', { reason: 'no longer needed' });
        const parent = await client.waitFor(request, 'r1', (i) => i.status === 'done', { timeoutMs: 10_000 });
        assert.equal(parent.value, 'abandoned');
        assert.match(String(parent.context.error), /stopped/);
      } finally {
        await client.close();
        await engine.close();
      }
    });
  }
});
