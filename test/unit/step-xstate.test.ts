// The pure step where XState's semantics need more than a transition: timers overdue together,
// delayed raises scheduled twice under one id, sends to itself and delayed sends to other
// instances, what a named action is given, child ids of repeated invocations, systemId, and the
// data and actors a record cannot keep. Each checks that `verify` replays what the step did.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assign, cancel, emit, enqueueActions, fromPromise, log, raise, sendParent, sendTo, setup } from 'xstate';
import { z } from 'zod';
import { activity, childWorkflow, defineWorkflow, type WorkflowDefinition } from '../../engine/index.js';
import { applyEvents, startInstance, type StepEvent } from '../../engine/step/step.js';
import { MachineRunner } from '../../engine/step/runner.js';
import { verifyInstance } from '../../engine/step/verify.js';
import type { HistoryEntry, InstanceRecord } from '../../engine/protocol/record.js';
import type { AnyMachineSnapshot } from 'xstate';

type Ctx = { log: string[]; n: number };
// Typed loosely: it fits machines with any actors (XState types an action by its machine's actors).
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const note = (label: string): any => assign(({ context }: { context: Ctx }) => ({ log: [...context.log, label] }));

/** Drives one instance through the pure step, event by event, keeping its history for verify. */
class Instance {
  readonly runner: MachineRunner;
  record: InstanceRecord;
  snapshot: AnyMachineSnapshot;
  history: HistoryEntry[];
  seq = 0;
  constructor(
    readonly def: WorkflowDefinition,
    input: unknown = {},
    parent?: InstanceRecord['parent'],
  ) {
    this.runner = new MachineRunner(def.machine);
    const s = startInstance(def, this.runner, 'i', input, 1_000, parent);
    this.record = s.record;
    this.snapshot = s.snapshot;
    this.history = [s.entry];
  }
  apply(event: { type: string } & Record<string, unknown>, timeMs = 1_000): ReturnType<typeof applyEvents> {
    const r = applyEvents(this.runner, this.record, this.snapshot, [{ seq: ++this.seq, timeMs, event } as StepEvent], timeMs);
    this.record = r.record;
    this.snapshot = r.snapshot;
    this.history.push(...r.entries);
    return r;
  }
  fire(timerId: string, timeMs: number): ReturnType<typeof applyEvents> {
    const token = this.record.timers[timerId]?.token ?? Object.values(this.record.timers).find((t) => t.sendId === timerId)?.token ?? 0;
    return this.apply({ type: 'jetstate.timer', timerId, token }, timeMs);
  }
  get context(): Ctx {
    return this.record.snapshot['context'] as Ctx;
  }
  verify(): string[] {
    return verifyInstance(this.def, this.runner, this.record, this.history).problems;
  }
}

const wf = (name: string, machine: WorkflowDefinition['machine'], events: string[] = []): WorkflowDefinition =>
  defineWorkflow({ name, version: 1, input: z.object({}).passthrough(), events: Object.fromEntries(events.map((e) => [e, z.object({})])), machine });

