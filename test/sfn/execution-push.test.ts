// Push completion where a status event does not carry the outcome: an event without output (as
// EventBridge sends one whose output is over its size limit) reaching an engine that does not own
// the instance, and an event whose output is JSON null (how AWS writes an absent field). The
// back-up poll is left at its default of 5 minutes, so an instance finishes within the tests'
// bounds only if the event itself leads to the outcome.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CreateStateMachineCommand, type SFNClient } from '@aws-sdk/client-sfn';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { setup } from 'xstate';
import { z } from 'zod';
import { createEngine, defineWorkflow, type Engine, type WorkflowDefinition } from '../../engine/index.js';
import { startLocalStepFunctions, type EventBridgeExecutionStatusEvent, type LocalStepFunctions } from '../../adapters/testing/index.js';
import { stepFunctions } from '../../adapters/step-functions/execution.js';
import { startNats, uniqueNamespace } from '../helpers.js';
import { stageWorkflow, type StageContext } from './stage-workflow.js';
import { ROLE, TEST_CREDENTIALS, asl, sfnClient } from './sfn-local-helpers.js';

/** Bound of one wait: far below the 5-minute back-up poll, far above a push completion. */
const FINISH_BOUND_MS = 30_000;

describe('push completion without the output in the event', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let local: LocalStepFunctions;
  let sfn: SFNClient;
  let forwarder: NatsConnection;
  let stateMachineArn: string;
  /** What the forwarder does to each terminal event before publishing it, by test. */
  let rewrite: ((e: EventBridgeExecutionStatusEvent) => unknown) | undefined;
  let subject = '';
  const engines: Engine[] = [];

  before(async () => {
    nats = await startNats();
    forwarder = await connect({ servers: nats.url });
    local = await startLocalStepFunctions({
      onStatusChange: (e) => {
        if (rewrite && subject && e.detail.stateMachineArn === stateMachineArn) forwarder.publish(subject, JSON.stringify(rewrite(e)));
      },
    });
    sfn = sfnClient(local);
    stateMachineArn = (
      await sfn.send(
        new CreateStateMachineCommand({
          name: 'echo',
          definition: asl({ StartAt: 'Echo', States: { Echo: { Type: 'Pass', Parameters: { 'orderId.$': '$.orderId', echoed: true }, End: true } } }),
          roleArn: ROLE,
        }),
      )
    ).stateMachineArn!;
  });
  after(async () => {
    for (const e of engines.splice(0)) await e.close();
    await forwarder?.close();
    await local?.close();
    sfn?.destroy();
    await nats?.dispose();
  });

  const extension = (statusSubject?: string) =>
    stepFunctions({
      region: local.region,
      endpoint: local.endpoint,
      credentials: TEST_CREDENTIALS,
      maxRequestsPerSecond: 200,
      ...(statusSubject ? { statusSubject } : {}),
    });
  const engine = async (namespace: string, workflows: WorkflowDefinition[], statusSubject?: string): Promise<Engine> => {
    const e = await createEngine({ servers: nats.url, namespace, workflows, extensions: [extension(statusSubject)], leaseTtlMs: 2_000 });
    engines.push(e);
    return e;
  };
  /** Starts `ids` and returns the ids that finished `done` with the execution's real output within the bound. */
  const runAll = async (e: Engine, wf: WorkflowDefinition, ids: string[]): Promise<string[]> => {
    for (const id of ids) await e.start(wf, { id, input: { orderId: id } });
    const settled = await Promise.allSettled(ids.map((id) => e.waitFor(wf, id, (i) => i.status !== 'running', { timeoutMs: FINISH_BOUND_MS })));
    return ids.filter((id, n) => {
      const s = settled[n]!;
      if (s.status !== 'fulfilled' || s.value.value !== 'done') return false;
      const result = (s.value.context as StageContext).result as { orderId?: string; echoed?: boolean } | null;
      return result?.orderId === id && result.echoed === true;
    });
  };
  const withoutOutput = (e: EventBridgeExecutionStatusEvent): unknown => {
    const { output: _o, outputDetails: _d, ...detail } = e.detail;
    return { ...e, detail };
  };

  it('an event without output that reaches an engine not owning the instance still completes it', async () => {
    const namespace = uniqueNamespace('sfnpushroute');
    subject = `${namespace}.sfn.status`;
    rewrite = withoutOutput;
    const wf = stageWorkflow('routed', stateMachineArn, { completion: 'push' });
    const other = defineWorkflow({
      name: 'other',
      version: 1,
      input: z.object({}),
      events: {},
      machine: setup({}).createMachine({ initial: 'idle', states: { idle: {} } }),
    });
    // The owner of every 'routed' instance listens elsewhere, so every status event reaches the
    // other engine, which serves another workflow and owns none of these instances.
    const owner = await engine(namespace, [wf], `${namespace}.sfn.status.unused`);
    await engine(namespace, [other]);
    const ids = ['r-1', 'r-2', 'r-3', 'r-4'];
    const done = await runAll(owner, wf, ids);
    assert.deepEqual(done, ids, `${done.length} of ${ids.length} finished with their output`);
  });

  it('with two engines sharing the status subject, every instance completes', async () => {
    const namespace = uniqueNamespace('sfnpushtwo');
    subject = `${namespace}.sfn.status`;
    rewrite = withoutOutput;
    const wf = stageWorkflow('shared', stateMachineArn, { completion: 'push' });
    const a = await engine(namespace, [wf]);
    await engine(namespace, [wf]);
    const ids = Array.from({ length: 8 }, (_, n) => `s-${n}`);
    const done = await runAll(a, wf, ids);
    assert.deepEqual(done, ids, `${done.length} of ${ids.length} finished with their output`);
  });

  it('an event whose output is null is not taken as the result: the execution is described', async () => {
    const namespace = uniqueNamespace('sfnpushnull');
    subject = `${namespace}.sfn.status`;
    rewrite = (e) => ({ ...e, detail: { ...e.detail, output: null, outputDetails: null } });
    const wf = stageWorkflow('nulled', stateMachineArn, { completion: 'push' });
    const e = await engine(namespace, [wf]);
    const ids = ['n-1', 'n-2', 'n-3', 'n-4'];
    const done = await runAll(e, wf, ids);
    assert.deepEqual(done, ids, `${done.length} of ${ids.length} finished with their real output`);
  });
});
