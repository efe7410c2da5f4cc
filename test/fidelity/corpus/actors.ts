/**
 * Corpus: actors and effects. `activity()` invoked with onDone/onError and spawned, child
 * workflows (`childWorkflow()`) with sendTo, sendParent, forwardTo, stopChild and output, custom
 * actions (named, with params, inline) and their side effects.
 */
import { assign, cancel, forwardTo, sendParent, sendTo, setup, spawnChild, stopChild } from 'xstate';
import { z } from 'zod';
import { TerminalError, activity, childWorkflow, defineWorkflow } from '../../../engine/index.js';
import { inline, effect } from '../effects.js';
import { send, wait, type FidelityCase, type Step } from '../types.js';
import { bump, ctx, events, input, note, noteEvent, traced, type Ctx, type Types } from './kit.js';

/**
 * Deterministic activities: the engine runs them as tasks, the reference as promise actors. A
 * short heartbeat timeout lets an engine take over a task whose engine was killed within a second
 * (with the defaults, after the 65 s acknowledgement wait: lateness, not a divergence).
 */
const inc = activity(async ({ input }: { input: { n: number } }) => ({ n: input.n + 1 }), { heartbeatTimeoutMs: 1_000 });
const failOdd = activity(
  async ({ input }: { input: { n: number } }) => {
    if (input.n % 2 === 1) throw new TerminalError(`odd ${input.n}`);
    return { n: input.n * 10 };
  },
  { retry: { maxAttempts: 1 }, heartbeatTimeoutMs: 1_000 },
);

const activities: FidelityCase = {
  name: 'activities',
  covers: [
    'invoke activity() with onDone',
    'onError of a failing activity',
    'input from context',
    'an activity invoked again on re-entry',
    'spawnChild of an activity',
  ],
  define: () =>
    defineWorkflow({
      name: 'activities',
      version: 1,
      input: input(),
      events: events('AGAIN', 'TRY', 'SPAWN', 'ADD'),
      machine: setup({ types: {} as Types, actors: { inc, failOdd } }).createMachine({
        context: ctx(),
        initial: 'working',
        on: {
          'xstate.done.actor.side': {
            actions: [note('side done'), assign({ n: ({ context, event }) => context.n + (event as unknown as { output: { n: number } }).output.n })],
          },
        },
        states: {
          working: {
            ...traced('working'),
            invoke: {
              id: 'w',
              src: 'inc',
              input: ({ context }: { context: Ctx }) => ({ n: context.n }),
              onDone: { target: 'idle', actions: assign({ n: ({ event }) => (event.output as { n: number }).n }) },
            },
          },
          idle: {
            ...traced('idle'),
            on: {
              AGAIN: 'working',
              TRY: 'trying',
              ADD: { actions: bump },
              SPAWN: { actions: spawnChild('inc', { id: 'side', input: ({ context }: { context: Ctx }) => ({ n: context.n * 100 }) }) },
            },
          },
          trying: {
            ...traced('trying'),
            invoke: {
              id: 't',
              src: 'failOdd',
              input: ({ context }: { context: Ctx }) => ({ n: context.n }),
              onDone: { target: 'idle', actions: assign({ n: ({ event }) => (event.output as { n: number }).n }) },
              onError: {
                target: 'idle',
                actions: assign({ log: ({ context, event }) => [...context.log, `error: ${(event.error as { message?: string }).message}`] }),
              },
            },
          },
        },
      }),
    }),
  alphabet: [send('AGAIN'), send('TRY'), send('SPAWN'), send('ADD')],
  sequences: [[send('TRY'), send('ADD'), send('AGAIN'), send('TRY'), send('SPAWN')]],
  generatedInSuite: true,
  killInSuite: true,
  known: [
    {
      note: 'an activity spawned again under the same id while the first still runs replaces it (one task per id); XState runs both and both outcomes arrive',
      modes: ['burst'],
      needs: (steps: readonly Step[]) => steps.filter((s) => 'send' in s && s.send.type === 'SPAWN').length > 1,
    },
  ],
};