describe('timers overdue together', () => {
  const nested = wf(
    'overdue',
    setup({ types: { context: {} as Ctx } }).createMachine({
      id: 'o',
      context: { log: [], n: 0 },
      initial: 'p',
      states: {
        p: { after: { 300: { target: 'x', actions: note('300') } }, initial: 'c', states: { c: { after: { 120: { target: '#o.y', actions: note('120') } } } } },
        x: {},
        y: {},
      },
    }),
  );

  it('fire by due time, whichever fire message comes first, each as its own history entry', () => {
    const i = new Instance(nested);
    // The 300 ms timer's message comes back first (the engine was down past both due times).
    const r = i.fire('xstate.after.300.o.p', 2_000);
    assert.deepEqual(i.context.log, ['120'], 'the 120 ms timer fired first, and its transition cancelled the 300 ms one');
    assert.equal(i.record.status, 'running');
    assert.deepEqual(i.record.snapshot['value'], 'y');
    assert.deepEqual(
      r.entries.map((e) => (e.event as { timerId: string }).timerId),
      ['xstate.after.120.o.p.c'],
    );
    assert.deepEqual(
      r.entries.map((e) => e.seq),
      [1],
    );
    // The 120 ms timer's own message, later, finds it gone.
    assert.equal(i.fire('xstate.after.120.o.p.c', 2_001).changed, false);
    assert.deepEqual(i.verify(), []);
  });

  it('fire the earlier one, then the one whose message came, when both stay pending', () => {
    const parallel = wf(
      'twoRegions',
      setup({ types: { context: {} as Ctx } }).createMachine({
        context: { log: [], n: 0 },
        type: 'parallel',
        states: {
          a: { initial: 'w', states: { w: { after: { 300: { target: 'd', actions: note('a 300') } } }, d: {} } },
          b: { initial: 'w', states: { w: { after: { 100: { target: 'd', actions: note('b 100') } } }, d: {} } },
          c: { initial: 'w', states: { w: { after: { 200: { target: 'd', actions: note('c 200') } } }, d: {} } },
        },
      }),
    );
    const i = new Instance(parallel);
    const r = i.fire('xstate.after.300.(machine).a.w', 2_000);
    assert.deepEqual(i.context.log, ['b 100', 'c 200', 'a 300']);
    assert.deepEqual(
      r.entries.map((e) => e.revision),
      [2, 3, 4],
    );
    assert.deepEqual(i.verify(), []);
  });

  it('due at the same moment: in scheduling order', () => {
    const same = wf(
      'sameDue',
      setup({ types: { context: {} as Ctx } }).createMachine({
        context: { log: [], n: 0 },
        type: 'parallel',
        states: Object.fromEntries(
          ['a', 'b', 'c'].map((k) => [k, { initial: 'w', states: { w: { after: { 100: { target: 'd', actions: note(k) } } }, d: {} } }]),
        ),
      }),
    );
    const i = new Instance(same);
    i.fire('xstate.after.100.(machine).c.w', 1_200);
    assert.deepEqual(i.context.log, ['a', 'b', 'c']);
    assert.deepEqual(i.verify(), []);
  });
});

describe('a delayed raise scheduled twice under one id', () => {
  const twice = wf(
    'twice',
    setup({ types: { context: {} as Ctx } }).createMachine({
      context: { log: [], n: 0 },
      on: {
        ARM: { actions: raise({ type: 'TICK' }, { id: 't', delay: 400 }) },
        DOUBLE: { actions: [raise({ type: 'TICK' }, { id: 't', delay: 100 }), raise({ type: 'TICK' }, { id: 't', delay: 200 })] },
        STOP: { actions: cancel('t') },
        TICK: { actions: assign({ n: ({ context }) => context.n + 1 }) },
      },
    }),
    ['ARM', 'DOUBLE', 'STOP'],
  );

  it('keeps both (XState does); a cancel reaches only the newest', () => {
    const i = new Instance(twice);
    i.apply({ type: 'ARM' }, 1_000);
    i.apply({ type: 'ARM' }, 1_100);
    assert.deepEqual(Object.keys(i.record.timers).sort(), ['t', 't@2']);
    assert.equal(i.record.timers['t@2']!.sendId, 't');
    i.apply({ type: 'STOP' }, 1_200);
    assert.deepEqual(Object.keys(i.record.timers), ['t@2']);
    // The older one's fire message names the id and its own token: it finds it.
    const r = i.apply({ type: 'jetstate.timer', timerId: 't', token: 2 }, 1_400);
    assert.equal(r.changed, true);
    assert.equal(i.context.n, 1);
    assert.deepEqual(i.record.timers, {});
    assert.deepEqual(i.verify(), []);
  });

  it('once the older one fired, a cancel reaches nothing (XState forgets the id when a timer under it fires)', () => {
    const i = new Instance(twice);
    i.apply({ type: 'ARM' }, 1_000);
    i.apply({ type: 'ARM' }, 1_100);
    i.apply({ type: 'jetstate.timer', timerId: 't', token: 2 }, 1_400);
    i.apply({ type: 'STOP' }, 1_450);
    assert.deepEqual(Object.keys(i.record.timers), ['t@3'], 'the newest still runs');
    i.apply({ type: 'jetstate.timer', timerId: 't', token: 3 }, 1_500);
    assert.equal(i.context.n, 2);
    assert.deepEqual(i.verify(), []);
  });

  it('twice in one step: the first goes out under its derived key', () => {
    const i = new Instance(twice);
    const r = i.apply({ type: 'DOUBLE' }, 1_000);
    assert.deepEqual(r.timers.map((t) => t.timerId).sort(), ['t', 't@2.0']);
    i.apply({ type: 'jetstate.timer', timerId: 't@2.0', token: 2 }, 1_100);
    i.apply({ type: 'jetstate.timer', timerId: 't', token: 2 }, 1_200);
    assert.equal(i.context.n, 2);
    assert.deepEqual(i.verify(), []);
  });
});

