// The tasks stream's durable consumer of a workflow's activity was named `task_<workflow>_<activity>`:
// `user_signup`.`email` and `user`.`signup_email` shared one name, the first engine's filter won,
// and the other workflow's tasks, once in the stream (a retry waiting longer than localHoldMs),
// were read by nobody: its instance waited for ever with nothing logged.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createEngine, defineWorkflow } from '../../engine/index.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

/** A workflow whose activity fails once, then waits 1.5 s (over localHoldMs) for its retry: the retry goes through the tasks stream. */
function failingOnce(name: string, src: string) {
  let calls = 0;
  return defineWorkflow({
    name,
    version: 1,
    input: z.object({}),
    events: {},
    machine: setup({
      actors: {
        [src]: activity(
          async () => {
            if (calls++ === 0) throw new Error('transient');
            return 'ok';
          },
          { retry: { maxAttempts: 3, initialIntervalMs: 1_500 } },
        ),
      },
    }).createMachine({ initial: 'working', states: { working: { invoke: { src, onDone: 'done' } }, done: { type: 'final' } } }),
  });
}

describe('task consumers of workflows and activities whose names contain underscores', () => {
  const suite = natsForSuite();

  it('user_signup.email and user.signup_email each get their own consumer, and both finish', async () => {
    const namespace = uniqueNamespace('taskcons');
    const signup = failingOnce('user_signup', 'email');
    const user = failingOnce('user', 'signup_email');
    const engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [signup, user], localHoldMs: 500, logger: memoryLogger() });
    try {
      await engine.start(signup, { id: 'x1', input: {} });
      await engine.start(user, { id: 'y1', input: {} });
      assert.equal((await engine.waitFor(signup, 'x1', (i) => i.status === 'done', { timeoutMs: 15_000 })).value, 'done');
      assert.equal((await engine.waitFor(user, 'y1', (i) => i.status === 'done', { timeoutMs: 15_000 })).value, 'done');
    } finally {
      await engine.close();
    }
  });
});
