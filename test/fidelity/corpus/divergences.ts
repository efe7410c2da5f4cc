/**
 * Corpus: the XState actions and actors users bring that jetstate does not make durable today,
 * and the reported divergences, each as the smallest machine that shows it. A machine here either
 * behaves like XState in memory, or must be refused by `defineWorkflow`; the `known` notes say
 * which divergence it shows today.
 */
import {
  assign,
  createMachine,
  emit,
  fromCallback,
  fromEventObservable,
  fromObservable,
  fromPromise,
  fromTransition,
  log,
  raise,
  sendTo,
  setup,
  spawnChild,
  type AnyActorRef,
} from 'xstate';
import { z } from 'zod';
import { activity, defineWorkflow } from '../../../engine/index.js';
import { send, wait, type FidelityCase } from '../types.js';
import { bump, ctx, events, input, note, noteEvent, traced, type Ctx, type Types } from './kit.js';

const NOT_RUN = '(the engine reports it once per engine process, the instance diverges silently)';

/** One event in, a `done` transition out: the shape most actor cases share. */
function actorCase(name: string, covers: string, actors: Record<string, unknown>, invoke: Record<string, unknown>, note_: string, extra: Partial<FidelityCase> = {}): FidelityCase {
  return {
    name,
    covers: [covers],
    define: () =>
      defineWorkflow({
        name,
        version: 1,
        input: input(),
        events: events('PING', 'NEXT'),
        machine: setup({ types: {} as Types, actors: actors as never }).createMachine({
          context: ctx(),
          initial: 'running',
          states: {
            running: {
              invoke: { id: 'a', ...invoke } as never,
              on: { PING: { actions: sendTo('a', { type: 'PING' }) }, PONG: { actions: noteEvent }, NEXT: 'next', FROM_ACTOR: { actions: noteEvent } },
            },
            next: { entry: note('next') },
          },
        }),
      }),
    alphabet: [send('PING'), send('NEXT')],
    sequences: [[send('PING'), send('NEXT')]],
    known: [{ note: `${note_} ${NOT_RUN}` }],
    ...extra,
  };
}

const done = { onDone: { target: 'next', actions: assign(({ context, event }) => ({ log: [...(context as Ctx).log, `done ${JSON.stringify((event as { output?: unknown }).output)}`] })) } };

const plainPromise = actorCase('plainpromise', 'fromPromise registered by name (not activity()) invoked in the initial state', { p: fromPromise(async () => 42) }, { src: 'p', ...done }, 'a plain fromPromise invoked in the initial state never runs and nothing is logged;');

const callback = actorCase(
  'callback',
  'fromCallback invoked: sendBack and receive',
  {
    cb: fromCallback(({ sendBack, receive }) => {
      sendBack({ type: 'FROM_ACTOR' });
      receive((e) => {
        if (e.type === 'PING') sendBack({ type: 'PONG' });
      });
    }),
  },
  { src: 'cb' },
  'fromCallback is not run;',
);

const observable = actorCase(
  'observable',
  'fromObservable invoked: onSnapshot and onDone',
  {
    obs: fromObservable(() => ({
      subscribe: ((o: { next?: (v: number) => void; complete?: () => void }) => {
        o.next?.(1);
        o.next?.(2);
        o.complete?.();
        return { unsubscribe() {} };
      }) as never,
    })),
  },
  { src: 'obs', onSnapshot: { actions: assign({ n: ({ event }: { event: { snapshot: { context?: number } } }) => event.snapshot.context ?? -1 }) }, ...done },
  'fromObservable is not run;',
);

const eventObservable = actorCase(
  'eventobservable',
  'fromEventObservable invoked: events to the parent',
  {
    evo: fromEventObservable(() => ({
      subscribe: ((o: { next?: (e: { type: string }) => void; complete?: () => void }) => {
        o.next?.({ type: 'FROM_ACTOR' });
        o.complete?.();
        return { unsubscribe() {} };
      }) as never,
    })),
  },
  { src: 'evo' },
  'fromEventObservable is not run;',
);

