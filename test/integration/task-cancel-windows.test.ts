// A cancel (the invoking state was left) that reaches the engine while it prepares an attempt,
// between two attempts, or between reading the task's record and running it, runs no attempt.
// The cancel is made to land in each window by holding the engine's own store calls until the
// instance has left its state and the cancel has been published.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import type { KV } from '@nats-io/kv';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow, type Engine } from '../../engine/index.js';
import { decodeJson } from '../../engine/internal.js';
import { eventually, memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

const runs: Record<string, number> = { stream: 0, local: 0 };

function stoppable(name: string, fromStream: boolean) {
  return defineWorkflow({
    name,
    version: 1,
    input: z.object({}),
    events: { STOP: z.object({}) },
    machine: setup({
      actors: {
        work: activity(
          async () => {
            runs[name] = (runs[name] ?? 0) + 1;
            throw new Error('failing');
          },
          // From the tasks stream (it heartbeats), or in process with a retry wait under the hold time.
          fromStream
            ? { retry: { maxAttempts: 3, initialIntervalMs: 500, jitter: 0 }, heartbeatTimeoutMs: 60_000 }
            : { retry: { maxAttempts: 5, initialIntervalMs: 800, backoffCoefficient: 1, jitter: 0 } },
        ),
      },
    }).createMachine({
      initial: 'working',
      states: {
        working: { invoke: { src: 'work', onError: 'failed' }, on: { STOP: 'stopped' } },
        stopped: { type: 'final' },
        failed: { type: 'final' },
      },
    }),
  });
}

const stream = stoppable('stream', true);
const local = stoppable('local', false);

/** The engine's runtime, to hold its store calls at a chosen point (white-box). */
type Internals = { tasks: { rt: { control: KV; records: { of(workflow: string, id: string): KV } } } };
const internals = (engine: Engine): Internals => engine as unknown as Internals;

describe('a task cancelled while an attempt is prepared', () => {
  const suite = natsForSuite();

  async function run(
    workflow: ReturnType<typeof stoppable>,
    hold: (engine: Engine, stopNow: () => Promise<void>) => void,
    engineOptions: { localHoldMs?: number } = {},
  ): Promise<void> {
    const namespace = uniqueNamespace('cancelwin');
    const options = { servers: suite.nats.url, namespace, workflows: [workflow], logger: memoryLogger() };
    const engine = await createEngine({ ...options, ...engineOptions });
    const client = await createClient(options);
    const cancels = suite.nc.subscribe(`${namespace}.taskcancel.>`, { max: 1 });
    // Leaves the invoking state and waits until its cancel is out (and has reached the engine).
    const stopNow = async (): Promise<void> => {
      await client.send(workflow, 'i1', { type: 'STOP' });
      await client.waitFor(workflow, 'i1', (i) => i.status === 'done', { timeoutMs: 10_000 });
      for await (const _ of cancels) break;
      await sleep(300);
    };
    hold(engine, stopNow);
    try {
      await client.start(workflow, { id: 'i1', input: {} });
      const end = await client.waitFor(workflow, 'i1', (i) => i.status === 'done', { timeoutMs: 10_000 });
      assert.equal(end.value, 'stopped');
      await sleep(1_500);
    } finally {
      cancels.unsubscribe();
      await client.close();
      await engine.close();
    }
  }

  /** Holds the engine's first write of a task progress entry matching `which` until `stopNow` is done. */
  function holdProgressWrite(which: (value: Record<string, unknown>) => boolean) {
    return (engine: Engine, stopNow: () => Promise<void>): void => {
      const control = internals(engine).tasks.rt.control;
      let held = false;
      const holding = async (key: string, value: unknown, write: Promise<number>): Promise<number> => {
        const revision = await write;
        if (!held && key.startsWith('task.') && which(decodeJson(value as Uint8Array) as Record<string, unknown>)) {
          held = true;
          await stopNow();
        }
        return revision;
      };
      // An attempt is counted by compare-and-set (create or update); other entries are put.
      const { put, create, update } = { put: control.put.bind(control), create: control.create.bind(control), update: control.update.bind(control) };
      control.put = (key, value, opts) => holding(key, value, put(key, value, opts));
      control.create = (key, value) => holding(key, value, create(key, value));
      control.update = (key, value, revision) => holding(key, value, update(key, value, revision));
    };
  }

  it('from the tasks stream: a cancel while its attempt is counted runs no attempt', async () => {
    await run(
      stream,
      holdProgressWrite((v) => v.started === 1),
    );
    assert.equal(runs.stream, 0, 'the activity did not run after its state was left');
  });

  it('from the tasks stream: a cancel after its record was read runs no attempt', async () => {
    runs.stream = 0;
    await run(stream, (engine, stopNow) => {
      // The task service reads the record before its state is left, and the cancel comes before it runs the task.
      const tasks = internals(engine).tasks;
      const rt = tasks.rt;
      let held = false;
      const records = {
        ...rt.records,
        of: (workflow: string, id: string): KV => {
          const kv = rt.records.of(workflow, id);
          return Object.assign(Object.create(kv) as KV, {
            get: async (key: string) => {
              const entry = await kv.get(key);
              if (!held && entry) {
                held = true;
                await stopNow();
              }
              return entry;
            },
          });
        },
      };
      tasks.rt = Object.assign(Object.create(rt) as Internals['tasks']['rt'], { records });
    });
    assert.equal(runs.stream, 0, 'the activity did not run after its state was left');
  });

  it('in process: a cancel while the failed attempt is recorded runs no further attempt', async () => {
    await run(
      local,
      holdProgressWrite((v) => v.lastError !== undefined),
      { localHoldMs: 2_000 },
    );
    await eventually(() => assert.equal(runs.local, 1));
    assert.equal(runs.local, 1, 'no attempt after the state was left');
  });
});
