import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMachine, fromCallback, fromEventObservable, fromObservable, fromPromise, fromTransition, setup, spawnChild } from 'xstate';
import { z } from 'zod';
import { activity, childWorkflow, defineWorkflow, ErrorCode, JetstateError } from '../../engine/index.js';

const machine = setup({}).createMachine({ initial: 'a', states: { a: { on: { GO: 'b' } }, b: { type: 'final' } } });
const base = { name: 'flow', version: 1, machine, input: z.object({}), events: { GO: z.object({}) } };

function rejects(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: JetstateError) => e instanceof JetstateError && e.code === ErrorCode.InvalidDefinition && pattern.test(e.message));
}

describe('defineWorkflow', () => {
  it('accepts a durable definition', () => {
    const def = defineWorkflow(base);
    assert.equal(def.name, 'flow');
    assert.ok(Object.isFrozen(def));
  });
  it('says how to fix a missing or bad name and version', () => {
    rejects(() => defineWorkflow({ ...base, name: undefined as never }), /name is missing/);
    rejects(() => defineWorkflow({ ...base, name: 'a.b' }), /A-Z, a-z, 0-9/);
    rejects(() => defineWorkflow({ ...base, version: undefined as never }), /version must be a positive integer/);
    rejects(() => defineWorkflow({ ...base, version: 1.5 }), /version must be a positive integer/);
  });
  it('refuses inline actor implementations and unknown actors', () => {
    const inline = setup({}).createMachine(<any>{ initial: 'a', states: { a: { invoke: { src: fromPromise(async () => 1) }, on: { GO: 'a' } } } });
    rejects(() => defineWorkflow({ ...base, machine: inline }), /inline actor implementation.*setup\(\{ actors/);
    const missing = setup({}).createMachine(<any>{ initial: 'a', states: { a: { invoke: { src: 'nope' as never }, on: { GO: 'a' } } } });
    rejects(() => defineWorkflow({ ...base, machine: missing }), /'nope'.*does not provide/);
  });
  it('refuses invoked actors it cannot make durable, naming the kind and the fix', () => {
    const invoking = (logic: unknown) =>
      setup({ actors: { a: logic as never } }).createMachine(<any>{ initial: 's', states: { s: { invoke: { src: 'a' }, on: { GO: 's' } } } });
    const subscribable = () => ({ subscribe: () => ({ unsubscribe() {} }) }) as never;
    const cases: Array<[unknown, RegExp]> = [
      [fromPromise(async () => 1), /state '\(machine\)\.s' invokes 'a', which cannot be made durable: a fromPromise actor .*activity\(fn\)/],
      [fromCallback(() => {}), /a fromCallback actor .*activity\(\)/],
      [fromObservable(subscribable), /a fromObservable actor/],
      [fromEventObservable(subscribable), /a fromEventObservable actor/],
      [fromTransition((n: number) => n, 0), /a fromTransition actor .*childWorkflow\(\)/],
      [createMachine({}), /a plain machine as an actor .*childWorkflow\(thatWorkflow\)/],
    ];
    for (const [logic, pattern] of cases) rejects(() => defineWorkflow({ ...base, machine: invoking(logic) }), pattern);
    // Durable ones are taken.
    assert.equal(defineWorkflow({ ...base, machine: invoking(activity(async () => 1)) }).name, 'flow');
    assert.equal(defineWorkflow({ ...base, machine: invoking(childWorkflow(defineWorkflow({ ...base, name: 'kid' }))) }).name, 'flow');
  });
  it('refuses spawnChild of what it cannot make durable, also in named actions', () => {
    const spawning = (actors: Record<string, unknown>, action: unknown, actions: Record<string, unknown> = {}) =>
      setup({ actors: actors as never, actions: actions as never }).createMachine({
        initial: 's',
        states: { s: { on: { GO: { actions: action as never } } } },
      });
    rejects(
      () => defineWorkflow({ ...base, machine: spawning({ m: createMachine({}) }, spawnChild('m', { id: 'k' })) }),
      /on 'GO' spawns 'm' \(spawnChild\), which cannot be made durable: a plain machine/,
    );
    rejects(() => defineWorkflow({ ...base, machine: spawning({}, spawnChild(fromPromise(async () => 1) as never)) }), /spawns an inline actor implementation/);
    rejects(
      () => defineWorkflow({ ...base, machine: spawning({ p: fromPromise(async () => 1) }, 'later', { later: spawnChild('p' as never) }) }),
      /spawns 'p' \(spawnChild\).*fromPromise/,
    );
    rejects(
      () => defineWorkflow({ ...base, machine: spawning({}, spawnChild('nope' as never)) }),
      /spawns 'nope', which setup\(\{ actors \}\) does not provide/,
    );
    assert.equal(defineWorkflow({ ...base, machine: spawning({ w: activity(async () => 1) }, spawnChild('w', { id: 'k' })) }).name, 'flow');
  });
  it('refuses declared events the machine never handles', () => {
    rejects(() => defineWorkflow({ ...base, events: { GO: z.object({}), STOP: z.object({}) } }), /'STOP' is handled by no state/);
  });
  it('takes internalEvents (raised by the machine only) and refuses one that is also sendable', () => {
    assert.equal(defineWorkflow({ ...base, internalEvents: ['CHECK'] }).name, 'flow');
    rejects(() => defineWorkflow({ ...base, internalEvents: ['GO'] }), /'GO' is both in events .* and in internalEvents/);
    rejects(() => defineWorkflow({ ...base, internalEvents: 'CHECK' as never }), /internalEvents must be a list/);
  });
  it('refuses reserved event names and non-schemas', () => {
    rejects(() => defineWorkflow({ ...base, events: { 'xstate.init': z.object({}) } }), /reserved prefix/);
    rejects(() => defineWorkflow({ ...base, input: {} as never }), /input must be a zod schema/);
    rejects(() => defineWorkflow({ ...base, events: { GO: 'x' as never } }), /events.GO must be a zod schema/);
  });
  it('refuses misspelt options, which would drop encryption or permissions silently, naming the one meant', () => {
    const misspelt = (extra: object) => defineWorkflow({ ...base, ...extra } as never);
    rejects(() => misspelt({ secret: ['card.number'] }), /unknown option 'secret'; did you mean 'secrets'\?/);
    rejects(() => misspelt({ permission: { start: ['clerk'] } }), /unknown option 'permission'; did you mean 'permissions'\?/);
    rejects(() => misspelt({ requireidentity: true }), /did you mean 'requireIdentity'\?/);
    rejects(() => misspelt({ retention: 7 }), /unknown option 'retention' \(known: name, version, .*limits\)/);
    rejects(() => misspelt({ permissions: { starts: ['clerk'] } }), /unknown option 'permissions.starts'; did you mean 'permissions.start'\?/);
    rejects(() => misspelt({ permissions: { events: ['GO'] } }), /permissions.events must map event types to rules/);
    rejects(() => misspelt({ requireIdentity: 'yes' }), /requireIdentity must be true or false/);
    rejects(() => misspelt({ limits: 5 }), /limits must be an object/);
  });
  it('a definition spread into a new version keeps its secrets, permissions, identity rule and limits unless given again', () => {
    const v1 = defineWorkflow({
      ...base,
      secrets: ['card.number'],
      permissions: { start: ['clerk'] },
      requireIdentity: true,
      limits: { maxEventBytes: 4_096 },
    });
    const v2 = defineWorkflow({ ...v1, version: 2 });
    assert.equal(v2.version, 2);
    assert.deepEqual(v2.security, v1.security);
    const v3 = defineWorkflow({ ...v1, version: 3, secrets: ['card.cvc'], requireIdentity: false });
    assert.deepEqual([v3.security.secrets, v3.security.requireIdentity, v3.security.permissions], [['card.cvc'], false, { start: ['clerk'] }]);
  });
  it('refuses permission rules that could only fail at run time or deny everyone by mistake', () => {
    for (const start of [{ anyOf: 'admin' }, {}, { anyOf: [] }, { allOf: ['a', ''] }, { anyOf: ['a'], oneOf: ['b'] }, 'admin', [1]])
      rejects(() => defineWorkflow({ ...base, permissions: { start } } as never), /permissions.start must be a list of roles such as \['clerk'\]/);
    for (const start of [['clerk'], { anyOf: ['clerk'] }, { allOf: ['clerk', 'eu'] }, { anyOf: ['a'], allOf: ['b'] }, () => true])
      assert.ok(defineWorkflow({ ...base, permissions: { start } } as never));
  });
});

describe('activity and childWorkflow', () => {
  const fn = async () => 1;
  it('refuse misspelt options, which would leave a default in place silently, naming the one meant', () => {
    rejects(() => activity(fn, { timeout: 5_000 } as never), /activity options: unknown option 'timeout'; did you mean 'timeoutMs'\?/);
    rejects(() => activity(fn, { retry: { attempts: 10 } } as never), /unknown option 'retry.attempts'.*known: retry.maxAttempts/);
    rejects(() => activity(fn, { retry: { maxAttempt: 10 } } as never), /did you mean 'retry.maxAttempts'\?/);
    rejects(() => activity(fn, { inprocess: true } as never), /did you mean 'inProcess'\?/);
  });
  it('refuse options of the wrong type with the fix', () => {
    rejects(() => activity(fn, null as never), /options must be an object such as \{ timeoutMs/);
    rejects(() => activity(fn, { requires: 'step-functions' } as never), /requires must be a list of extension names such as \['step-functions'\]/);
    rejects(() => activity(fn, { timeoutMs: '5000' } as never), /timeoutMs must be a number of milliseconds/);
    rejects(() => activity(fn, { retry: { maxIntervalMs: Infinity } } as never), /must be finite numbers/);
    rejects(() => activity(fn, { retry: 3 } as never), /retry must be an object such as \{ maxAttempts: 5 \}/);
    rejects(() => activity(fn, { inProcess: 'yes' } as never), /inProcess must be true or false/);
    assert.ok(activity(fn, { timeoutMs: 5_000, retry: { maxAttempts: 5 }, requires: ['step-functions'], inProcess: false }));
  });
  it('childWorkflow takes a definition, not a machine or a name', () => {
    for (const bad of [machine, undefined, 'flow'])
      rejects(() => childWorkflow(bad as never), /childWorkflow\(workflow\): workflow must be a definition made with defineWorkflow/);
    assert.ok(childWorkflow(defineWorkflow(base)));
  });
});