describe('actions', () => {
  it('an immediate raise asks the executor for nothing; a named action without params gets undefined', () => {
    const def = wf(
      'acts',
      setup({ types: { context: {} as Ctx }, actions: { notify: () => {} } }).createMachine({
        context: { log: [], n: 0 },
        on: { GO: { actions: [raise({ type: 'PONG' }), 'notify'] }, PONG: { actions: note('pong') } },
      }),
      ['GO'],
    );
    const i = new Instance(def);
    const r = i.apply({ type: 'GO' });
    assert.deepEqual(i.context.log, ['pong']);
    assert.deepEqual(
      r.effects.map((e) => [e.kind, e.type, e.params]),
      [['action', 'notify', undefined]],
    );
    assert.equal('params' in JSON.parse(JSON.stringify(i.record.outbox[0])), false);
  });

  it('keeps the context a named action saw in its outbox entry when the step changed it later', () => {
    const def = wf(
      'ctx',
      setup({ types: { context: {} as Ctx }, actions: { notify: () => {} } }).createMachine({
        context: { log: [], n: 0 },
        on: { GO: { actions: ['notify', assign({ n: 5 }), 'notify'] } },
      }),
      ['GO'],
    );
    const i = new Instance(def);
    i.apply({ type: 'GO' });
    assert.deepEqual(
      i.record.outbox.map((o) => o.context),
      [{ log: [], n: 0 }, undefined],
    );
  });

  it('log and emit are effects after the write; sendTo self goes through the inbox, delayed as a timer', () => {
    const def = wf(
      'sends',
      setup({ types: { context: {} as Ctx } }).createMachine({
        context: { log: [], n: 0 },
        on: {
          GO: {
            actions: [
              log(({ context }) => `n is ${context.n}`, 'count'),
              emit({ type: 'notified' }),
              sendTo(({ self }) => self, { type: 'ECHO' }),
              sendTo(({ self }) => self, { type: 'ECHO' }, { delay: 100, id: 'later' }),
            ],
          },
          ECHO: { actions: note('echo') },
        },
      }),
      ['GO'],
    );
    const i = new Instance(def);
    const r = i.apply({ type: 'GO' }, 1_000);
    assert.deepEqual(
      r.effects.map((e) => [e.kind, e.params]),
      [
        ['log', { value: 'n is 0', label: 'count' }],
        ['emit', { event: { type: 'notified' } }],
        ['send', { workflow: 'sends', id: 'i', event: { type: 'jetstate.self', event: { type: 'ECHO' } } }],
      ],
    );
    assert.deepEqual(i.record.timers['later'], { dueAtMs: 1_100, token: 2, seq: 3, event: { type: 'ECHO' } });
    const self = i.apply({ type: 'jetstate.self', event: { type: 'ECHO' } });
    assert.equal(self.entries[0]!.actorEvent, 'ECHO');
    i.fire('later', 1_100);
    assert.deepEqual(i.context.log, ['echo', 'echo']);
    assert.deepEqual(i.verify(), []);
  });

  it('a delayed sendTo a child workflow and a delayed sendParent are timers that send when they fire', () => {
    const kid = wf(
      'kid',
      setup({}).createMachine({ initial: 'on', states: { on: { on: { ASK: { actions: sendParent({ type: 'ANSWER' }, { delay: 50, id: 'answer' }) } } } } }),
      ['ASK'],
    );
    const k = new Instance(kid, {}, { workflow: 'parent', id: 'p', invokeId: 'k', token: 1 });
    k.apply({ type: 'ASK' }, 1_000);
    assert.deepEqual(k.record.timers['answer']!.to, { workflow: 'parent', id: 'p' });
    const fired = k.fire('answer', 1_050);
    assert.deepEqual(
      fired.effects.map((e) => [e.kind, e.params]),
      [['send', { workflow: 'parent', id: 'p', event: { type: 'ANSWER' } }]],
    );
    assert.equal(k.record.outbox.length, 1, 'in the outbox: sent again after a crash');
    assert.deepEqual(k.verify(), []);

    const parent = wf(
      'parent',
      setup({ actors: { kid: childWorkflow(kid) } }).createMachine({
        initial: 'on',
        states: { on: { invoke: { id: 'k', src: 'kid' }, on: { LATER: { actions: sendTo('k', { type: 'ASK' }, { delay: 100, id: 'later' }) }, ANSWER: {} } } },
      }),
      ['LATER', 'ANSWER'],
    );
    const p = new Instance(parent);
    p.apply({ type: 'LATER' }, 1_000);
    // Still marked for the child when it fires (only this instance's child takes it).
    assert.deepEqual(p.record.timers['later']!.to, { workflow: 'kid', id: 'i_k', toChild: 'k' });
    assert.deepEqual(
      p.fire('later', 1_100).effects.map((e) => e.params),
      [{ workflow: 'kid', id: 'i_k', toChild: 'k', event: { type: 'ASK' } }],
    );
  });

  it('a jetstate.fail event (an inline action threw after the write) fails the instance, recorded', () => {
    const def = wf('failing', setup({}).createMachine({ on: { GO: { actions: () => {} } } }), ['GO']);
    const i = new Instance(def);
    const r = i.apply({ type: 'jetstate.fail', reason: "inline action 'x' threw: Error: no" });
    assert.equal(i.record.status, 'failed');
    assert.equal(i.record.error, "inline action 'x' threw: Error: no");
    assert.equal(r.entries[0]!.reason, "inline action 'x' threw: Error: no");
    assert.deepEqual(i.verify(), []);
  });
});

