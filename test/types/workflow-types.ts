// Type tests, checked by `npm run typecheck` (never run): what the public API types from a workflow,
// and the misuse it refuses to compile. Each `@ts-expect-error` line must fail to compile (tsc
// reports an unused one), and every other line must compile.
import { assign, setup, type StateValueFrom } from 'xstate';
import { z } from 'zod';
import {
  defineWorkflow,
  eventsOf,
  inputOf,
  type Client,
  type ContextOf,
  type EventsFrom,
  type HistoryEntry,
  type Instance,
  type OutputOf,
  type StateValueOf,
  type TagOf,
  type WorkflowHistoryEntry,
  type WorkflowHistoryEvent,
  type WorkflowInstance,
} from '../../engine/index.js';
import type { DefinitionCheck } from '../../engine/define/event-types.js';
import { order, type OrderContext, type OrderOutput } from '../../workflows/order.js';
import { approval } from '../../workflows/approval.js';

/** True only when A and B are the same type. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(): T | void {}

declare const client: Client;

// ---- reads are typed from the machine -------------------------------------------------------

export async function reads(): Promise<void> {
  const inst = await client.get(order, 'o-1');
  if (!inst) return;
  expectType<Equal<typeof inst, WorkflowInstance<typeof order>>>();
  expectType<Equal<typeof inst.context, OrderContext>>();
  expectType<Equal<typeof inst.value, 'awaitingPayment' | 'paid' | 'shipped' | 'delivered' | 'cancelled' | 'expired'>>();
  expectType<Equal<typeof inst.output, OrderOutput | undefined>>();
  // A machine that does not declare its output type: unknown.
  expectType<Equal<OutputOf<typeof approval>, unknown>>();
  const paid: number = inst.context.paid;
  const orderId: string = inst.context.orderId;
  void [paid, orderId];
  // @ts-expect-error: the context has no such field
  void inst.context.paidd;

  inst.matches('paid');
  // @ts-expect-error: 'resovled' is not a state of the order machine
  inst.matches('resovled');
  // @ts-expect-error: the order machine has no nested states
  inst.matches({ paid: 'x' });

  const started = await client.start(order, { id: 'o-2', input: { orderId: 'o-2', customer: 'ada', amount: 10 } });
  expectType<Equal<typeof started.context, OrderContext>>();

  const done = await client.waitFor(order, 'o-1', (s) => s.matches('shipped') && s.context.paid > 0);
  expectType<Equal<typeof done, WorkflowInstance<typeof order>>>();
  await client.waitFor(order, 'o-1', (s) => s.matches('shipped'), { timeoutMs: 5_000 });
  // @ts-expect-error: a typo in a waitFor predicate fails to compile
  await client.waitFor(order, 'o-1', (s) => s.matches('shiped'));

  for await (const i of client.list(order, { state: 'paid', status: 'running' })) {
    const n: number = i.context.payments;
    void n;
  }
  // @ts-expect-error: list's state filter takes only the machine's states
  client.list(order, { state: 'payed' });

  // A typed instance is still an Instance (adapters and the CLI take any workflow's).
  const untyped: Instance = inst;
  const ctx: unknown = untyped.context;
  void ctx;
}

// ---- nested states, tags, output ------------------------------------------------------------

const Ticket = z.object({ title: z.string() });
const TicketEvents = { START: z.object({}), PACK: z.object({ box: z.string() }), SEND: z.object({}) };

export const ticket = defineWorkflow({
  name: 'ticket',
  version: 1,
  input: Ticket,
  events: TicketEvents,
  machine: setup({
    types: {
      input: inputOf(Ticket),
      context: {} as { title: string; box?: string },
      events: eventsOf(TicketEvents),
      tags: {} as 'busy' | 'idle',
      output: {} as { box: string | null },
    },
  }).createMachine({
    context: ({ input }) => ({ title: input.title }),
    initial: 'open',
    states: {
      open: { tags: ['idle'], on: { START: 'shipping' } },
      shipping: {
        tags: ['busy'],
        initial: 'packing',
        states: {
          packing: { on: { PACK: { target: 'packed', actions: assign({ box: ({ event }) => event.box }) } } },
          packed: { on: { SEND: 'sent' } },
          sent: { type: 'final' },
        },
        onDone: 'closed',
      },
      closed: { type: 'final' },
    },
    output: ({ context }) => ({ box: context.box ?? null }),
  }),
});

export async function nested(): Promise<void> {
  const t = await client.get(ticket, 't-1');
  if (!t) return;
  expectType<Equal<StateValueOf<typeof ticket>, 'open' | 'closed' | { shipping: 'packing' | 'packed' | 'sent' }>>();
  expectType<Equal<TagOf<typeof ticket>, 'busy' | 'idle'>>();
  expectType<Equal<OutputOf<typeof ticket>, { box: string | null }>>();
  expectType<Equal<ContextOf<typeof ticket>, { title: string; box?: string }>>();
  // The same argument type as XState's own typed snapshot.matches.
  expectType<Equal<Parameters<typeof t.matches>[0], StateValueFrom<typeof ticket.machine>>>();
  t.matches('shipping');
  t.matches({ shipping: 'packed' });
  // @ts-expect-error: 'packd' is not a child of 'shipping'
  t.matches({ shipping: 'packd' });
  // @ts-expect-error: 'packed' is not a top-level state (it is shipping.packed)
  t.matches('packed');
  t.hasTag('busy');
  // @ts-expect-error: the machine declares the tags 'busy' and 'idle' only
  t.hasTag('bussy');
  // A machine that declares no tags takes any string.
  const a = await client.get(approval, 'a-1');
  a?.hasTag('anything');
  // can() takes the machine's events, as XState's snapshot.can does; getMeta() its states' meta.
  const canPack: boolean = t.can({ type: 'PACK', box: 'b' });
  void canPack;
  // @ts-expect-error: 'PACKK' is no event of the ticket machine
  t.can({ type: 'PACKK' });
  const meta: Record<string, unknown> = t.getMeta();
  void meta;
}

// ---- history: a union to narrow --------------------------------------------------------------

export async function history(): Promise<void> {
  const entries = await client.history(order, 'o-1');
  expectType<Equal<typeof entries, WorkflowHistoryEntry<typeof order>[]>>();
  for (const e of entries) {
    if (e.kind === 'start') {
      const customer: string = e.event.input.customer;
      const windowMs: number = e.event.input.paymentWindowMs; // zod output: the default is filled in
      void [customer, windowMs];
      expectType<Equal<typeof e.from, null>>();
    } else if (e.kind === 'event') {
      switch (e.event.type) {
        case 'PAY': {
          const amount: number = e.event.amount;
          void amount;
          break;
        }
        case 'CANCEL': {
          const reason: string = e.event.reason; // required in the output (a default)
          void reason;
          break;
        }
        case 'jetstate.timer': {
          const timerId: string = e.event.timerId;
          void timerId;
          break;
        }
        case 'jetstate.task':
        case 'jetstate.child': {
          const ok: boolean = e.event.ok;
          void ok;
          break;
        }
        case 'jetstate.self': {
          const inner: string = e.event.event.type;
          void inner;
          break;
        }
        case 'jetstate.fail': {
          const reason: string = e.event.reason;
          void reason;
          break;
        }
        case 'jetstate.stop':
        case 'SHIP':
        case 'DELIVERED':
          break;
        default: {
          // Every case is handled above: the union is closed.
          const never: never = e.event;
          void never;
        }
      }
      // @ts-expect-error: 'PAYY' is no event of the order workflow
      if (e.event.type === 'PAYY') void 0;
      // @ts-expect-error: `amount` exists only once the event is narrowed to PAY
      void e.event.amount;
    } else {
      expectType<Equal<typeof e.kind, 'rejected'>>();
      // A rejected event failed the checks: it is unknown.
      expectType<Equal<typeof e.event, unknown>>();
    }
    if (e.to !== null) {
      const to: StateValueOf<typeof order> = e.to;
      void to;
    }
  }
  // A typed entry is still a HistoryEntry.
  const stored: HistoryEntry[] = entries;
  void stored;
  expectType<Equal<Extract<WorkflowHistoryEvent<typeof order>, { type: 'SHIP' }>, { type: 'SHIP'; carrier: string; trackingId: string }>>();
}

// ---- events written once ----------------------------------------------------------------------

const Events = {
  PAY: z.object({ amount: z.number() }),
  CANCEL: z.object({ reason: z.string().default('none') }),
  NOTE: z.object({ text: z.string().optional() }),
};
expectType<Equal<Extract<EventsFrom<typeof Events>, { type: 'PAY' }>['amount'], number>>();
expectType<Equal<Extract<EventsFrom<typeof Events>, { type: 'CANCEL' }>['reason'], string>>();
expectType<Equal<keyof Extract<EventsFrom<typeof Events>, { type: 'CANCEL' }>, 'type' | 'reason' | '$identity'>>();

// ---- defineWorkflow: the machine's types and the schemas must agree ---------------------------

const Input = z.object({ id: z.string() });
const twoStates = { initial: 'a', states: { a: { on: { PAY: 'b', CANCEL: 'b', NOTE: 'b' } }, b: {} } } as const;

// Agreeing types compile, written by hand or with eventsOf / inputOf.
export const byHand = defineWorkflow({
  name: 'by-hand',
  version: 1,
  input: Input,
  events: Events,
  machine: setup({
    types: {
      input: {} as { id: string },
      events: {} as { type: 'PAY'; amount: number } | { type: 'CANCEL'; reason: string } | { type: 'NOTE'; text?: string },
    },
  }).createMachine(twoStates),
});
export const once = defineWorkflow({
  name: 'once',
  version: 1,
  input: Input,
  events: Events,
  machine: setup({ types: { input: inputOf(Input), events: eventsOf(Events) } }).createMachine(twoStates),
});
// A machine that declares no types is not checked.
export const untypedMachine = defineWorkflow({ name: 'untyped', version: 1, input: Input, events: Events, machine: setup({}).createMachine(twoStates) });

const payOnly = { PAY: z.object({ amount: z.number() }) };
const payStates = { initial: 'a', states: { a: { on: { PAY: 'b', REFUND: 'b' } }, b: {} } } as const;
type PayRefund = { type: 'PAY'; amount: number } | { type: 'REFUND' };

const refundMachine = setup({ types: { events: {} as PayRefund } }).createMachine(payStates);
// @ts-expect-error: the machine handles REFUND, which events does not declare
export const refundUndeclared = defineWorkflow({ name: 'r1', version: 1, input: Input, events: payOnly, machine: refundMachine });
expectType<
  Equal<
    DefinitionCheck<typeof refundMachine, typeof Input, typeof payOnly, never>,
    {
      error: "event REFUND: in the machine's types but not declared in events; add its zod schema to events, or list it in internalEvents if only the machine raises it";
    }
  >
>();
// ...unless only the machine raises it.
export const refundInternal = defineWorkflow({
  name: 'r2',
  version: 1,
  input: Input,
  events: payOnly,
  internalEvents: ['REFUND'],
  machine: setup({ types: { events: {} as PayRefund } }).createMachine(payStates),
});

const payStringMachine = setup({ types: { events: {} as { type: 'PAY'; amount: string } } }).createMachine({
  initial: 'a',
  states: { a: { on: { PAY: 'b' } }, b: {} },
});
// @ts-expect-error: PAY's payload differs (amount is a string in the machine)
export const payMismatch = defineWorkflow({ name: 'r3', version: 1, input: Input, events: payOnly, machine: payStringMachine });
expectType<
  Equal<
    DefinitionCheck<typeof payStringMachine, typeof Input, typeof payOnly, never>,
    {
      error: 'event PAY: zod schema and machine types differ; make the payload in setup({ types: { events } }) match the schema in events, or use events: eventsOf(events)';
    }
  >
>();

// @ts-expect-error: an optional field the schema does not have is a difference too
export const extraField = defineWorkflow({
  name: 'r4',
  version: 1,
  input: Input,
  events: payOnly,
  machine: setup({ types: { events: {} as { type: 'PAY'; amount: number; note?: string } } }).createMachine({
    initial: 'a',
    states: { a: { on: { PAY: 'b' } }, b: {} },
  }),
});

// @ts-expect-error: events declares CANCEL, the machine's types do not
export const cancelMissing = defineWorkflow({
  name: 'r5',
  version: 1,
  input: Input,
  events: { ...payOnly, CANCEL: z.object({}) },
  machine: setup({ types: { events: {} as { type: 'PAY'; amount: number } } }).createMachine({
    initial: 'a',
    states: { a: { on: { PAY: 'b', '*': 'b' } }, b: {} },
  }),
});

// @ts-expect-error: the input schema's output does not fit the machine's input type
export const inputMismatch = defineWorkflow({
  name: 'r6',
  version: 1,
  input: Input,
  events: payOnly,
  machine: setup({ types: { input: {} as { id: number }, events: eventsOf(payOnly) } }).createMachine({
    initial: 'a',
    states: { a: { on: { PAY: 'b' } }, b: {} },
  }),
});

// ---- sending stays checked against the schemas' input side -----------------------------------

export async function sends(): Promise<void> {
  await client.send(order, 'o-1', { type: 'PAY', amount: 10 });
  await client.send(order, 'o-1', { type: 'CANCEL' }); // the reason has a default
  // @ts-expect-error: PAY needs a number
  await client.send(order, 'o-1', { type: 'PAY', amount: '10' });
  // @ts-expect-error: no such event
  await client.send(order, 'o-1', { type: 'REFUND' });
}
