/**
 * Corpus: time. `after` delays (fixed, computed, nested, in parallel regions, due at the same
 * moment, in re-entered states, guarded), delayed raise with ids and cancel, and time that passes
 * while no timer can fire.
 */
import { cancel, raise, setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow } from '../../../engine/index.js';
import { send, stall, wait, type FidelityCase } from '../types.js';
import { bump, ctx, events, input, note, noteEvent, traced, type Ctx, type Types } from './kit.js';

const afterFixed: FidelityCase = {
  name: 'afterfixed',
  covers: ['after with a fixed delay', 'a timer cancelled by leaving its state', 'several delays on one state'],
  define: () =>
    defineWorkflow({
      name: 'afterfixed',
      version: 1,
      input: input(),
      events: events('PAY', 'RETRY'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'waiting',
        states: {
          waiting: { ...traced('waiting'), after: { 150: { actions: note('reminder') }, 300: 'expired' }, on: { PAY: 'paid' } },
          expired: { ...traced('expired'), on: { RETRY: 'waiting' } },
          paid: { type: 'final' },
        },
      }),
    }),
  alphabet: [send('PAY'), send('RETRY'), wait(100), wait(200)],
  sequences: [
    [wait(200), wait(200), send('RETRY'), wait(100), send('PAY')],
    [send('PAY'), wait(350)],
  ],
  generatedInSuite: true,
};

const afterComputed: FidelityCase = {
  name: 'aftercomputed',
  covers: ['after with a named delay computed from context', 'delay from input', 'guarded after transitions'],
  define: () =>
    defineWorkflow({
      name: 'aftercomputed',
      version: 1,
      input: input({ windowMs: z.number() }),
      events: events('SLOWER', 'ADD'),
      machine: setup({
        types: {} as Types,
        delays: { window: ({ context }) => (context['windowMs'] as number) + context.n * 100 },
      }).createMachine({
        context: ctx((i) => ({ windowMs: i['windowMs'] })),
        initial: 'open',
        states: {
          open: {
            ...traced('open'),
            after: { window: [{ guard: ({ context }) => context.n >= 2, target: 'big' }, { target: 'small' }] },
            on: { SLOWER: { target: 'open', reenter: true, actions: bump }, ADD: { actions: bump } },
          },
          big: traced('big'),
          small: traced('small'),
        },
      }),
    }),
  input: { windowMs: 150 },
  alphabet: [send('SLOWER'), send('ADD'), wait(120), wait(250)],
  sequences: [[send('SLOWER'), wait(120), send('ADD'), wait(400)], [wait(200)]],
  generatedInSuite: true,
};

const afterNested: FidelityCase = {
  name: 'afternested',
  covers: ['after in nested states', 'a child timer that exits its parent', 'a parent timer that cancels its child timer'],
  define: () =>
    defineWorkflow({
      name: 'afternested',
      version: 1,
      input: input(),
      events: events('INNER', 'RESTART'),
      machine: setup({ types: {} as Types }).createMachine({
        id: 'n',
        context: ctx(),
        initial: 'outer',
        states: {
          outer: {
            ...traced('outer'),
            after: { 400: 'timeout' },
            initial: 'first',
            states: {
              first: { ...traced('first'), after: { 150: 'second' }, on: { INNER: 'second' } },
              second: { ...traced('second'), after: { 150: '#n.escaped' } },
            },
          },
          timeout: { ...traced('timeout'), on: { RESTART: 'outer' } },
          escaped: { ...traced('escaped'), on: { RESTART: 'outer' } },
        },
      }),
    }),
  alphabet: [send('INNER'), send('RESTART'), wait(100), wait(200)],
  sequences: [[wait(200), wait(200), send('RESTART'), send('INNER'), wait(250)]],
  generatedInSuite: true,
};

const afterParallel: FidelityCase = {
  name: 'afterparallel',
  covers: ['after in parallel regions with different delays', 'timers from several regions in due order'],
  define: () =>
    defineWorkflow({
      name: 'afterparallel',
      version: 1,
      input: input(),
      events: events('RESET'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        type: 'parallel',
        on: { RESET: { target: '.', reenter: true, actions: note('reset') } },
        states: {
          a: { initial: 'w', states: { w: { after: { 300: { target: 'd', actions: note('a 300') } } }, d: {} } },
          b: {
            initial: 'w',
            states: { w: { after: { 100: { target: 'd', actions: note('b 100') } } }, d: { after: { 100: { actions: note('b then 100') } } } },
          },
          c: { initial: 'w', states: { w: { after: { 200: { target: 'd', actions: note('c 200') } } }, d: {} } },
        },
      }),
    }),
  alphabet: [send('RESET'), wait(120), wait(250)],
  sequences: [[wait(120), wait(120), wait(120), send('RESET'), wait(350)]],
};

