// Secrets that follow the data (pure): which paths of a child's data hold its parent's secret
// values, how they merge with declared paths, how the codec seals a parent's copy of a child's start
// and snapshot with them, and that records written before inherited paths existed still load.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { setup } from 'xstate';
import { z } from 'zod';
import { childWorkflow } from '../../engine/define/child.js';
import { defineWorkflow } from '../../engine/define/definition.js';
import { OutboxKind } from '../../engine/protocol/events.js';
import { InstanceRecordSchema, type InstanceRecord } from '../../engine/protocol/record.js';
import { SecretCodec } from '../../engine/security/codec.js';
import {
  childSecretPaths,
  isInheritedPaths,
  MAX_INHERITED_PATHS,
  mergeSecretPaths,
  pathsHolding,
  secretValuesAt,
} from '../../engine/security/inherited-secrets.js';
import { checkSecretPaths, createKeyRing, isSealed } from '../../engine/security/secrets.js';
import { Registry } from '../../engine/step/registry.js';
import { startInstance } from '../../engine/step/step.js';

const ring = createKeyRing({ keys: [{ id: 'k1', key: randomBytes(32).toString('base64') }] });

describe('inherited secret paths', () => {
  it('collects the strings and numbers under secret paths, whole objects included', () => {
    const values = secretValuesAt(
      [{ card: { number: '4111', cvc: 123, holder: 'Ada' } }, { ssn: 'x', empty: '' }, null],
      ['card.number', 'card.cvc', 'ssn', 'empty'],
    );
    assert.deepEqual([...values].sort(), [123, '4111', 'x'].sort());
    assert.deepEqual([...secretValuesAt([{ card: { number: '4111', flags: [true, 7] } }], ['card'])].sort(), [7, '4111'].sort());
  });

  it('finds the paths holding them, escaping keys a path cannot name', () => {
    const values = new Set<string | number>(['4111', 7]);
    const child = {
      pay: { pan: '4111', n: 7, other: '4112' },
      cards: [{ number: '4111' }, { number: '5500' }],
      'a.b': { c: '4111' },
      '*': 7,
      '': '4111',
      flag: true,
    };
    assert.deepEqual([...pathsHolding(child, values)], ['pay.pan', 'pay.n', 'cards.0.number', '*.c', '*']);
    // Every path found is one the path compiler takes.
    assert.doesNotThrow(() => checkSecretPaths(mergeSecretPaths([], [...pathsHolding(child, values)])));
  });

  it('merges declared and inherited paths with none inside another, keeping the outer one', () => {
    const declared = ['card.number', 'ssn'];
    assert.equal(mergeSecretPaths(declared, undefined), declared);
    assert.equal(mergeSecretPaths(declared, ['ssn']), declared);
    assert.deepEqual(mergeSecretPaths(declared, ['card', 'pan']), ['card', 'pan', 'ssn']);
    assert.deepEqual(mergeSecretPaths(['cards.*.number'], ['cards.0.number', 'cards.1.number.x']), ['cards.*.number', 'cards.0.number']);
    // The same sets in another order give the same list.
    assert.deepEqual(mergeSecretPaths(['pan', 'card'], ['ssn', 'card.number']), mergeSecretPaths(['card', 'pan'], ['card.number', 'ssn']));
    for (const merged of [mergeSecretPaths(declared, ['card', 'pan']), mergeSecretPaths(['a.b'], ['a', 'a.b.c'])])
      assert.doesNotThrow(() => checkSecretPaths([...merged]));
  });

  it('stays bounded for long arrays: coarser paths that seal at least as much', () => {
    const cards = Array.from({ length: MAX_INHERITED_PATHS + 10 }, (_, i) => ({ number: `card-${i}`, note: 'plain' }));
    const paths = childSecretPaths(['cards.*.number'], [{ cards }], [{ list: cards }]);
    assert.deepEqual(paths, ['list.*.number']);
    const wide = Object.fromEntries(cards.map((c, i) => [`k${i}`, c.number]));
    assert.deepEqual(childSecretPaths(['cards.*.number'], [{ cards }], [{ wide }]), ['wide']);
    assert.deepEqual(childSecretPaths(['cards.*.number'], [{ cards }], [wide]), ['*']);
    assert.deepEqual(childSecretPaths([], [{ cards }], [{ list: cards }]), []);
  });

  it('accepts as inherited paths only a bounded list of dotted paths', () => {
    assert.ok(isInheritedPaths(['card.number', '*.c']));
    for (const bad of ['card', [''], ['a..b'], [1], Array.from({ length: MAX_INHERITED_PATHS + 1 }, () => 'a')])
      assert.equal(isInheritedPaths(bad), false, JSON.stringify(bad).slice(0, 40));
  });
});