const transitionActor = actorCase(
  'transitionactor',
  'fromTransition invoked: receives events, snapshots to the parent',
  { red: fromTransition((count: number, e: { type: string }) => (e.type === 'PING' ? count + 1 : count), 0) },
  { src: 'red', onSnapshot: { actions: assign({ n: ({ event }: { event: { snapshot: { context: number } } }) => event.snapshot.context }) } },
  'fromTransition is not run;',
);

const plainMachine = actorCase(
  'plainmachine',
  'a plain machine (not childWorkflow()) invoked',
  { m: createMachine({ initial: 'a', states: { a: { on: { PING: 'b' } }, b: { type: 'final' } }, output: { from: 'child' } }) },
  { src: 'm', ...done },
  'an invoked plain machine is not run;',
);

const spawns: FidelityCase = {
  name: 'spawns',
  covers: ['spawnChild of a plain machine', 'spawnChild of an inline actor', 'spawn in assign'],
  define: () =>
    defineWorkflow({
      name: 'spawns',
      version: 1,
      input: input(),
      events: events('SPAWN', 'INLINE', 'ASSIGN'),
      machine: setup({
        types: {} as Types,
        actors: { m: createMachine({ initial: 'a', states: { a: { always: 'b' }, b: { type: 'final' } }, output: { from: 'spawned' } }), p: fromPromise(async () => 7) },
      }).createMachine({
        context: ctx(),
        initial: 'on',
        on: {
          'xstate.done.actor.s1': { actions: note('s1 done') },
          'xstate.done.actor.s2': { actions: note('s2 done') },
          'xstate.done.actor.s3': { actions: note('s3 done') },
        },
        states: {
          on: {
            on: {
              SPAWN: { actions: spawnChild('m', { id: 's1' }) },
              INLINE: { actions: spawnChild(fromPromise(async () => 1) as never, { id: 's2' }) },
              ASSIGN: { actions: assign({ ref: ({ spawn }) => spawn('p', { id: 's3' }) as AnyActorRef }) },
            },
          },
        },
      }),
    }),
  alphabet: [send('SPAWN'), send('INLINE'), send('ASSIGN')],
  sequences: [[send('SPAWN'), send('INLINE'), send('ASSIGN')]],
  known: [{ note: `spawnChild of a plain or inline actor, and spawn in assign, are not run; ${NOT_RUN}` }],
};

const sends: FidelityCase = {
  name: 'sends',
  covers: ['delayed sendTo', 'sendTo self', 'emit', 'log'],
  define: () =>
    defineWorkflow({
      name: 'sends',
      version: 1,
      input: input(),
      events: events('SELF', 'DELAYED', 'EMIT', 'LOG'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'on',
        states: {
          on: {
            on: {
              SELF: { actions: sendTo(({ self }) => self, { type: 'ECHO' }) },
              DELAYED: { actions: sendTo(({ self }) => self, { type: 'ECHO', k: 2 }, { delay: 100, id: 'echo' }) },
              ECHO: { actions: noteEvent },
              EMIT: { actions: [bump, emit(({ context }) => ({ type: 'notified', n: context.n }))] },
              LOG: { actions: log(({ context }) => `n is ${context.n}`) },
            },
          },
        },
      }),
    }),
  alphabet: [send('SELF'), send('DELAYED'), send('EMIT'), send('LOG'), wait(150)],
  sequences: [[send('SELF'), send('DELAYED'), wait(150), send('EMIT'), send('LOG')]],
  known: [{ note: `delayed sendTo, sendTo self, emit and log are not run; ${NOT_RUN}` }],
};

const worker = activity(async ({ input }: { input: { n: number } }) => input.n + 1, { heartbeatTimeoutMs: 1_000 });

const systemId: FidelityCase = {
  name: 'systemid',
  covers: ['systemId on an invoked activity'],
  define: () =>
    defineWorkflow({
      name: 'systemid',
      version: 1,
      input: input(),
      events: events('AGAIN'),
      machine: setup({ types: {} as Types, actors: { worker } }).createMachine({
        context: ctx(),
        initial: 'work',
        states: {
          work: { invoke: { src: 'worker', systemId: 'worker', input: ({ context }: { context: Ctx }) => ({ n: context.n }), onDone: { target: 'idle', actions: assign({ n: ({ event }) => event.output as number }) } } },
          idle: { on: { AGAIN: 'work' } },
        },
      }),
    }),
  alphabet: [send('AGAIN')],
  sequences: [[send('AGAIN'), send('AGAIN')]],
  known: [{ note: "systemId on an invoke: the second time any instance enters that state in the engine process, it fails with \"Actor with system ID 'worker' already exists\"" }],
};

