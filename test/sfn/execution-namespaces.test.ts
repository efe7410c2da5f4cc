// Two namespaces on one AWS account (here: one endpoint) with instances of the same workflow, id
// and input: each instance gets its own execution, never the other namespace's.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CreateStateMachineCommand, ListExecutionsCommand, type SFNClient } from '@aws-sdk/client-sfn';
import { createEngine, type Engine } from '../../engine/index.js';
import { startLocalStepFunctions, type LocalStepFunctions } from '../../adapters/testing/index.js';
import { executionName, stepFunctions } from '../../adapters/step-functions/execution.js';
import { startNats, uniqueNamespace } from '../helpers.js';
import { stageWorkflow, type StageContext } from './stage-workflow.js';
import { ROLE, TEST_CREDENTIALS, asl, sfnClient } from './sfn-local-helpers.js';

describe('executions of two namespaces', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let local: LocalStepFunctions;
  let sfn: SFNClient;
  let stateMachineArn: string;
  const engines: Engine[] = [];

  before(async () => {
    nats = await startNats();
    local = await startLocalStepFunctions();
    sfn = sfnClient(local);
    // The output names the execution that produced it.
    const definition = asl({
      StartAt: 'Who',
      States: { Who: { Type: 'Pass', Parameters: { 'orderId.$': '$.orderId', 'executionArn.$': '$$.Execution.Id' }, End: true } },
    });
    stateMachineArn = (await sfn.send(new CreateStateMachineCommand({ name: 'who', definition, roleArn: ROLE }))).stateMachineArn!;
  });
  after(async () => {
    for (const e of engines.splice(0)) await e.close();
    await local?.close();
    sfn?.destroy();
    await nats?.dispose();
  });

  it('never share an execution', async () => {
    const wf = stageWorkflow('order', stateMachineArn, { pollIntervalMs: 100, maxPollIntervalMs: 400 });
    const arns: string[] = [];
    for (const namespace of [uniqueNamespace('sfnnsa'), uniqueNamespace('sfnnsb')]) {
      const engine = await createEngine({
        servers: nats.url,
        namespace,
        workflows: [wf],
        extensions: [stepFunctions({ region: local.region, endpoint: local.endpoint, credentials: TEST_CREDENTIALS, maxRequestsPerSecond: 200 })],
      });
      engines.push(engine);
      await engine.start(wf, { id: 'o-1', input: { orderId: 'o-1' } });
      const done = await engine.waitFor(wf, 'o-1', (i) => i.status !== 'running', { timeoutMs: 20_000 });
      assert.equal(done.value, 'done', JSON.stringify(done.context));
      arns.push(((done.context as StageContext).result as { executionArn: string }).executionArn);
    }
    assert.notEqual(arns[0], arns[1], 'each namespace has its own execution');
    assert.equal((await sfn.send(new ListExecutionsCommand({ stateMachineArn }))).executions!.length, 2);
  });

  it('names them within 80 allowed characters, readable, deterministic, apart by namespace', () => {
    const ref = { workflow: 'order', id: 'o-17', invokeId: 'settle', token: 3 };
    const a = executionName(ref, { namespace: 'shop' });
    assert.match(a, /^js-shop-order-o-17-3-[0-9a-f]{20}$/);
    assert.equal(a, executionName(ref, { namespace: 'shop' }));
    assert.notEqual(a, executionName(ref, { namespace: 'shop2' }));
    assert.notEqual(a, executionName({ ...ref, token: 4 }, { namespace: 'shop' }));
    assert.notEqual(a, executionName({ ...ref, invokeId: 'pay' }, { namespace: 'shop' }));
    // Long names: the readable part is cut, the hash of all of it keeps them apart.
    const long = { workflow: 'w'.repeat(60), id: 'i/d with spaces'.repeat(5), invokeId: 'x', token: 123 };
    const l1 = executionName(long, { namespace: 'n'.repeat(40), prefix: 'p'.repeat(24) });
    const l2 = executionName(long, { namespace: `${'n'.repeat(39)}m`, prefix: 'p'.repeat(24) });
    for (const n of [l1, l2]) {
      assert.ok(n.length <= 80, `${n} has ${n.length} characters`);
      assert.match(n, /^[A-Za-z0-9_-]+$/);
    }
    assert.notEqual(l1, l2);
    assert.ok(l1.endsWith('-123-' + l1.slice(-20)), 'the revision and the hash stay whole');
  });
});