const afterSameDue: FidelityCase = {
  name: 'aftersamedue',
  covers: ['timers due at the same moment (five parallel regions) fire in scheduling order'],
  define: () =>
    defineWorkflow({
      name: 'aftersamedue',
      version: 1,
      input: input(),
      events: events('RESET'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        type: 'parallel',
        on: { RESET: { target: '.', reenter: true } },
        states: {
          a: { initial: 'w', states: { w: { after: { 100: { target: 'd', actions: note('a') } } }, d: {} } },
          b: { initial: 'w', states: { w: { after: { 100: { target: 'd', actions: note('b') } } }, d: {} } },
          c: { initial: 'w', states: { w: { after: { 100: { target: 'd', actions: note('c') } } }, d: {} } },
          d: { initial: 'w', states: { w: { after: { 100: { target: 'd', actions: note('d') } } }, d: {} } },
          e: { initial: 'w', states: { w: { after: { 100: { target: 'd', actions: note('e') } } }, d: {} } },
        },
      }),
    }),
  alphabet: [send('RESET'), wait(150)],
  sequences: [[wait(150), send('RESET'), wait(150), send('RESET'), wait(150)]],
  // Fixed: the first of them to come back fires the ones scheduled before it first (step.ts).
};

const afterReenter: FidelityCase = {
  name: 'afterreenter',
  covers: ['a re-entered state restarts its timer', 'an internal self-transition keeps it', 'a timer on a state re-entered by a timer'],
  define: () =>
    defineWorkflow({
      name: 'afterreenter',
      version: 1,
      input: input(),
      events: events('KICK', 'POKE'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'armed',
        states: {
          armed: {
            ...traced('armed'),
            after: { 250: { target: 'armed', reenter: true, actions: bump, guard: ({ context }) => context.n < 2 }, 260: 'tripped' },
            on: { KICK: { target: 'armed', reenter: true }, POKE: { actions: note('poke') } },
          },
          tripped: traced('tripped'),
        },
      }),
    }),
  alphabet: [send('KICK'), send('POKE'), wait(100), wait(200)],
  sequences: [[wait(150), send('KICK'), wait(150), send('POKE'), wait(150), wait(300), wait(300)]],
};

const delayedRaise: FidelityCase = {
  name: 'delayedraise',
  covers: ['delayed raise with an id', 'cancel by id', 'delayed raise without an id', 'delay from an expression'],
  define: () =>
    defineWorkflow({
      name: 'delayedraise',
      version: 1,
      input: input(),
      events: events('ARM', 'CANCEL', 'ANON'),
      machine: setup({ types: {} as Types }).createMachine({
        context: ctx(),
        initial: 'idle',
        on: { TICK: { actions: noteEvent }, TOCK: { actions: noteEvent } },
        states: {
          idle: {
            on: {
              ARM: {
                actions: [
                  bump,
                  raise(({ context }) => ({ type: 'TICK', k: context.n }), { id: 'tick', delay: ({ context }: { context: Ctx }) => 100 + context.n * 50 }),
                ],
              },
              CANCEL: { actions: [cancel('tick'), note('cancelled')] },
              ANON: { actions: raise({ type: 'TOCK' }, { delay: 120 }) },
            },
          },
        },
      }),
    }),
  alphabet: [send('ARM'), send('CANCEL'), send('ANON'), wait(80), wait(200)],
  // Fixed: a delayed raise scheduled again with the same id keeps the older one (a cancel reaches the newest), as XState does.
  sequences: [[send('ARM'), wait(200), send('ARM'), send('CANCEL'), wait(250), send('ANON'), wait(200)]],
  generatedInSuite: true,
};

const overdue: FidelityCase = {
  name: 'overdue',
  covers: ['time passing while no timer can fire', 'overdue timers fire by due time', 'a nested timer due before its parent timer'],
  define: () =>
    defineWorkflow({
      name: 'overdue',
      version: 1,
      input: input(),
      events: events('AGAIN'),
      machine: setup({ types: {} as Types }).createMachine({
        id: 'o',
        context: ctx(),
        initial: 'p',
        states: {
          p: {
            ...traced('p'),
            after: { 300: { target: 'x', actions: note('300') } },
            initial: 'c',
            states: { c: { ...traced('c'), after: { 120: { target: '#o.y', actions: note('120') } } } },
          },
          x: { ...traced('x'), on: { AGAIN: 'p' } },
          y: { ...traced('y'), on: { AGAIN: 'p' } },
        },
      }),
    }),
  alphabet: [send('AGAIN'), wait(150), stall(600)],
  sequences: [
    [stall(600), send('AGAIN'), wait(200)],
    [wait(200), send('AGAIN'), wait(400)],
  ],
  // Fixed: with no engine at the start (kill mode) timers come back in scheduling order, with a
  // held clock in no particular order, and a late engine late; whichever fire comes first fires
  // the ones due before it first (step.ts).
  killInSuite: true,
};

export const timerCases: FidelityCase[] = [afterFixed, afterComputed, afterNested, afterParallel, afterSameDue, afterReenter, delayedRaise, overdue];
