/** The payload guard, text limits and execution names; then the guard in front of a real endpoint. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ListExecutionsCommand, StartExecutionCommand } from '@aws-sdk/client-sfn';
import { ErrorCode, JetstateError } from '../../engine/errors.js';
import { MAX_PAYLOAD_BYTES, encodeStepFunctionsInput, truncateText } from '../../adapters/step-functions/payload.js';
import { answerOfResult, failureOf, TaskFailedError } from '../../adapters/step-functions/task-answer.js';
import { executionNameFor } from '../../adapters/step-functions/trigger.js';
import { startSfnWorld, type SfnWorld } from './world.js';

/** A JSON string value whose encoding is exactly `bytes` long. */
const jsonOfBytes = (bytes: number): string => 'x'.repeat(bytes - 2);

describe('encodeStepFunctionsInput', () => {
  it('encodes values up to exactly 256 KiB', () => {
    const json = encodeStepFunctionsInput(jsonOfBytes(MAX_PAYLOAD_BYTES), 'input');
    assert.equal(Buffer.byteLength(json), MAX_PAYLOAD_BYTES);
  });

  it('refuses 256 KiB + 1, naming the value, its size, the limit and the fix', () => {
    assert.throws(
      () => encodeStepFunctionsInput(jsonOfBytes(MAX_PAYLOAD_BYTES + 1), "input of execution 'o-17'"),
      (e: unknown) => {
        assert.ok(e instanceof JetstateError);
        assert.equal(e.code, ErrorCode.InvalidInput);
        assert.match(e.message, /input of execution 'o-17'/);
        assert.match(e.message, /262145 bytes/);
        assert.match(e.message, /262144 bytes/);
        assert.match(e.message, /S3 key|KV key/);
        return true;
      },
    );
  });

  it('counts UTF-8 bytes, not characters', () => {
    const euro = '€'.repeat(Math.floor((MAX_PAYLOAD_BYTES - 2) / 3) + 1); // 3 bytes each
    assert.ok(euro.length < MAX_PAYLOAD_BYTES);
    assert.throws(() => encodeStepFunctionsInput(euro, 'input'), /bytes as JSON/);
  });

  it('refuses values that are not JSON-serialisable', () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    for (const bad of [undefined, () => 1, Symbol('s'), 10n, circular]) {
      assert.throws(
        () => encodeStepFunctionsInput(bad, 'task output'),
        (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.InvalidInput && /task output is not JSON-serialisable/.test(e.message),
      );
    }
  });
});

describe('task answers', () => {
  it('cuts error and cause to the SendTaskFailure limits without splitting a surrogate pair', () => {
    const f = failureOf(new TaskFailedError('E'.repeat(300), '😀'.repeat(20_000)));
    assert.equal(f.ok, false);
    assert.ok(f.error.length <= 256 && f.error.endsWith('…'));
    assert.ok(f.cause.length <= 32_768 && f.cause.endsWith('…'));
    assert.doesNotThrow(() => encodeURIComponent(f.cause)); // a lone surrogate would throw
    assert.equal(truncateText('short', 256), 'short');
  });

  it('uses the error name and message of any other error', () => {
    assert.deepEqual(failureOf(new RangeError('too far')), { ok: false, error: 'RangeError', cause: 'too far' });
  });

  it('turns an output over the limit into a failure instead of an answer AWS would refuse', () => {
    const a = answerOfResult(jsonOfBytes(MAX_PAYLOAD_BYTES + 1), 'output of task t');
    assert.equal(a.ok, false);
    assert.equal(!a.ok && a.error, 'jetstate.InvalidOutput');
    assert.deepEqual(answerOfResult(undefined, 'x'), { ok: true, output: 'null' });
  });
});

describe('executionNameFor', () => {
  it('keeps safe ids and maps others to distinct safe names of at most 80 characters', () => {
    assert.equal(executionNameFor('order-17_a'), 'order-17_a');
    const names = ['orders/17', 'orders:17', 'orders 17', 'x'.repeat(81), 'x'.repeat(82), 'ünïcode'].map(executionNameFor);
    for (const n of names) assert.match(n, /^[A-Za-z0-9_-]{1,80}$/);
    assert.equal(new Set(names).size, names.length);
    assert.equal(executionNameFor('orders/17'), executionNameFor('orders/17'));
  });
});

describe('the guard in front of the endpoint', () => {
  let world: SfnWorld;
  before(async () => {
    world = await startSfnWorld({ nats: false });
  });
  after(async () => {
    await world?.close();
  });

  it('refuses an input of 256 KiB + 1 before any request reaches the endpoint', async () => {
    const stateMachineArn = await world.createStateMachine('payload', { StartAt: 'Done', States: { Done: { Type: 'Pass', End: true } } });
    const client = world.client();
    world.endpoint.resetStats();
    const send = async (value: unknown): Promise<void> => {
      await client.send(new StartExecutionCommand({ stateMachineArn, name: 'big', input: encodeStepFunctionsInput(value, "input of execution 'big'") }));
    };
    await assert.rejects(send({ blob: 'x'.repeat(MAX_PAYLOAD_BYTES) }), (e: unknown) => e instanceof JetstateError && e.code === ErrorCode.InvalidInput);
    assert.equal(world.endpoint.stats().total, 0);
    // Just under the limit goes through.
    await send({ blob: 'x'.repeat(MAX_PAYLOAD_BYTES - 20) });
    const listed = await client.send(new ListExecutionsCommand({ stateMachineArn }));
    assert.equal(listed.executions?.length, 1);
  });
});
