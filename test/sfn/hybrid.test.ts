/**
 * The hybrid example end to end: local validation and reservation in the engine, the cloud stage
 * as a Step Functions execution on the loopback endpoint (the definition in
 * workflows/hybrid.asl.json, run over HTTP with the real SDK) whose `.waitForTaskToken` task goes
 * through JetStream to the callback server and a plain NATS settlement service, then the local
 * confirmation. Also: a payment declined in the cloud releases the reservation; an invalid order
 * never reaches the cloud; the bundled workflows load in an engine without the extension, and a
 * hybrid instance there ends with an error that names the missing extension.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DescribeExecutionCommand, ListExecutionsCommand } from '@aws-sdk/client-sfn';
import { createEngine, type Engine } from '../../engine/index.js';
import { stepFunctions } from '../../adapters/step-functions/execution.js';
import type { CallbackTaskServer } from '../../adapters/step-functions/callback.js';
import { HYBRID_LOCAL_STATE_MACHINE_ARN, confirmations, hybrid, reservations, stock, type HybridContext } from '../../workflows/hybrid.js';
import { hybridTaskHandlers, serveHybridCallbacks, startSettlementService, type SettlementService } from '../../workflows/hybrid-cloud.js';
import { approval, order, workflows as bundled } from '../../workflows/index.js';
import { runCli, uniqueNamespace } from '../helpers.js';
import { CREDENTIALS, startSfnWorld, type SfnWorld } from './world.js';

describe('the hybrid example', { concurrency: true }, () => {
  let world: SfnWorld;
  let engine: Engine;
  let callbacks: CallbackTaskServer;
  let service: SettlementService;
  const namespace = uniqueNamespace('hybrid');

  before(async () => {
    // sfn-local calls the forwarder in place of the 'hybrid-settle' Lambda function.
    world = await startSfnWorld({ taskHandlers: (nc) => hybridTaskHandlers(nc!) });
    const definition = JSON.parse(await readFile(join(import.meta.dirname, '..', '..', 'workflows', 'hybrid.asl.json'), 'utf8')) as object;
    assert.equal(await world.createStateMachine('hybrid', definition), HYBRID_LOCAL_STATE_MACHINE_ARN);
    service = startSettlementService(world.nc);
    callbacks = await serveHybridCallbacks({ connection: world.nc, clients: world.clients() });
    engine = await createEngine({
      servers: world.nats!.url,
      namespace,
      workflows: [hybrid],
      extensions: [stepFunctions({ region: world.endpoint.region, endpoint: world.endpoint.endpoint, credentials: CREDENTIALS })],
    });
  });
  after(async () => {
    await engine?.close();
    await callbacks?.stop();
    service?.stop();
    await world?.close();
  });

  const finished = (id: string, e: Engine = engine) => e.waitFor(hybrid, id, (i) => i.status !== 'running', { timeoutMs: 20_000 });
  const executionsOf = async (id: string) =>
    (await world.client().send(new ListExecutionsCommand({ stateMachineArn: HYBRID_LOCAL_STATE_MACHINE_ARN }))).executions!.filter((e) =>
      e.name!.startsWith(`hybrid-${namespace}-hybrid-${id}-`),
    );

  it('validates and reserves locally, settles in Step Functions through a NATS service, confirms locally', async () => {
    const before = stock.get('book')!;
    await engine.start(hybrid, { id: 'h-1', input: { orderId: 'h-1', sku: 'book', quantity: 2, amount: 30 } });
    const done = await finished('h-1');
    const ctx = done.context as HybridContext;
    assert.equal(done.value, 'completed', JSON.stringify(ctx));
    assert.equal(ctx.settlementId, 'stl-h-1', 'the settlement the NATS service made, through the task token');
    assert.equal(confirmations.get('h-1'), 'stl-h-1', 'the local final step ran');
    assert.equal(stock.get('book'), before - 2);
    assert.deepEqual(reservations.get(ctx.reservationId!), { sku: 'book', quantity: 2 });

    const [execution, ...others] = await executionsOf('h-1');
    assert.equal(others.length, 0, 'one execution');
    assert.equal(execution!.name, ctx.execution);
    const described = await world.client().send(new DescribeExecutionCommand({ executionArn: execution!.executionArn! }));
    assert.equal(described.status, 'SUCCEEDED');
    assert.deepEqual(JSON.parse(described.input!), { orderId: 'h-1', amount: 30, reservationId: ctx.reservationId });

    // Each step once, in order: reserve, settle (the cloud stage), confirm.
    const history = await engine.history(hybrid, 'h-1');
    const tasks = history.filter((h) => (h.event as { type?: string }).type === 'jetstate.task');
    assert.deepEqual(
      tasks.map((h) => h.to),
      ['settling', 'confirming', 'completed'],
    );
    // History names the outcomes as the machine saw them; replay still uses the internal event.
    assert.deepEqual(
      tasks.map((h) => h.actorEvent),
      ['xstate.done.actor.reserve', 'xstate.done.actor.settle', 'xstate.done.actor.confirm'],
    );
    assert.equal((await engine.verify(hybrid, 'h-1')).ok, true);
    const cli = await runCli(['history', 'hybrid', 'h-1', '--server', world.nats!.url, '--namespace', namespace]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /xstate\.done\.actor\.settle \(task\)\s+"settling" -> "confirming"/);
  });

  it('releases the reservation when the payment is declined in the cloud', async () => {
    const before = stock.get('lamp')!;
    await engine.start(hybrid, { id: 'h-2', input: { orderId: 'h-2', sku: 'lamp', quantity: 1, amount: 20_000 } });
    const done = await finished('h-2');
    const ctx = done.context as HybridContext;
    assert.equal(done.value, 'cancelled', JSON.stringify(ctx));
    assert.equal(ctx.error?.name, 'Payment.Declined');
    assert.match(ctx.error!.message, /over the limit/);
    assert.equal(stock.get('lamp'), before, 'the reservation was released');
    const [execution] = await executionsOf('h-2');
    const described = await world.client().send(new DescribeExecutionCommand({ executionArn: execution!.executionArn! }));
    assert.equal(described.status, 'FAILED');
    assert.equal(described.error, 'Payment.Declined');
  });

  it('rejects an invalid order locally, before any cloud call', async () => {
    await engine.start(hybrid, { id: 'h-3', input: { orderId: 'h-3', sku: 'piano', quantity: 1, amount: 10 } });
    const done = await finished('h-3');
    assert.equal(done.value, 'rejected');
    assert.equal((done.context as HybridContext).reason, "unknown sku 'piano'");
    assert.equal((await executionsOf('h-3')).length, 0);
  });

  it('loads with the bundled workflows in an engine without the extension; a hybrid instance there fails clearly', { timeout: 30_000 }, async () => {
    assert.ok(bundled.includes(hybrid), 'workflows/index.ts exports the hybrid workflow');
    // As `jetstate dev` runs them: no Step Functions extension.
    const plain = await createEngine({ servers: world.nats!.url, namespace: uniqueNamespace('hybridplain'), workflows: [order, approval, hybrid] });
    try {
      await plain.start(hybrid, { id: 'h-4', input: { orderId: 'h-4', sku: 'chair', quantity: 1, amount: 10 } });
      const done = await finished('h-4', plain);
      const ctx = done.context as HybridContext;
      assert.equal(done.value, 'cancelled', JSON.stringify(ctx));
      assert.match(
        ctx.error!.message,
        /activity 'settle' of workflow 'hybrid' needs the 'step-functions' engine extension; pass extensions: \[stepFunctions\(\{ region \}\)\] to createEngine/,
      );
      assert.equal((await executionsOf('h-4')).length, 0);
    } finally {
      await plain.close();
    }
  });

  it('an engine without the extension leaves the cloud stage to a live engine that has it', { timeout: 60_000 }, async () => {
    const shared = uniqueNamespace('hybridmixed');
    const plain = await createEngine({ servers: world.nats!.url, namespace: shared, workflows: [hybrid] });
    const full = await createEngine({
      servers: world.nats!.url,
      namespace: shared,
      workflows: [hybrid],
      extensions: [stepFunctions({ region: world.endpoint.region, endpoint: world.endpoint.endpoint, credentials: CREDENTIALS })],
    });
    try {
      const ids = ['m-1', 'm-2', 'm-3', 'm-4'];
      for (const id of ids) await plain.start(hybrid, { id, input: { orderId: id, sku: 'chair', quantity: 1, amount: 10 } });
      const ends = await Promise.all(ids.map((id) => plain.waitFor(hybrid, id, (i) => i.status !== 'running', { timeoutMs: 40_000 })));
      assert.deepEqual(
        ends.map((d) => d.value),
        ids.map(() => 'completed'),
        JSON.stringify(ends.map((d) => (d.context as HybridContext).error)),
      );
    } finally {
      await plain.close();
      await full.close();
    }
  });
});
