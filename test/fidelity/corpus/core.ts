/**
 * Corpus: statechart semantics of the pure step (no timers, no actors): hierarchy, parallel
 * regions, guards, eventless transitions, internal and re-entering transitions, entry and exit
 * order, history, immediate raise, enqueueActions, targetless and wildcard transitions, forbidden
 * transitions, context from input, tags and meta, final states and output, errors.
 */
import { and, assertEvent, enqueueActions, not, or, raise, setup, stateIn } from 'xstate';
import { z } from 'zod';
import { defineWorkflow } from '../../../engine/index.js';
import { send, type FidelityCase } from '../types.js';
import { bump, ctx, events, input, note, noteEvent, traced, type Ctx, type Ev, type Types } from './kit.js';

const hierarchy: FidelityCase = {
  name: 'hierarchy',
  covers: ['nested compound states', 'transitions handled by ancestors', '#id and child targets'],
  define: () =>
    defineWorkflow({
      name: 'hierarchy',
      version: 1,
      input: input(),
      events: events('NEXT', 'UP', 'JUMP', 'RESET'),
      machine: setup({ types: {} as Types }).createMachine({
        id: 'h',
        context: ctx(),
        initial: 'a',
        on: { RESET: { target: '.a', actions: note('reset') }, JUMP: '#h.b.deep.z' },
        states: {
          a: {
            ...traced('a'),
            initial: 'a1',
            states: { a1: { ...traced('a1'), on: { NEXT: 'a2' } }, a2: { ...traced('a2'), on: { NEXT: '#h.b' } } },
            on: { UP: { actions: note('a handles UP') } },
          },
          b: {
            ...traced('b'),
            initial: 'deep',
            on: { UP: { target: 'a', actions: note('b UP') } },
            states: {
              deep: { ...traced('deep'), initial: 'y', states: { y: { ...traced('y'), on: { NEXT: 'z' } }, z: { ...traced('z'), on: { NEXT: '#h.a.a2' } } } },
            },
          },
        },
      }),
    }),
  alphabet: [send('NEXT'), send('UP'), send('JUMP'), send('RESET')],
  sequences: [[send('NEXT'), send('UP'), send('NEXT'), send('NEXT'), send('NEXT'), send('JUMP'), send('RESET')]],
  generatedInSuite: true,
};

const parallel: FidelityCase = {
  name: 'parallel',
  covers: ['parallel regions', 'one event in several regions', 'stateIn guard', 'region order of actions'],
  define: () =>
    defineWorkflow({
      name: 'parallel',
      version: 1,
      input: input(),
      events: events('TOGGLE', 'NEXT', 'BOTH'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        type: 'parallel',
        states: {
          left: {
            initial: 'off',
            states: {
              off: { ...traced('L.off'), on: { TOGGLE: 'on', BOTH: { target: 'on', actions: note('L both') } } },
              on: { ...traced('L.on'), on: { TOGGLE: 'off' } },
            },
          },
          right: {
            initial: 'one',
            states: {
              one: { ...traced('R.one'), on: { NEXT: 'two', BOTH: { target: 'two', actions: note('R both') } } },
              two: { ...traced('R.two'), on: { NEXT: { target: 'three', guard: stateIn({ left: 'on' }) as never } } },
              three: { ...traced('R.three') },
            },
          },
        },
      }),
    }),
  alphabet: [send('TOGGLE'), send('NEXT'), send('BOTH')],
  sequences: [[send('BOTH'), send('NEXT'), send('TOGGLE'), send('NEXT'), send('TOGGLE'), send('NEXT')]],
  generatedInSuite: true,
};

