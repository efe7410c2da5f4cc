import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { setup } from 'xstate';
import { defineWorkflow } from '../../engine/index.js';
import { parseStoredRecord } from '../../engine/protocol/record.js';
import { startInstance } from '../../engine/step/step.js';
import { MachineRunner } from '../../engine/step/runner.js';

const plain = defineWorkflow({
  name: 'plain',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({}).createMachine({ initial: 'on', states: { on: {} } }),
});
const stored = (): Record<string, unknown> => JSON.parse(JSON.stringify(startInstance(plain, new MachineRunner(plain.machine), 'p1', {}, 1_000).record));

describe('a stored record', () => {
  it('keeps the fields the schema does not know, at the top and inside its parts', () => {
    const raw = { ...stored(), later: { a: 1 }, timers: { t: { dueAtMs: 5, token: 1, event: { type: 'X' }, later: 2 } } };
    const parsed = parseStoredRecord(raw);
    assert.ok(parsed.success);
    const data = parsed.data as unknown as Record<string, unknown> & { timers: Record<string, Record<string, unknown>> };
    assert.deepEqual(data['later'], { a: 1 });
    assert.equal(data.timers['t']?.['later'], 2);
  });

  it('checks the fields it knows, and takes nothing from a __proto__ key', () => {
    const raw = JSON.parse(`{"__proto__":{"parent":{"workflow":1},"secrets":"not a list"},${JSON.stringify(stored()).slice(1)}`) as unknown;
    const parsed = parseStoredRecord(raw);
    assert.ok(parsed.success);
    assert.equal(Object.getPrototypeOf(parsed.data), Object.prototype);
    assert.equal(parsed.data.parent, undefined);
    assert.equal(parsed.data.secrets, undefined);
    assert.equal(parseStoredRecord({ ...stored(), secrets: 'not a list' }).success, false);
  });
});
