// A task of an instance whose version no live engine has (its engine gone, the others older):
// every engine left it for another every second, for ever, and nothing said so. Now the engines
// without the version say, once a minute per task, that it waits for an engine with it; one with
// the version started later runs it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow } from '../../engine/index.js';
import { eventually, labelledLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

let release!: () => void;
let gate = new Promise<void>((r) => (release = r));

function version(v: number) {
  return defineWorkflow({
    name: 'versioned',
    version: v,
    input: z.object({}),
    events: {},
    machine: setup({
      actors: {
        // From the tasks stream; waits for the test to let it finish.
        work: activity(
          async ({ signal }) => {
            await Promise.race([gate, new Promise((_, ko) => signal.addEventListener('abort', () => ko(signal.reason as Error), { once: true }))]);
            return v;
          },
          { inProcess: false },
        ),
      },
    }).createMachine({ initial: 'working', states: { working: { invoke: { src: 'work', onDone: 'done' } }, done: { type: 'final' } } }),
  });
}
const v1 = version(1);
const v2 = version(2);

describe('a task whose version no live engine has', () => {
  const suite = natsForSuite();

  it('is said to wait for an engine with its version, and runs once one is there', async () => {
    const namespace = uniqueNamespace('taskver');
    const lines: string[] = [];
    const base = { servers: suite.nats.url, namespace, partitions: 1, leaseTtlMs: 1_000, drainTimeoutMs: 200 };
    const newer = await createEngine({ ...base, workflows: [v1, v2], logger: labelledLogger('newer', lines) });
    await newer.start(v2, { id: 'x', input: {} });
    // Its attempt is under way on the newer engine, which then goes; the older one stays.
    await new Promise((r) => setTimeout(r, 300));
    const older = await createEngine({ ...base, workflows: [v1], logger: labelledLogger('older', lines) });
    await newer.close();
    let again: Awaited<ReturnType<typeof createEngine>> | undefined;
    try {
      await eventually(
        () =>
          assert.ok(
            lines.some((l) => l.startsWith('older warn:') && /version 2/.test(l) && /no live engine/.test(l)),
            lines.join('\n'),
          ),
        10_000,
      );
      release();
      again = await createEngine({ ...base, workflows: [v1, v2], logger: labelledLogger('again', lines) });
      assert.equal((await again.waitFor(v2, 'x', (i) => i.status === 'done', { timeoutMs: 15_000 })).value, 'done');
    } finally {
      await again?.close();
      await older.close();
      gate = Promise.resolve();
    }
  });
});