const guards: FidelityCase = {
  name: 'guards',
  covers: ['inline guards', 'named guards with params', 'and/or/not', 'first enabled transition wins'],
  define: () =>
    defineWorkflow({
      name: 'guards',
      version: 1,
      input: input({ limit: z.number() }),
      events: events('ADD', 'CHECK'),
      machine: setup({
        types: {} as Types,
        guards: {
          over: ({ context }, params: { limit: number }) => context.n > params.limit,
          even: ({ context }) => context.n % 2 === 0,
          big: ({ event }) => ((event as Ev).k ?? 0) >= 5,
        },
      }).createMachine({
        context: ctx((i) => ({ limit: i['limit'] })),
        initial: 'idle',
        states: {
          idle: {
            on: {
              ADD: [
                { guard: and(['big', not('even')]), actions: [bump, note('big & odd')] },
                { guard: ({ event }) => event.k === 0, actions: note('zero') },
                { actions: [bump, note('add')] },
              ],
              CHECK: [
                { guard: { type: 'over', params: ({ context }) => ({ limit: context['limit'] as number }) }, target: 'over' },
                { guard: or(['even', 'big']), actions: note('even or big') },
                { actions: note('nothing') },
              ],
            },
          },
          over: { on: { ADD: { guard: not({ type: 'over', params: { limit: 100 } }), actions: [bump, note('still')] } } },
        },
      }),
    }),
  input: { limit: 6 },
  alphabet: [send('ADD', { k: 1 }), send('ADD', { k: 5 }), send('ADD', { k: 0 }), send('CHECK')],
  sequences: [[send('CHECK'), send('ADD', { k: 5 }), send('CHECK'), send('ADD', { k: 0 }), send('ADD', { k: 5 }), send('CHECK'), send('ADD', { k: 7 })]],
  generatedInSuite: true,
};

const eventless: FidelityCase = {
  name: 'eventless',
  covers: ['always transitions', 'guarded always', 'always chains', 'always loops with assign'],
  define: () =>
    defineWorkflow({
      name: 'eventless',
      version: 1,
      input: input(),
      events: events('ADD', 'GO'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'check',
        states: {
          check: { ...traced('check'), always: [{ guard: ({ context }) => context.n >= 3, target: 'high' }, { target: 'low' }] },
          low: { ...traced('low'), on: { ADD: { target: 'check', actions: bump }, GO: 'chain1' } },
          high: { ...traced('high'), on: { ADD: { actions: bump }, GO: 'chain1' } },
          chain1: { ...traced('c1'), always: 'chain2' },
          chain2: { ...traced('c2'), always: { target: 'count', actions: note('c2->count') } },
          count: {
            ...traced('count'),
            always: { guard: ({ context }) => context.n < 6, actions: [bump, note('loop')] },
            on: { ADD: { target: 'check', actions: bump } },
          },
        },
      }),
    }),
  alphabet: [send('ADD'), send('GO'), send('ADD', { k: 2 })],
  sequences: [[send('ADD'), send('ADD', { k: 2 }), send('ADD'), send('GO'), send('ADD')]],
  generatedInSuite: true,
};

const reenter: FidelityCase = {
  name: 'reenter',
  covers: ['internal transitions (reenter: false)', 'external transitions (reenter: true)', 'self transitions', 'entry/exit with assign'],
  define: () =>
    defineWorkflow({
      name: 'reenter',
      version: 1,
      input: input(),
      events: events('SELF', 'SELF_EXT', 'CHILD', 'CHILD_EXT'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'p',
        states: {
          p: {
            ...traced('p'),
            initial: 'c1',
            on: {
              SELF: { target: 'p', actions: note('self') },
              SELF_EXT: { target: 'p', reenter: true, actions: note('self ext') },
              CHILD: '.c2',
              CHILD_EXT: { target: '.c2', reenter: true },
            },
            states: { c1: traced('c1'), c2: traced('c2') },
          },
        },
      }),
    }),
  alphabet: [send('SELF'), send('SELF_EXT'), send('CHILD'), send('CHILD_EXT')],
  sequences: [[send('CHILD'), send('SELF'), send('CHILD_EXT'), send('SELF_EXT'), send('CHILD')]],
};