/** A child workflow: tells its parent it is ready, waits for CONFIRM (sent by the test or the parent), ends with output. */
const payment = defineWorkflow({
  name: 'fidpayment',
  version: 1,
  input: z.object({ run: z.string(), amount: z.number() }),
  events: events('CONFIRM', 'REPORT'),
  machine: setup({ types: {} as Types }).createMachine({
    context: ctx((i) => ({ amount: i['amount'] })),
    initial: 'pending',
    entry: sendParent({ type: 'CHILD_READY' }),
    states: {
      pending: {
        on: {
          CONFIRM: { target: 'confirmed', actions: bump },
          // Reports to the parent in the same step that finishes the child.
          REPORT: { target: 'confirmed', actions: sendParent(({ context }: { context: Ctx }) => ({ type: 'CHILD_PROGRESS', k: context.n })) },
        },
      },
      confirmed: { type: 'final' },
    },
    output: ({ context }: { context: Ctx }) => ({ amount: context['amount'], n: context.n }),
  }),
});

/**
 * In a burst, the parent's next events race the child's messages (its sendParent, its done
 * event): instances talk through their event streams, asynchronously, where XState in memory
 * delivers a child's messages before the parent's next event.
 */
const ASYNC_CHILD = {
  note: "a child workflow's messages reach its parent asynchronously: in a burst, the parent's next events can come first (XState in memory: the child's first)",
  modes: ['burst'],
} as const;

/** A parent of `payment`; `onPaying` adds transitions to its invoking state. */
function parentOf(name: string, onPaying: Record<string, unknown>) {
  return defineWorkflow({
    name,
    version: 1,
    input: input(),
    events: events('FORWARD', 'STOP', 'RESTART', 'CHILD_READY', 'CHILD_PROGRESS', ...Object.keys(onPaying)),
    machine: setup({ types: {} as Types, actors: { payment: childWorkflow(payment) } }).createMachine({
      context: ctx(),
      initial: 'paying',
      on: { CHILD_PROGRESS: { actions: noteEvent } },
      states: {
        paying: {
          ...traced('paying'),
          invoke: {
            id: 'pay',
            src: 'payment',
            input: ({ context }: { context: Ctx }) => ({ run: context.run, amount: 10 + context.n }),
            onDone: { target: 'paid', actions: assign({ log: ({ context, event }) => [...context.log, `output ${JSON.stringify(event.output)}`] }) },
          },
          on: {
            CHILD_READY: { actions: noteEvent },
            FORWARD: { actions: sendTo('pay', { type: 'CONFIRM' }) },
            STOP: { target: 'stopped', actions: stopChild('pay') },
            ...onPaying,
          } as never,
        },
        paid: { ...traced('paid'), on: { RESTART: { target: 'paying', actions: bump } } },
        stopped: { ...traced('stopped'), on: { RESTART: { target: 'paying', actions: bump } } },
      },
    }),
  });
}

const children: FidelityCase = {
  name: 'children',
  covers: [
    'childWorkflow() invoked with input',
    'sendParent from the child',
    'sendTo a child',
    'onDone with the child output',
    'stopChild of a child',
    'events sent to the child instance',
  ],
  define: () => parentOf('children', { REPORT: { actions: sendTo('pay', { type: 'REPORT' }) }, CONFIRM: { actions: noteEvent } }),
  children: { pay: 'fidpayment' },
  alphabet: [send('FORWARD'), send('STOP'), send('CONFIRM', {}, 'pay')],
  sequences: [[send('FORWARD')], [send('CONFIRM', {}, 'pay')], [send('STOP')]],
  generatedInSuite: true,
  known: [ASYNC_CHILD],
};

const childReport: FidelityCase = {
  name: 'childreport',
  covers: ['a child that sends to its parent in the step that finishes it'],
  define: () => parentOf('childreport', { REPORT: { actions: sendTo('pay', { type: 'REPORT' }) } }),
  children: { pay: 'fidpayment' },
  alphabet: [send('REPORT')],
  sequences: [[send('REPORT')]],
  // Fixed: a finished child runs its outbox (its sendParent) before it tells its parent it is done.
};

const childAgain: FidelityCase = {
  name: 'childagain',
  covers: ['re-entering the invoking state starts a new child'],
  define: () => parentOf('childagain', {}),
  children: { pay: 'fidpayment' },
  alphabet: [send('FORWARD'), send('RESTART')],
  sequences: [[send('FORWARD'), send('RESTART'), send('FORWARD')]],
  // Fixed: a child invoked again under the same invoke id gets an id of its own (<parent>_<invoke id>-<token>).
  known: [ASYNC_CHILD],
};

