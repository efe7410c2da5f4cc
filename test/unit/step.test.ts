import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assign, raise, setup } from 'xstate';
import { z } from 'zod';
import { activity, defineWorkflow } from '../../engine/index.js';
import { applyEvents, startInstance } from '../../engine/step/step.js';
import { MachineRunner } from '../../engine/step/runner.js';
import { verifyInstance } from '../../engine/step/verify.js';

const counter = defineWorkflow({
  name: 'counter',
  version: 1,
  input: z.object({ start: z.number() }),
  events: { ADD: z.object({ k: z.number() }), BOOM: z.object({}), STOP: z.object({}) },
  machine: setup({ types: { context: {} as { n: number; log: number[] }, input: {} as { start: number } } }).createMachine({
    initial: 'on',
    context: ({ input }) => ({ n: input.start, log: [] }),
    states: {
      on: {
        on: {
          ADD: {
            actions: assign(({ context, event }) => ({
              n: context.n + (event as unknown as { k: number }).k,
              log: [...context.log, (event as unknown as { k: number }).k],
            })),
          },
          BOOM: {
            actions: assign(() => {
              throw new Error('kaput');
            }),
          },
          STOP: 'off',
        },
      },
      off: { type: 'final' },
    },
    output: ({ context }) => ({ total: context.n }),
  }),
});

const runner = new MachineRunner(counter.machine);
const add = (seq: number, k: number) => ({ seq, timeMs: 0, event: { type: 'ADD', k } });