const order: FidelityCase = {
  name: 'entryexitorder',
  covers: ['exit order (deepest first)', 'entry order (outermost first)', 'transition actions between exits and entries', 'assign sees earlier assigns'],
  define: () =>
    defineWorkflow({
      name: 'entryexitorder',
      version: 1,
      input: input(),
      events: events('CROSS', 'BACK'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'a',
        states: {
          a: {
            ...traced('a'),
            initial: 'a1',
            states: { a1: { ...traced('a1'), initial: 'a11', states: { a11: traced('a11') } } },
            on: { CROSS: { target: 'b.b1.b11', actions: [note('t1'), bump, note('t2')] } },
          },
          b: {
            ...traced('b'),
            initial: 'b1',
            states: { b1: { ...traced('b1'), initial: 'b11', states: { b11: { ...traced('b11'), entry: bump } } } },
            on: { BACK: { target: 'a', actions: ({ context }) => void context } },
          },
        },
      }),
    }),
  alphabet: [send('CROSS'), send('BACK')],
  sequences: [[send('CROSS'), send('BACK'), send('CROSS')]],
};

const history: FidelityCase = {
  name: 'history',
  covers: ['shallow history', 'deep history', 'history default target'],
  define: () =>
    defineWorkflow({
      name: 'history',
      version: 1,
      input: input(),
      events: events('NEXT', 'INNER', 'OUT', 'BACK_SHALLOW', 'BACK_DEEP'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'work',
        states: {
          work: {
            initial: 'one',
            on: { OUT: 'away' },
            states: {
              one: { ...traced('one'), on: { NEXT: 'two' } },
              two: {
                ...traced('two'),
                initial: 'x',
                on: { NEXT: 'one' },
                states: { x: { ...traced('x'), on: { INNER: 'y' } }, y: { ...traced('y'), on: { INNER: 'x' } } },
              },
              shallow: { type: 'history', history: 'shallow' },
              deep: { type: 'history', history: 'deep', target: 'two' },
            },
          },
          away: { ...traced('away'), on: { BACK_SHALLOW: 'work.shallow', BACK_DEEP: 'work.deep' } },
        },
      }),
    }),
  alphabet: [send('NEXT'), send('INNER'), send('OUT'), send('BACK_SHALLOW'), send('BACK_DEEP')],
  sequences: [[send('NEXT'), send('INNER'), send('OUT'), send('BACK_SHALLOW'), send('INNER'), send('OUT'), send('BACK_DEEP')]],
  generatedInSuite: true,
};

const raising: FidelityCase = {
  name: 'raise',
  covers: ['immediate raise', 'internal queue before external events', 'raise in entry', 'raise with a computed event'],
  define: () =>
    defineWorkflow({
      name: 'raise',
      version: 1,
      input: input(),
      events: events('GO', 'PING'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'a',
        on: { PONG: { actions: noteEvent }, PING: { actions: [noteEvent, raise(({ context }) => ({ type: 'PONG', k: context.log.length }))] } },
        states: {
          a: { ...traced('a'), on: { GO: { target: 'b', actions: [raise({ type: 'PING' }), note('after raise')] } } },
          b: { ...traced('b'), entry: raise({ type: 'PING', k: 7 }), on: { GO: 'a' } },
        },
      }),
    }),
  alphabet: [send('GO'), send('PING')],
  sequences: [[send('GO'), send('PING'), send('GO')]],
  // Fixed: an immediate raise is part of the pure step, no warning.
};

const enqueue: FidelityCase = {
  name: 'enqueue',
  covers: ['enqueueActions', 'conditional enqueue.assign/raise/named action', 'check() with guards'],
  define: () =>
    defineWorkflow({
      name: 'enqueue',
      version: 1,
      input: input(),
      events: events('ADD', 'PONG'),
      machine: setup({ types: {} as Types, guards: { odd: ({ context }) => context.n % 2 === 1 } }).createMachine({
        context: ctx(),
        initial: 'on',
        states: {
          on: {
            on: {
              PONG: { actions: noteEvent },
              ADD: {
                actions: enqueueActions(({ enqueue, check, event, context }) => {
                  enqueue.assign({ n: context.n + (event.k ?? 1) });
                  if (check('odd')) enqueue(note('was odd'));
                  if ((event.k ?? 1) > 2) enqueue.raise({ type: 'PONG', k: event.k });
                  enqueue(note(`k=${event.k ?? 1}`));
                }),
              },
            },
          },
        },
      }),
    }),
  alphabet: [send('ADD'), send('ADD', { k: 3 }), send('PONG')],
  sequences: [[send('ADD'), send('ADD', { k: 3 }), send('ADD'), send('PONG')]],
};