const forwarding: FidelityCase = {
  name: 'forwarding',
  covers: ['forwardTo a child workflow'],
  define: () => parentOf('forwarding', { CONFIRM: { actions: forwardTo('pay') } }),
  children: { pay: 'fidpayment' },
  alphabet: [send('CONFIRM')],
  sequences: [[send('CONFIRM')]],
  known: [ASYNC_CHILD],
};

const spawnWorkflow: FidelityCase = {
  name: 'spawnworkflow',
  covers: ['spawnChild of a child workflow', 'stopChild of a spawned child', 'xstate.done.actor of a spawned child'],
  define: () =>
    defineWorkflow({
      name: 'spawnworkflow',
      version: 1,
      input: input(),
      events: events('SPAWN', 'CONFIRM', 'STOP', 'CHILD_READY'),
      machine: setup({ types: {} as Types, actors: { payment: childWorkflow(payment) } }).createMachine({
        context: ctx(),
        initial: 'on',
        states: {
          on: {
            on: {
              SPAWN: { actions: spawnChild('payment', { id: 'kid', input: ({ context }: { context: Ctx }) => ({ run: context.run, amount: 5 }) }) },
              CONFIRM: { actions: sendTo('kid', { type: 'CONFIRM' }) },
              STOP: { actions: [stopChild('kid'), note('stopped')] },
              CHILD_READY: { actions: noteEvent },
              'xstate.done.actor.kid': {
                actions: assign({ log: ({ context, event }) => [...context.log, `kid done ${JSON.stringify((event as { output?: unknown }).output)}`] }),
              },
            },
          },
        },
      }),
    }),
  children: { kid: 'fidpayment' },
  alphabet: [send('SPAWN'), send('CONFIRM'), send('STOP')],
  sequences: [
    [send('SPAWN'), send('CONFIRM')],
    [send('SPAWN'), send('STOP')],
  ],
  // Fixed: a child spawned again under the same id gets an id of its own; sendTo a child that
  // already finished is dropped, as XState drops it, without a warning.
  known: [ASYNC_CHILD],
};

const delayedToChild: FidelityCase = {
  name: 'delayedtochild',
  covers: ['delayed sendTo a child workflow', 'cancel of a delayed sendTo'],
  define: () =>
    parentOf('delayedtochild', {
      LATER: { actions: sendTo('pay', { type: 'CONFIRM' }, { delay: 150, id: 'later' }) },
      NEVERMIND: { actions: [cancel('later'), note('nevermind')] },
    }),
  children: { pay: 'fidpayment' },
  alphabet: [send('LATER'), send('NEVERMIND'), wait(200)],
  sequences: [
    [send('LATER'), wait(200)],
    [send('LATER'), send('NEVERMIND'), wait(200)],
  ],
  known: [ASYNC_CHILD],
};

/** A child workflow that answers its parent a while after it is asked. */
const reporter = defineWorkflow({
  name: 'fidreporter',
  version: 1,
  input: z.object({ run: z.string() }),
  events: events('ASK', 'QUIT'),
  machine: setup({ types: {} as Types }).createMachine({
    context: ctx(),
    initial: 'on',
    states: {
      on: { on: { ASK: { actions: [bump, sendParent(({ context }: { context: Ctx }) => ({ type: 'ANSWER', k: context.n }), { delay: 150 })] }, QUIT: 'off' } },
      off: { type: 'final' },
    },
  }),
});

const delayedToParent: FidelityCase = {
  name: 'delayedtoparent',
  covers: ['delayed sendParent from a child workflow'],
  define: () =>
    defineWorkflow({
      name: 'delayedtoparent',
      version: 1,
      input: input(),
      events: events('ANSWER'),
      machine: setup({ types: {} as Types, actors: { reporter: childWorkflow(reporter) } }).createMachine({
        context: ctx(),
        initial: 'asking',
        states: {
          asking: {
            invoke: { id: 'rep', src: 'reporter', input: ({ context }: { context: Ctx }) => ({ run: context.run }), onDone: 'done' },
            on: { ANSWER: { actions: noteEvent } },
          },
          done: { ...traced('done') },
        },
      }),
    }),
  children: { rep: 'fidreporter' },
  alphabet: [send('ASK', {}, 'rep'), send('QUIT', {}, 'rep'), wait(200)],
  sequences: [
    [send('ASK', {}, 'rep'), wait(200)],
    [send('ASK', {}, 'rep'), send('ASK', {}, 'rep'), wait(250)],
  ],
  known: [ASYNC_CHILD],
};

