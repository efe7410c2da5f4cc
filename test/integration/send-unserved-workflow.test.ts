// A send to a workflow no engine serves yet waits, warned with what to do, and is delivered once
// an engine serves that workflow: nothing given up, nothing dead-lettered (a deployment may start
// the sender's service first).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { setup } from 'xstate';
import { z } from 'zod';
import { createClient, createEngine, defineWorkflow, sendToInstance } from '../../engine/index.js';
import { layout } from '../../engine/internal.js';
import { counter } from '../counter-workflow.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

/** GO sends ADD 1 to counter 'a'. */
const caller = defineWorkflow({
  name: 'caller',
  version: 1,
  input: z.object({}),
  events: { GO: z.object({}) },
  machine: setup({}).createMachine({
    initial: 'up',
    states: { up: { on: { GO: { actions: sendToInstance({ workflow: 'counter', id: 'a' }, { type: 'ADD', k: 1 } as never) } } } },
  }),
});

describe('a send to a workflow no engine serves yet', () => {
  const suite = natsForSuite();

  it('waits, warned, and is delivered once an engine serves it', async () => {
    const namespace = uniqueNamespace('unserved');
    const logger = memoryLogger();
    const common = { servers: suite.nats.url, namespace, partitions: 2 };
    const one = await createEngine({ ...common, workflows: [caller], logger });
    const client = await createClient({ ...common, workflows: [caller, counter] });
    let two: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await client.start(caller, { id: 'c', input: {} });
      await client.send(caller, 'c', { type: 'GO' });
      // The first warning comes after 2 s of trying; the next try is 3.2 s after it.
      const warning = await eventually(() => {
        const line = logger.lines.find((l) => l.includes('not stored yet'));
        assert.ok(line);
        return line;
      }, 15_000);
      assert.match(warning, /workflow 'counter' is not served/);
      assert.match(warning, /start an engine with this workflow/);
      assert.ok(!logger.lines.some((l) => l.includes('giving up')), 'not given up');
      two = await createEngine({ ...common, workflows: [counter], logger: memoryLogger() });
      await client.start(counter, { id: 'a', input: { label: 'a' } });
      await client.waitFor(counter, 'a', (i) => i.context.n === 1, { timeoutMs: 15_000 });
      const jsm = await jetstreamManager(suite.nc);
      const dead = await jsm.streams.info(layout(namespace).deadLetterStream).catch(() => undefined);
      assert.equal(dead?.state.messages ?? 0, 0, 'nothing dead-lettered');
    } finally {
      await two?.close();
      await client.close();
      await one.close();
    }
  });
});