const wildcard: FidelityCase = {
  name: 'wildcard',
  covers: ['targetless transitions', "wildcard '*'", "partial wildcard 'a.*'", 'explicit event beats the wildcard', 'forbidden transitions'],
  define: () =>
    defineWorkflow({
      name: 'wildcard',
      version: 1,
      input: input(),
      events: { ...events('KNOWN', 'OTHER', 'user.login', 'user.logout', 'BLOCKED', 'LEAVE') },
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'p',
        states: {
          p: {
            initial: 'c',
            on: {
              '*': { actions: note('any') },
              KNOWN: { actions: note('known') },
              'user.*': { actions: note('user.*') },
              BLOCKED: { target: '.d', actions: note('parent BLOCKED') },
              LEAVE: 'q',
            },
            states: {
              c: { on: { BLOCKED: undefined as never } },
              d: { on: { BLOCKED: { actions: note('d BLOCKED') } } },
            },
          },
          q: { on: { '*': 'p' } },
        },
      }),
    }),
  alphabet: [send('KNOWN'), send('OTHER'), send('user.login'), send('BLOCKED'), send('LEAVE')],
  sequences: [[send('KNOWN'), send('OTHER'), send('user.login'), send('user.logout'), send('BLOCKED'), send('LEAVE'), send('OTHER'), send('BLOCKED')]],
};

const contextInput: FidelityCase = {
  name: 'contextinput',
  covers: ['context factory from input', 'nested objects and arrays in context', 'assign with a function of event'],
  define: () =>
    defineWorkflow({
      name: 'contextinput',
      version: 1,
      input: input({ items: z.array(z.object({ sku: z.string(), qty: z.number() })), owner: z.object({ name: z.string() }) }),
      events: events('ADD', 'CLEAR'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx((i) => ({
          items: i['items'],
          owner: { ...(i['owner'] as object), since: 'start' },
          total: (i['items'] as Array<{ qty: number }>).reduce((s, x) => s + x.qty, 0),
        })),
        initial: 'open',
        states: {
          open: {
            on: {
              ADD: { actions: ({ context }) => void context },
              CLEAR: { target: 'empty' },
            },
          },
          empty: { entry: note('cleared') },
        },
      }),
    }),
  input: {
    items: [
      { sku: 'a', qty: 2 },
      { sku: 'b', qty: 3 },
    ],
    owner: { name: 'ada' },
  },
  alphabet: [send('ADD'), send('CLEAR')],
  sequences: [[send('ADD'), send('CLEAR')]],
};

const tagsMeta: FidelityCase = {
  name: 'tagsmeta',
  covers: ['tags', 'meta', 'can()', 'hasTag/getMeta on the stored snapshot'],
  define: () =>
    defineWorkflow({
      name: 'tagsmeta',
      version: 1,
      input: input(),
      events: events('NEXT', 'SUBMIT'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'draft',
        states: {
          draft: { tags: ['editable'], meta: { label: 'Draft' }, on: { NEXT: 'review', SUBMIT: { guard: ({ context }) => context.n > 0, target: 'done' } } },
          review: {
            tags: ['busy', 'visible'],
            meta: { label: 'Review' },
            initial: 'first',
            states: { first: { meta: { step: 1 }, on: { NEXT: 'second' } }, second: { tags: ['last'], meta: { step: 2 }, on: { NEXT: '#tm.draft' } } },
            on: { SUBMIT: 'done' },
            exit: bump,
          },
          done: { type: 'final', tags: ['closed'] },
        },
        id: 'tm',
      }),
    }),
  alphabet: [send('NEXT'), send('SUBMIT')],
  sequences: [[send('SUBMIT'), send('NEXT'), send('NEXT'), send('NEXT'), send('SUBMIT')]],
};