/**
 * Inline action functions run after the write that ran them, at most once: a crash right after
 * the write (the kill mode) loses them (documented; registered actions run at least once).
 */
export const INLINE_AT_MOST_ONCE = {
  note: 'an inline action runs once after the write, at most once: an engine killed right after the write never runs it (register it by name for at least once)',
  modes: ['kill'],
  kinds: ['effects'],
} as const;

const named: FidelityCase = {
  name: 'namedactions',
  covers: [
    'named actions with params',
    'entry action of the initial state',
    'actions see the context as of their place in the step',
    'exit and transition actions in order',
  ],
  define: () =>
    defineWorkflow({
      name: 'namedactions',
      version: 1,
      input: input(),
      events: events('BUMP', 'LEAVE', 'BACK'),
      machine: setup({ types: {} as Types, actions: { notify: effect('notify'), audit: effect('audit') } }).createMachine({
        context: ctx(),
        initial: 'on',
        entry: { type: 'notify', params: { to: 'ops' } },
        states: {
          on: {
            exit: { type: 'audit', params: { what: 'exit on' } },
            on: {
              BUMP: {
                actions: [
                  { type: 'notify', params: { to: 'a' } },
                  bump,
                  { type: 'audit', params: ({ context }: { context: Ctx }) => ({ n: context.n }) },
                  bump,
                  { type: 'notify', params: { to: 'b' } },
                ],
              },
              LEAVE: { target: 'off', actions: { type: 'notify', params: { to: 'c' } } },
            },
          },
          off: { entry: [bump, { type: 'audit', params: { what: 'off' } }], on: { BACK: 'on' } },
        },
      }),
    }),
  alphabet: [send('BUMP'), send('LEAVE'), send('BACK')],
  // The kill mode crashes the engine after the middle event: here a BUMP, whose actions see n change.
  sequences: [[send('LEAVE'), send('BACK'), send('BUMP'), send('BUMP')]],
  killInSuite: true,
  // Fixed: a named action re-run after a crash gets the context it first ran with (kept in its outbox entry).
};

const actionParams: FidelityCase = {
  name: 'actionparams',
  covers: ['a named action given without params'],
  define: () =>
    defineWorkflow({
      name: 'actionparams',
      version: 1,
      input: input(),
      events: events('GO'),
      machine: setup({ types: {} as Types, actions: { notify: effect('notify') } }).createMachine({
        context: ctx(),
        initial: 'on',
        states: { on: { on: { GO: { actions: 'notify' } } } },
      }),
    }),
  alphabet: [send('GO')],
  sequences: [[send('GO')]],
  // Fixed: a named action given without params receives undefined, as in XState.
};

const inlineActions: FidelityCase = {
  name: 'inlineactions',
  covers: ['inline action functions', 'inline entry actions of the initial state', 'inline actions see the context at their place'],
  define: () =>
    defineWorkflow({
      name: 'inlineactions',
      version: 1,
      input: input(),
      events: events('BUMP'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'on',
        entry: inline('rootEntry'),
        states: { on: { entry: inline('onEntry'), on: { BUMP: { actions: [bump, inline('bumped'), bump] } } } },
      }),
    }),
  alphabet: [send('BUMP')],
  sequences: [[send('BUMP'), send('BUMP')]],
  // Fixed: the engine that creates the record from the start runs the initial state's actions.
  known: [INLINE_AT_MOST_ONCE],
};

export const actorCases: FidelityCase[] = [
  activities,
  children,
  childReport,
  childAgain,
  forwarding,
  spawnWorkflow,
  delayedToChild,
  delayedToParent,
  named,
  actionParams,
  inlineActions,
];
export { payment };