describe('children and actors', () => {
  const kid = wf('kid2', setup({}).createMachine({ initial: 'a', states: { a: { on: { DONE: 'b' } }, b: { type: 'final' } } }), ['DONE']);
  const parent = wf(
    'parent2',
    setup({ actors: { kid: childWorkflow(kid) } }).createMachine({
      initial: 'on',
      states: { on: { invoke: { id: 'k', src: 'kid', onDone: 'off' } }, off: { on: { AGAIN: 'on' } } },
    }),
    ['AGAIN'],
  );

  it('a child invoked again under the same invoke id gets an id of its own', () => {
    const p = new Instance(parent);
    assert.equal(p.record.children['k']!.id, 'i_k');
    p.apply({ type: 'jetstate.child', invokeId: 'k', token: 1, ok: true, output: null });
    const again = p.apply({ type: 'AGAIN' });
    assert.equal(p.record.children['k']!.id, 'i_k-3');
    assert.deepEqual(p.record.invoked, ['k']);
    assert.equal((again.effects[0]!.params as { id: string }).id, 'i_k-3');
    assert.deepEqual(p.verify(), []);
  });

  it('systemId: every instance and every entry of the state registers it anew', () => {
    const worker = activity(async () => 1);
    const def = wf(
      'sysid',
      setup({ actors: { worker } }).createMachine({
        initial: 'work',
        states: { work: { invoke: { id: 'w', src: 'worker', systemId: 'worker', onDone: 'idle' } }, idle: { on: { AGAIN: 'work' } } },
      }),
      ['AGAIN'],
    );
    const a = new Instance(def);
    const b = new Instance(def);
    for (const i of [a, b]) {
      i.apply({ type: 'jetstate.task', invokeId: 'w', token: i.record.tasks['w']!.token, ok: true, output: 1 });
      i.apply({ type: 'AGAIN' });
      assert.equal(i.record.status, 'running', i.record.error);
      assert.deepEqual(Object.keys(i.record.tasks), ['w']);
    }
    // Restored from the stored record (another engine), too.
    const restored = a.runner.restore(a.record.snapshot);
    assert.equal(b.runner.restore(b.record.snapshot).status, 'active');
    assert.equal(restored.status, 'active');
  });

  it('systemId the configuration does not show (a spawn chosen at run time): the runner switches to fresh systems', () => {
    const worker = activity(async () => 1);
    const def = wf(
      'hiddensysid',
      setup({ actors: { worker } }).createMachine({
        on: { GO: { actions: enqueueActions(({ enqueue }) => enqueue.spawnChild('worker', { id: 'w', systemId: 'hidden' })) } },
      }),
      ['GO'],
    );
    const runner = new MachineRunner(def.machine);
    for (const id of ['a', 'b']) {
      const s = startInstance(def, runner, id, {}, 0);
      const r = applyEvents(runner, s.record, s.snapshot, [{ seq: 1, timeMs: 0, event: { type: 'GO' } }], 0);
      assert.equal(r.record.status, 'running', r.record.error);
      assert.deepEqual(Object.keys(r.record.tasks), ['w']);
    }
  });

  it('spawn inside assign fails the instance with the fix; the step before stays', () => {
    const def = wf(
      'spawnassign',
      setup({ types: { context: {} as { ref?: unknown } }, actors: { p: activity(async () => 7) } }).createMachine({
        context: {},
        on: { GO: { actions: assign({ ref: ({ spawn }) => spawn('p', { id: 's' }) }) } },
      }),
      ['GO'],
    );
    const i = new Instance(def);
    i.apply({ type: 'GO' });
    assert.equal(i.record.status, 'failed');
    assert.match(i.record.error!, /an actor 's' was spawned inside assign \(spawn\), which cannot be made durable.*spawnChild\('<actor>', \{ id: 's' \}\)/);
    assert.deepEqual(i.record.snapshot['context'], {});
    assert.deepEqual(i.verify(), []);
  });

  it('spawnChild chosen at run time (enqueueActions) of what is not durable fails the instance', () => {
    const def = wf(
      'runtimespawn',
      setup({ actors: { p: fromPromise(async () => 1), w: activity(async () => 1) } }).createMachine({
        on: {
          GOOD: { actions: enqueueActions(({ enqueue }) => enqueue.spawnChild('w', { id: 'ok' })) },
          BAD: { actions: enqueueActions(({ enqueue }) => enqueue.spawnChild('p', { id: 'bad' })) },
        },
      }),
      ['GOOD', 'BAD'],
    );
    const i = new Instance(def);
    i.apply({ type: 'GOOD' });
    assert.deepEqual(Object.keys(i.record.tasks), ['ok']);
    i.apply({ type: 'BAD' });
    assert.equal(i.record.status, 'failed');
    assert.match(
      i.record.error!,
      /spawnChild of 'p' \(id 'bad'\), which cannot be made durable: only actors registered with activity\(\) or childWorkflow\(\)/,
    );
    assert.deepEqual(i.verify(), []);
  });
});