// A parent that declares card.number and starts, in its first state, a child that declares nothing.
const child = defineWorkflow({
  name: 'child',
  version: 1,
  input: z.object({ card: z.object({ number: z.string() }) }),
  events: {},
  machine: setup({ types: { input: {} as { card: { number: string } }, context: {} as { pan: string; label: string } } }).createMachine({
    context: ({ input }) => ({ pan: input.card.number, label: 'plain' }),
    initial: 'idle',
    states: { idle: {} },
  }),
});
const parent = defineWorkflow({
  name: 'parent',
  version: 1,
  input: z.object({ card: z.object({ number: z.string() }), label: z.string() }),
  events: {},
  secrets: ['card.number'],
  machine: setup({
    types: { input: {} as { card: { number: string }; label: string }, context: {} as { card: { number: string }; label: string } },
    actors: { kid: childWorkflow(child) },
  }).createMachine({
    context: ({ input }) => input,
    initial: 'waiting',
    states: { waiting: { invoke: { id: 'k', src: 'kid', input: ({ context }) => ({ card: context.card }) } } },
  }),
});

describe('a parent record holding what it passed to a child', () => {
  const registry = new Registry();
  registry.add(parent);
  const codec = new SecretCodec((wf) => registry.secretPaths(wf), ring);
  const { runner } = registry.find('parent', 1)!;
  const started = startInstance(parent, runner, 'p-1', { card: { number: '4111-secret' }, label: 'visible' }, 1_000);

  it('names the inherited paths on the child entry and its start', () => {
    assert.deepEqual(started.record.children['k'], { workflow: 'child', id: 'p-1_k', token: 1, secrets: ['card.number', 'pan'] });
    const start = started.record.outbox.find((o) => o.type === OutboxKind.StartChild)!;
    assert.deepEqual((start.params as { secrets?: string[] }).secrets, ['card.number', 'pan']);
  });

  it('seals the child start input and the child snapshot in the parent record, and opens them again', () => {
    const sealed = codec.sealRecord(started.record);
    const text = JSON.stringify(sealed);
    assert.doesNotMatch(text, /4111-secret/);
    assert.match(text, /"label":"plain"/, 'undeclared fields stay readable');
    const params = sealed.outbox.find((o) => o.type === OutboxKind.StartChild)!.params as { input: { card: { number: unknown } } };
    assert.ok(isSealed(params.input.card.number));
    const kid = (sealed.snapshot['children'] as Record<string, { snapshot: { context: { pan: unknown } } }>)['k']!.snapshot;
    assert.ok(isSealed(kid.context.pan));
    // As stored and read back (JSON drops the snapshot's undefined fields).
    assert.deepEqual(codec.openRecord(InstanceRecordSchema.parse(JSON.parse(text))), InstanceRecordSchema.parse(JSON.parse(JSON.stringify(started.record))));
  });

  it('a record written before inherited paths existed still loads and opens', () => {
    const old: Record<string, unknown> = JSON.parse(JSON.stringify(codec.sealRecord(started.record)));
    delete old['secrets'];
    const children = old['children'] as Record<string, Record<string, unknown>>;
    delete children['k']!['secrets'];
    const parsed: InstanceRecord = InstanceRecordSchema.parse(old);
    assert.equal(parsed.secrets, undefined);
    assert.deepEqual(parsed.children['k'], { workflow: 'child', id: 'p-1_k', token: 1 });
    assert.doesNotThrow(() => codec.openRecord(parsed));
  });
});