const raiseSameId: FidelityCase = {
  name: 'raisesameid',
  covers: ['a delayed raise scheduled twice with the same id'],
  define: () =>
    defineWorkflow({
      name: 'raisesameid',
      version: 1,
      input: input(),
      events: events('ARM'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'on',
        states: { on: { on: { ARM: { actions: raise({ type: 'TICK' }, { id: 't', delay: 400 }) }, TICK: { actions: bump } } } },
      }),
    }),
  alphabet: [send('ARM'), wait(450)],
  sequences: [[send('ARM'), send('ARM'), wait(450)]],
  known: [{ note: 'a delayed raise scheduled twice with the same id keeps one timer in jetstate and two in XState' }],
};

const deepHistoryParallel: FidelityCase = {
  name: 'deephistparallel',
  covers: ['deep history over parallel regions', 'restore from the stored snapshot'],
  define: () =>
    defineWorkflow({
      name: 'deephistparallel',
      version: 1,
      input: input(),
      events: events('L', 'R', 'OUT', 'BACK'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'work',
        states: {
          work: {
            initial: 'grid',
            on: { OUT: 'away' },
            states: {
              grid: {
                type: 'parallel',
                states: {
                  l: { initial: 'l1', states: { l1: { on: { L: 'l2' } }, l2: { on: { L: 'l1' } } } },
                  r: { initial: 'r1', states: { r1: { on: { R: 'r2' } }, r2: { initial: 'x', states: { x: {}, y: {} }, on: { R: '.y' } } } },
                },
              },
              hist: { type: 'history', history: 'deep' },
            },
          },
          away: { ...traced('away'), on: { BACK: 'work.hist' } },
        },
      }),
    }),
  alphabet: [send('L'), send('R'), send('OUT'), send('BACK')],
  // The kill mode crashes the engine after the middle event: here the third L, before OUT records the history.
  sequences: [[send('L'), send('L'), send('L'), send('OUT'), send('BACK')], [send('L'), send('R'), send('R'), send('OUT'), send('BACK'), send('L'), send('OUT'), send('BACK')]],
  killInSuite: true,
  // Fixed: history states are stored sorted, so a replay and the stored record compare equal.
};

const dates: FidelityCase = {
  name: 'datecontext',
  covers: ['a Date in context', 'a guard on it after a restart'],
  define: () =>
    defineWorkflow({
      name: 'datecontext',
      version: 1,
      input: input({ atMs: z.number() }),
      events: events('CHECK'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx((i) => ({ at: new Date(i['atMs'] as number) })),
        initial: 'on',
        states: { on: { on: { CHECK: [{ guard: ({ context }) => context['at'] instanceof Date, actions: note('a Date') }, { actions: note('not a Date') }] } } },
      }),
    }),
  input: { atMs: 1_700_000_000_000 },
  alphabet: [send('CHECK')],
  sequences: [[send('CHECK'), send('CHECK'), send('CHECK')]],
  killInSuite: true,
  known: [{ note: 'a Date in context becomes a string once the record is read back (the first event after start, any engine restart), and a guard flips' }],
};

const inlineInvoke: FidelityCase = {
  name: 'inlineinvoke',
  covers: ['an inline actor implementation in invoke (refused)'],
  define: () =>
    defineWorkflow({
      name: 'inlineinvoke',
      version: 1,
      input: input(),
      events: events('GO'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'a',
        states: { a: { invoke: { src: fromPromise(async () => 1), onDone: 'b' } as never, on: { GO: 'b' } }, b: {} },
      }),
    }),
  alphabet: [],
  sequences: [],
  refused: 'inline actor implementation',
};

export const divergenceCases: FidelityCase[] = [plainPromise, callback, observable, eventObservable, transitionActor, plainMachine, spawns, sends, systemId, raiseSameId, deepHistoryParallel, dates, inlineInvoke];