describe('data a record cannot keep', () => {
  it('a Date in context fails the start with the path and the fix', () => {
    const def = wf('dates', setup({}).createMachine({ context: () => ({ due: new Date(0) }) }));
    const i = new Instance(def);
    assert.equal(i.record.status, 'failed');
    assert.match(i.record.error!, /context\.due is a Date, which a record cannot keep; store an ISO string or epoch ms/);
    assert.deepEqual(i.verify(), []);
  });

  it('a Map, NaN or undefined in an array put there by a step fails that step; the state before stays', () => {
    const def = wf(
      'later',
      setup({ types: { context: {} as { items: unknown[]; m?: unknown } } }).createMachine({
        context: { items: [1] },
        on: {
          MAP: { actions: assign({ m: () => new Map() }) },
          NAN: { actions: assign({ items: ({ context }) => [...context.items, Number.NaN] }) },
          HOLE: { actions: assign({ items: ({ context }) => [...context.items, undefined] }) },
          OK: { actions: assign({ items: ({ context }) => [...context.items, 2], m: undefined }) },
        },
      }),
      ['MAP', 'NAN', 'HOLE', 'OK'],
    );
    const cases: Array<[string, RegExp]> = [
      ['MAP', /context\.m is a Map.*store a plain object/],
      ['NAN', /context\.items\[1\] is NaN, which a record stores as null/],
      ['HOLE', /context\.items\[1\] is undefined, which a record stores as null in an array; use null/],
    ];
    for (const [type, pattern] of cases) {
      const i = new Instance(def);
      i.apply({ type });
      assert.equal(i.record.status, 'failed', type);
      assert.match(i.record.error!, pattern);
      assert.deepEqual(i.record.snapshot['context'], { items: [1] });
      assert.deepEqual(i.verify(), []);
    }
    const ok = new Instance(def);
    ok.apply({ type: 'OK' });
    assert.equal(ok.record.status, 'running', ok.record.error);
  });
});