describe('the pure step', () => {
  it('applies events in order in one record and counts revisions', () => {
    const s = startInstance(counter, runner, 'c1', { start: 1 }, 1_000);
    assert.equal(s.record.revision, 1);
    const r = applyEvents(runner, s.record, s.snapshot, [add(5, 2), add(6, 3)], 2_000);
    assert.equal(r.changed, true);
    assert.deepEqual(r.record.snapshot['context'], { n: 6, log: [2, 3] });
    assert.equal(r.record.revision, 3);
    assert.equal(r.record.lastSeq, 6);
    assert.deepEqual(
      r.entries.map((e) => e.revision),
      [2, 3],
    );
    assert.deepEqual(r.record.lastHistory, r.entries);
  });

  it("applies a sender's event that carries a field named born (only engine events are matched to an instance's born)", () => {
    const s = startInstance(counter, runner, 'c-born', { start: 0 }, 1_000, undefined, undefined, 7);
    assert.equal(s.record.born, 7);
    const r = applyEvents(runner, s.record, s.snapshot, [{ seq: 8, timeMs: 0, event: { type: 'ADD', k: 2, born: 3 } }], 2_000);
    assert.deepEqual(r.record.snapshot['context'], { n: 2, log: [2] });
  });

  it('changes nothing for a timer fire or task outcome made for an earlier instance with the same id', () => {
    const s = startInstance(counter, runner, 'c-born', { start: 0 }, 1_000, undefined, undefined, 7);
    const stale = { seq: 8, timeMs: 0, event: { type: 'jetstate.task', invokeId: 'x', token: 1, born: 3, ok: true } };
    const r = applyEvents(runner, s.record, s.snapshot, [stale], 2_000);
    assert.equal(r.record.revision, 1);
  });

  it("fires both of two delayed raises with the same id when the newer one's fire comes first", () => {
    // Two ARMs in one batch schedule two timers under the send id 't', due at the same time; their
    // fire messages may reach the stream in either order. The newer one's fire first fires the
    // older (XState fires it first), which moves the newer to a derived key: it must still fire.
    const armed = defineWorkflow({
      name: 'armed',
      version: 1,
      input: z.object({}),
      events: { ARM: z.object({}) },
      machine: setup({ types: { context: {} as { n: number } } }).createMachine({
        context: { n: 0 },
        initial: 'on',
        states: {
          on: {
            on: {
              ARM: { actions: raise({ type: 'TICK' }, { id: 't', delay: 400 }) },
              TICK: { actions: assign(({ context }) => ({ n: context.n + 1 })) },
            },
          },
        },
      }),
    });
    const r0 = new MachineRunner(armed.machine);
    const s = startInstance(armed, r0, 'a1', {}, 1_000);
    const arm = (seq: number) => ({ seq, timeMs: 1_000, event: { type: 'ARM' } });
    const a = applyEvents(r0, s.record, s.snapshot, [arm(2), arm(3)], 1_000);
    const tokens = Object.values(a.record.timers).map((t) => t.token);
    assert.equal(tokens.length, 2, 'two timers pending');
    const fire = (seq: number, token: number) => ({ seq, timeMs: 1_400, event: { type: 'jetstate.timer', timerId: 't', token } });
    const newerFirst = applyEvents(r0, a.record, a.snapshot, [fire(4, Math.max(...tokens))], 1_400);
    assert.deepEqual(newerFirst.record.snapshot['context'], { n: 2 }, 'both timers fired');
    assert.deepEqual(newerFirst.record.timers, {}, 'no timer left pending');
    const olderLater = applyEvents(r0, newerFirst.record, newerFirst.snapshot, [fire(5, Math.min(...tokens))], 1_400);
    assert.deepEqual(olderLater.record.snapshot['context'], { n: 2 }, "the older one's own fire changes nothing");
  });

  it('skips events at or below lastSeq (redelivery) and changes nothing', () => {
    const s = startInstance(counter, runner, 'c1', { start: 0 }, 0);
    const once = applyEvents(runner, s.record, s.snapshot, [add(1, 1), add(2, 2)], 0);
    const again = applyEvents(runner, once.record, once.snapshot, [add(1, 1), add(2, 2)], 0);
    assert.equal(again.changed, false);
    assert.equal(again.record, once.record);
    const more = applyEvents(runner, once.record, once.snapshot, [add(2, 2), add(3, 3)], 0);
    assert.deepEqual(more.record.snapshot['context'], { n: 6, log: [1, 2, 3] });
  });

  it('records rejections without changing the state', () => {
    const s = startInstance(counter, runner, 'c1', { start: 0 }, 0);
    const r = applyEvents(runner, s.record, s.snapshot, [{ seq: 1, timeMs: 0, event: { type: 'X' }, rejected: 'not declared' }], 0);
    assert.equal(r.changed, false);
    assert.equal(r.entries[0]!.kind, 'rejected');
    assert.equal(r.entries[0]!.reason, 'not declared');
  });

  it('fails the instance when an action throws, deterministically, and then takes no more transitions', () => {
    const s = startInstance(counter, runner, 'c1', { start: 0 }, 0);
    const r = applyEvents(runner, s.record, s.snapshot, [{ seq: 1, timeMs: 0, event: { type: 'BOOM' } }, add(2, 1)], 0);
    assert.equal(r.record.status, 'failed');
    assert.match(r.record.error!, /kaput/);
    assert.equal(r.entries[1]!.reason, 'instance is failed');
    assert.deepEqual(r.record.snapshot['context'], { n: 0, log: [] });
  });

  it('records a cancel or terminate of a finished instance in its history (it changes nothing, like any event after the end)', () => {
    const s = startInstance(counter, runner, 'c1', { start: 4 }, 0);
    const done = applyEvents(runner, s.record, s.snapshot, [{ seq: 1, timeMs: 0, event: { type: 'STOP' } }], 0);
    const r = applyEvents(
      runner,
      done.record,
      done.snapshot,
      [
        { seq: 2, timeMs: 0, event: { type: 'jetstate.cancel', reason: 'late' } },
        { seq: 3, timeMs: 0, event: { type: 'jetstate.terminate' } },
      ],
      0,
    );
    assert.deepEqual(
      r.entries.map((e) => [e.seq, e.status, e.reason, e.from, e.to]),
      [
        [2, 'done', 'instance is done', 'off', 'off'],
        [3, 'done', 'instance is done', 'off', 'off'],
      ],
    );
    assert.equal(r.record.status, 'done');
    assert.equal(r.record.error, undefined);
    assert.equal(r.record.lastSeq, 3);
    assert.equal(verifyInstance(counter, runner, r.record, [...s.record.lastHistory, ...done.entries, ...r.entries]).ok, true);
  });

  it('stores the output of a final state', () => {
    const s = startInstance(counter, runner, 'c1', { start: 4 }, 0);
    const r = applyEvents(runner, s.record, s.snapshot, [{ seq: 1, timeMs: 0, event: { type: 'STOP' } }], 0);
    assert.equal(r.record.status, 'done');
    assert.deepEqual(r.record.output, { total: 4 });
  });

  it('verify reproduces a record from its history and spots a tampered one', () => {
    const s = startInstance(counter, runner, 'c1', { start: 0 }, 0);
    const r = applyEvents(runner, s.record, s.snapshot, [add(1, 1), add(2, 2)], 0);
    const history = [s.entry, ...r.entries];
    assert.deepEqual(verifyInstance(counter, runner, r.record, history).problems, []);
    const tampered = { ...r.record, snapshot: { ...r.record.snapshot, context: { n: 99, log: [1, 2] } } };
    const report = verifyInstance(counter, runner, tampered, history);
    assert.equal(report.ok, false);
    assert.match(report.problems.join('\n'), /differs from the stored one/);
    assert.match(verifyInstance(counter, runner, r.record, [s.entry, r.entries[1]!]).problems.join('\n'), /skips from revision 1 to 3/);
  });

  it('names a task outcome in history as the machine saw it, and replays the internal event', () => {
    const job = defineWorkflow({
      name: 'job',
      version: 1,
      input: z.object({}),
      events: {},
      machine: setup({ actors: { work: activity(async () => 1) } }).createMachine({
        initial: 'working',
        states: { working: { invoke: { id: 'settle', src: 'work', onDone: 'done', onError: 'failed' } }, done: { type: 'final' }, failed: { type: 'final' } },
      }),
    });
    const jobRunner = new MachineRunner(job.machine);
    for (const ok of [true, false]) {
      const s = startInstance(job, jobRunner, `j-${ok}`, {}, 0);
      const task = s.record.tasks['settle']!;
      const outcome: Record<string, unknown> = ok ? { ok, output: 1 } : { ok, error: { name: 'Error', message: 'no' } };
      const r = applyEvents(
        jobRunner,
        s.record,
        s.snapshot,
        [{ seq: 1, timeMs: 0, event: { type: 'jetstate.task', invokeId: 'settle', token: task.token, ...outcome } as { type: string } }],
        0,
      );
      const [entry] = r.entries;
      assert.equal((entry!.event as { type: string }).type, 'jetstate.task', 'the internal event stays, for replay');
      assert.equal(entry!.actorEvent, ok ? 'xstate.done.actor.settle' : 'xstate.error.actor.settle');
      assert.equal(entry!.to, ok ? 'done' : 'failed');
      assert.deepEqual(verifyInstance(job, jobRunner, r.record, [s.entry, ...r.entries]).problems, []);
    }
    // Ordinary events carry none.
    const c = startInstance(counter, runner, 'c1', { start: 0 }, 0);
    assert.equal(applyEvents(runner, c.record, c.snapshot, [add(1, 1)], 0).entries[0]!.actorEvent, undefined);
  });
});
