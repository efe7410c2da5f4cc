// A task's output that fits in an event but whose assignment would make the instance's record
// larger than its workflow's maxSnapshotBytes reaches the instance as an error of its invoke,
// naming the limit, whether the task ran in process or from the tasks stream. Before, an
// in-process outcome was dropped with nothing logged and a stream one was dead-lettered; either
// way the instance waited for ever in the invoking state.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

function collector(name: string, fromStream: boolean) {
  return defineWorkflow({
    name,
    version: 1,
    input: z.object({}),
    events: {},
    limits: { maxSnapshotBytes: 8_192 },
    machine: setup({
      types: { context: {} as { blob?: string; error?: string } },
      actors: {
        // 10 KB: far under maxEventBytes, over the record's limit once kept in the context.
        fetch: activity(async () => 'x'.repeat(10_000), fromStream ? { heartbeatTimeoutMs: 60_000 } : {}),
      },
    }).createMachine({
      context: {},
      initial: 'fetching',
      states: {
        fetching: {
          invoke: {
            src: 'fetch',
            onDone: { target: 'kept', actions: assign({ blob: ({ event }) => event.output as string }) },
            onError: { target: 'refused', actions: assign({ error: ({ event }) => (event.error as { message?: string }).message }) },
          },
        },
        kept: { type: 'final' },
        refused: { type: 'final' },
      },
    }),
  });
}

describe('a task output that would make the record too large', () => {
  const suite = natsForSuite();

  for (const [label, fromStream] of [
    ['in process', false],
    ['from the tasks stream', true],
  ] as const) {
    it(`${label}: an error of the invoke that names the limit`, async () => {
      const wf = collector(fromStream ? 'collectstream' : 'collectlocal', fromStream);
      const namespace = uniqueNamespace('oversnap');
      const options = { servers: suite.nats.url, namespace, workflows: [wf], logger: memoryLogger() };
      const engine = await createEngine(options);
      const client = await createClient(options);
      try {
        await client.start(wf, { id: 'c1', input: {} });
        const settled = await client.waitFor(wf, 'c1', (i) => i.status === 'done', { timeoutMs: 15_000 });
        assert.equal(settled.value, 'refused');
        assert.match(String(settled.context.error), /maxSnapshotBytes limit of 8192/);
      } finally {
        await client.close();
        await engine.close();
      }
    });
  }
});
