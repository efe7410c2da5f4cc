// A start names the version it wants (a client built against an older one). Its sender must also
// pass the start rules of the newest version registered: an older version's weaker rules (here, no
// identity required) must not let an anonymous sender create an instance and drive it under them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jetstream } from '@nats-io/jetstream';
import { setup } from 'xstate';
import { z } from 'zod';
import { createEngine, defineWorkflow } from '../../engine/index.js';
import { layout, partitionOf } from '../../engine/internal.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const machine = setup({}).createMachine({ initial: 'open', states: { open: { on: { APPROVE: 'approved' } }, approved: {} } });
const loanV1 = defineWorkflow({ name: 'loan', version: 1, input: z.object({}), events: { APPROVE: z.object({}) }, machine });
const loanV2 = defineWorkflow({ name: 'loan', version: 2, input: z.object({}), events: { APPROVE: z.object({}) }, requireIdentity: true, machine });

describe('a start for an older version', () => {
  const suite = natsForSuite();

  it('is judged by the newest version rules too: an anonymous start of version 1 is refused when version 2 requires an identity', async () => {
    const namespace = uniqueNamespace('oldver');
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [loanV1, loanV2], logger: memoryLogger() });
    try {
      const subject = layout(namespace).eventSubject(partitionOf('loan', 'evil', engine.partitions), 'loan', 'evil');
      const js = jetstream(suite.nc);
      await js.publish(subject, JSON.stringify({ type: 'jetstate.start', input: {}, version: 1 }));
      await js.publish(subject, JSON.stringify({ type: 'APPROVE' }));
      const letters = await eventually(async () => {
        const all = (await engine.deadLetters()).filter((l) => l.id === 'evil');
        assert.equal(all.length, 2);
        return all;
      });
      assert.match(letters[0]!.reason, /identity/);
      // (A start not applied shows as pending until the partition's checkpoint passes it.)
      await eventually(async () => assert.equal(await engine.get(loanV2, 'evil'), null, 'no instance was created'));
    } finally {
      await engine.close();
    }
  });
});
