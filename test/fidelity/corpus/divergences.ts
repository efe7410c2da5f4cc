/**
 * Corpus: the XState actions and actors users bring that jetstate cannot make durable, and the
 * divergences reported so far, each as the smallest machine that shows it. A machine here either
 * behaves like XState in memory, or is refused by `defineWorkflow` (`refused`), or, where nothing
 * can see it before it runs, fails its instance with an error that names the fix (`failsWith`).
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

/** One event in, a `done` transition out: the shape most actor cases share; `refused`: what `defineWorkflow`'s error says. */
function actorCase(name: string, covers: string, actors: Record<string, unknown>, invoke: Record<string, unknown>, refused: string): FidelityCase {
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
    refused,
  };
}

const done = {
  onDone: {
    target: 'next',
    actions: assign(({ context, event }) => ({ log: [...(context as Ctx).log, `done ${JSON.stringify((event as { output?: unknown }).output)}`] })),
  },
};

const plainPromise = actorCase(
  'plainpromise',
  'fromPromise registered by name (not activity()) invoked in the initial state',
  { p: fromPromise(async () => 42) },
  { src: 'p', ...done },
  'a fromPromise actor runs in memory only',
);

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
  'a fromCallback actor runs in memory',
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
  'a fromObservable actor runs in memory',
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
  'a fromEventObservable actor runs in memory',
);

const transitionActor = actorCase(
  'transitionactor',
  'fromTransition invoked: receives events, snapshots to the parent',
  { red: fromTransition((count: number, e: { type: string }) => (e.type === 'PING' ? count + 1 : count), 0) },
  { src: 'red', onSnapshot: { actions: assign({ n: ({ event }: { event: { snapshot: { context: number } } }) => event.snapshot.context }) } },
  'a fromTransition actor keeps its state in memory',
);

const plainMachine = actorCase(
  'plainmachine',
  'a plain machine (not childWorkflow()) invoked',
  { m: createMachine({ initial: 'a', states: { a: { on: { PING: 'b' } }, b: { type: 'final' } }, output: { from: 'child' } }) },
  { src: 'm', ...done },
  'a plain machine as an actor runs in memory',
);

/** A machine that spawns on SPAWN, as `spawn` decides (its notes show each spawned actor's outcome). */
function spawnCase(name: string, covers: string, actors: Record<string, unknown>, spawnAction: unknown, extra: Partial<FidelityCase>): FidelityCase {
  return {
    name,
    covers: [covers],
    define: () =>
      defineWorkflow({
        name,
        version: 1,
        input: input(),
        events: events('SPAWN'),
        machine: setup({ types: {} as Types, actors: actors as never }).createMachine({
          context: ctx(),
          initial: 'on',
          on: { 'xstate.done.actor.s': { actions: note('s done') } },
          states: { on: { on: { SPAWN: { actions: spawnAction as never } } } },
        }),
      }),
    alphabet: [send('SPAWN')],
    sequences: [[send('SPAWN')]],
    ...extra,
  };
}

const spawnPlain = spawnCase(
  'spawnplain',
  'spawnChild of a plain machine (refused)',
  { m: createMachine({ initial: 'a', states: { a: { always: 'b' }, b: { type: 'final' } }, output: { from: 'spawned' } }) },
  spawnChild('m', { id: 's' }),
  { refused: 'spawns .m. \\(spawnChild\\), which cannot be made durable: a plain machine as an actor runs in memory' },
);

const spawnInline = spawnCase('spawninline', 'spawnChild of an inline actor (refused)', {}, spawnChild(fromPromise(async () => 1) as never, { id: 's' }), {
  refused: 'spawns an inline actor implementation',
});

/** `spawn` inside `assign` shows in no action: the engine fails the instance when it happens. */
const spawnAssign = spawnCase(
  'spawnassign',
  'spawn in assign (fails the instance)',
  { p: activity(async () => 7) },
  assign({ ref: ({ spawn }) => spawn('p', { id: 's' }) as AnyActorRef }),
  { failsWith: "an actor 's' was spawned inside assign (spawn), which cannot be made durable" },
);

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
  // Fixed: sendTo self through the instance's inbox, delayed as a durable timer; emit on the emit
  // subject and log through the engine's logger, after the write.
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
          work: {
            invoke: {
              src: 'worker',
              systemId: 'worker',
              input: ({ context }: { context: Ctx }) => ({ n: context.n }),
              onDone: { target: 'idle', actions: assign({ n: ({ event }) => event.output as number }) },
            },
          },
          idle: { on: { AGAIN: 'work' } },
        },
      }),
    }),
  alphabet: [send('AGAIN')],
  sequences: [[send('AGAIN'), send('AGAIN')]],
  // Fixed: a machine that uses systemId gets a fresh actor system per step.
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
  // Fixed: the older one is kept under a derived key; its fire still finds it.
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
  sequences: [
    [send('L'), send('L'), send('L'), send('OUT'), send('BACK')],
    [send('L'), send('R'), send('R'), send('OUT'), send('BACK'), send('L'), send('OUT'), send('BACK')],
  ],
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
        states: {
          on: { on: { CHECK: [{ guard: ({ context }) => context['at'] instanceof Date, actions: note('a Date') }, { actions: note('not a Date') }] } },
        },
      }),
    }),
  input: { atMs: 1_700_000_000_000 },
  alphabet: [send('CHECK')],
  sequences: [[send('CHECK'), send('CHECK'), send('CHECK')]],
  killInSuite: true,
  // A Date would come back from the record as a string and the guard would flip: the instance
  // fails at once, deterministically, with the path and the fix.
  failsWith: 'context.at is a Date, which a record cannot keep; store an ISO string or epoch ms',
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

export const divergenceCases: FidelityCase[] = [
  plainPromise,
  callback,
  observable,
  eventObservable,
  transitionActor,
  plainMachine,
  spawnPlain,
  spawnInline,
  spawnAssign,
  sends,
  systemId,
  raiseSameId,
  deepHistoryParallel,
  dates,
  inlineInvoke,
];