const finals: FidelityCase = {
  name: 'finals',
  covers: [
    'final state in a compound state (onDone)',
    'final states in every parallel region (onDone)',
    'output of a final state',
    'machine output',
    'events after done',
  ],
  define: () =>
    defineWorkflow({
      name: 'finals',
      version: 1,
      input: input(),
      events: events('A', 'B', 'FINISH', 'LATE'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'steps',
        states: {
          steps: {
            initial: 's1',
            states: { s1: { on: { A: 's2' } }, s2: { type: 'final', output: ({ context }: { context: Ctx }) => ({ at: context.log.length }) } },
            onDone: { target: 'both', actions: [note('steps done'), ({ event }) => void event] },
          },
          both: {
            type: 'parallel',
            states: {
              x: { initial: 'x1', states: { x1: { on: { A: 'x2' } }, x2: { type: 'final' } } },
              y: { initial: 'y1', states: { y1: { on: { B: 'y2' } }, y2: { type: 'final' } } },
            },
            onDone: { target: 'last', actions: note('both done') },
          },
          last: { on: { FINISH: 'end' } },
          end: { type: 'final' },
        },
        on: { LATE: { actions: note('late') } },
        output: ({ context }: { context: Ctx }) => ({ log: context.log, n: context.n }),
      }),
    }),
  alphabet: [send('A'), send('B'), send('FINISH'), send('LATE')],
  sequences: [[send('A'), send('B'), send('A'), send('LATE'), send('FINISH'), send('LATE')]],
  generatedInSuite: true,
};

const throwing: FidelityCase = {
  name: 'throwing',
  covers: ['a guard that throws', 'error status', 'events after an error'],
  define: () =>
    defineWorkflow({
      name: 'throwing',
      version: 1,
      input: input(),
      events: events('OK', 'BAD_GUARD'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'on',
        states: {
          on: {
            on: {
              OK: { actions: bump },
              BAD_GUARD: {
                guard: ({ context }) => {
                  if (context.n > 1) throw new Error('guard broke');
                  return true;
                },
                actions: note('guarded'),
              },
            },
          },
        },
      }),
    }),
  alphabet: [send('OK'), send('BAD_GUARD')],
  sequences: [[send('BAD_GUARD'), send('OK'), send('OK'), send('BAD_GUARD'), send('OK')]],
};

const throwingInline: FidelityCase = {
  name: 'throwinginline',
  covers: ['an inline action that throws (assertEvent)'],
  define: () =>
    defineWorkflow({
      name: 'throwinginline',
      version: 1,
      input: input(),
      events: events('OK', 'ASSERT'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'on',
        states: { on: { on: { OK: { actions: bump }, ASSERT: { actions: ({ event }) => assertEvent(event, 'OK') } } } },
      }),
    }),
  alphabet: [send('OK'), send('ASSERT')],
  sequences: [[send('ASSERT'), send('OK')]],
  // An inline action runs after the write that ran it, and one that throws fails the instance
  // through an event of its own (jetstate.fail): one event at a time it agrees with XState, in a
  // burst the events behind it may be applied first (documented in docs/XSTATE.md).
  known: [
    {
      note: 'an inline action runs after the write: one that throws fails the instance by an event of its own, so in a burst the events behind it may be applied first (XState stops at once)',
      modes: ['burst'],
    },
    {
      note: 'an inline action runs after the write, at most once: an engine killed right after the write never runs it, and the instance goes on (XState stops with the error)',
      modes: ['kill'],
    },
  ],
};

export const coreCases: FidelityCase[] = [
  hierarchy,
  parallel,
  guards,
  eventless,
  reenter,
  order,
  history,
  raising,
  enqueue,
  wildcard,
  contextInput,
  tagsMeta,
  finals,
  throwing,
  throwingInline,
];
