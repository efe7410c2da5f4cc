/**
 * Step Functions stages of edge instances while the site is cut off: a real hub and leaf node
 * (JetStream at the site, domain `edge`), the loopback Step Functions endpoint as "the cloud"
 * (its Lambda stand-in and the settlement service talk to the hub's NATS), and the site's engine
 * reaching that endpoint only through a TCP relay the test cuts, beside the leaf node link.
 *
 * - A hybrid instance started at the site while both are cut reserves locally, then waits in
 *   `settling` for longer than its stage's retry policy (2 attempts) would allow, without failing;
 *   after the restore its execution is started once, completes, and the instance ends once.
 * - A cut after the start and before the execution ends: the polls get no answer, the execution
 *   ends in the cloud meanwhile, and after the restore the outcome is applied once.
 * - With `untilReachable: false` (the behaviour before this option) the same cut fails the stage.
 *
 * During every cut the site's other work goes on (events and a timer of another instance).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListExecutionsCommand } from '@aws-sdk/client-sfn';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { createClient, createEngine, type Engine } from '../../engine/index.js';
import { LinkProxy } from '../../adapters/nats-server/link-proxy.js';
import { ensureTaskTokenStream, type CallbackTaskServer } from '../../adapters/step-functions/callback.js';
import { stepFunctions, type StepFunctionsExtension } from '../../adapters/step-functions/execution.js';
import { HYBRID_LOCAL_STATE_MACHINE_ARN, defineHybridWorkflow, reservations, type HybridContext } from '../../workflows/hybrid.js';
import {
  HYBRID_TOKEN_STREAM,
  HYBRID_TOKEN_SUBJECT,
  hybridTaskHandlers,
  serveHybridCallbacks,
  startSettlementService,
  type SettlementService,
} from '../../workflows/hybrid-cloud.js';
import { CREDENTIALS, startSfnWorld, type SfnWorld } from '../sfn/world.js';
import { eventually, memoryLogger, uniqueNamespace } from '../helpers.js';
import { site } from './site-workflow.js';
import { startTopology, type Topology } from './topology.js';

/** The stage's retry policy: today's default is 8 attempts over minutes; 2 quick ones here. */
const RETRY = { maxAttempts: 2, initialIntervalMs: 100, maxIntervalMs: 200 };
/** Waits between tries while AWS gives no answer (1 s to 30 s by default). */
const REACH = { reachIntervalMs: 100, maxReachIntervalMs: 400 };
/** Tries without an answer to sit through before restoring: well past the 2 attempts of `RETRY`. */
const UNANSWERED_TRIES = 8;

const edgeHybrid = defineHybridWorkflow({ pollIntervalMs: 200, stage: { retry: RETRY, ...REACH } });

describe('Step Functions stages of an edge instance while the site is cut off', () => {
  let topo: Topology | undefined;
  let hubNc: NatsConnection | undefined;
  let world: SfnWorld | undefined;
  let awsPath: LinkProxy | undefined;
  let service: SettlementService | undefined;
  let callbacks: CallbackTaskServer | undefined;
  let engine: Engine | undefined;
  let sfn: StepFunctionsExtension;
  const logger = memoryLogger();
  const namespace = uniqueNamespace('edgesfn');
  /** Status events of this namespace's executions are forwarded to the hub's NATS, as EventBridge would be. */
  const pushNamespace = uniqueNamespace('edgesfnpush');

  before(async () => {
    topo = await startTopology({ leafJetStream: true });
    hubNc = await connect({ servers: topo.hub.url });
    const nc = hubNc;
    // The cloud: the endpoint's Lambda stand-in stores task tokens in the hub's JetStream, where
    // the callback server (on the hub) takes them to the settlement service (on the hub).
    world = await startSfnWorld({
      nats: false,
      taskHandlers: () => hybridTaskHandlers(nc),
      onStatusChange: (e) => {
        if (e.detail.executionArn.includes(pushNamespace)) nc.publish(`${pushNamespace}.sfn.status`, JSON.stringify(e));
      },
    });
    const definition = JSON.parse(await readFile(join(import.meta.dirname, '..', '..', 'workflows', 'hybrid.asl.json'), 'utf8')) as object;
    assert.equal(await world.createStateMachine('hybrid', definition), HYBRID_LOCAL_STATE_MACHINE_ARN);
    await ensureTaskTokenStream({ connection: hubNc, stream: HYBRID_TOKEN_STREAM, subjects: [HYBRID_TOKEN_SUBJECT] });
    service = startSettlementService(hubNc);
    callbacks = await serveHybridCallbacks({ connection: hubNc, clients: world.clients() });
    // The site reaches "AWS" only through this relay.
    awsPath = await LinkProxy.start(Number(new URL(world.endpoint.endpoint).port));
    sfn = siteExtension(awsPath);
    engine = await createEngine({ servers: topo.leaf.url, namespace, workflows: [edgeHybrid, site], leaseTtlMs: 1_000, logger, extensions: [sfn] });
  });
  after(async () => {
    await engine?.close();
    await callbacks?.stop();
    service?.stop();
    await awsPath?.cut();
    await world?.close();
    await hubNc?.close();
    await topo?.dispose();
  });

  /**
   * The site's extension: one HTTP try per SDK call, so a cut shows at once. The request timeout
   * stays at its default (30 s): a reply that comes late on a busy machine would count as lost and
   * be asked for again (still one execution, but two StartExecution calls at the endpoint).
   */
  const siteExtension = (path: LinkProxy, extra: { pushFallbackPollMs?: number } = {}): StepFunctionsExtension =>
    stepFunctions({
      region: world!.endpoint.region,
      endpoint: `http://127.0.0.1:${path.port}`,
      credentials: CREDENTIALS,
      maxAttempts: 1,
      maxRequestsPerSecond: 50,
      ...extra,
    });

  /** Nobody answers the executions' task tokens until `resumeCallbacks()`: they run until stopped. */
  const pauseCallbacks = async (): Promise<void> => {
    await callbacks?.stop();
    callbacks = undefined;
  };
  const resumeCallbacks = async (): Promise<void> => {
    callbacks ??= await serveHybridCallbacks({ connection: hubNc!, clients: world!.clients() });
  };

  const cut = async (): Promise<void> => {
    await topo!.link.cut();
    await awsPath!.cut();
  };
  const restore = async (): Promise<void> => {
    await awsPath!.restore();
    await topo!.link.restore();
  };
  const startsAtEndpoint = (): number => world!.endpoint.stats().byAction['StartExecution'] ?? 0;
  const executionsOf = async (ns: string, id: string) =>
    (await world!.client().send(new ListExecutionsCommand({ stateMachineArn: HYBRID_LOCAL_STATE_MACHINE_ARN, maxResults: 1000 }))).executions!.filter((x) =>
      x.name!.startsWith(`hybrid-${ns}-hybrid-${id}-`),
    );

  /** The execution ends ABORTED by the engine's StopExecution (the invoking state was left). */
  async function stoppedByTheEngine(executionArn: string): Promise<void> {
    const ended = await world!.waitForEnd(executionArn, 30_000);
    assert.equal(ended.status, 'ABORTED');
    assert.equal(ended.error, 'jetstate.Exited');
  }

  /** The site's own work during a cut: events and a durable timer of another instance apply at once. */
  async function siteKeepsWorking(id: string): Promise<void> {
    await engine!.start(site, { id, input: { label: id } });
    for (const k of [1, 2, 3]) await engine!.send(site, id, { type: 'ADD', k });
    await engine!.send(site, id, { type: 'ARM', delayMs: 200 });
    const s = await engine!.waitFor(site, id, (i) => i.context.rings === 1, { timeoutMs: 10_000 });
    assert.deepEqual(s.context.log, [1, 2, 3]);
  }

  /** One outcome per task of the instance, in order: reserve, settle, confirm. */
  async function appliedOnce(id: string): Promise<void> {
    const history = await engine!.history(edgeHybrid, id);
    const outcomes = history.filter((h) => (h.event as { type?: string }).type === 'jetstate.task');
    assert.deepEqual(
      outcomes.map((h) => h.actorEvent),
      ['xstate.done.actor.reserve', 'xstate.done.actor.settle', 'xstate.done.actor.confirm'],
    );
    assert.equal(history.filter((h) => h.to === 'completed').length, 1, 'the final state is reached once');
    assert.equal((await engine!.verify(edgeHybrid, id)).ok, true);
  }

  it('a hybrid instance started at the site while cut off waits for AWS instead of failing, then runs its cloud stage once', async () => {
    const id = 'cut-start';
    await cut();
    const triesBefore = sfn.stats().starts;
    const endpointBefore = startsAtEndpoint();
    await engine!.start(edgeHybrid, { id, input: { orderId: id, sku: 'book', quantity: 1, amount: 25 } });
    // Its local steps ran during the cut: validated, stock reserved, now in the cloud stage.
    const settling = await engine!.waitFor(edgeHybrid, id, (i) => i.value !== 'validating' && i.value !== 'reserving', { timeoutMs: 10_000 });
    assert.equal(settling.value, 'settling', JSON.stringify(settling.context));
    const reservationId = (settling.context as HybridContext).reservationId!;
    assert.ok(reservations.has(reservationId), 'reserved at the site');

    // Cut off for many more StartExecution tries than the stage's 2 attempts.
    await eventually(
      async () => {
        const now = await engine!.get(edgeHybrid, id);
        if (now?.status !== 'running') return; // failed: the assertion below says how
        assert.ok(sfn.stats().starts - triesBefore >= UNANSWERED_TRIES, `${sfn.stats().starts - triesBefore} tries so far`);
      },
      30_000,
      100,
    );
    const during = (await engine!.get(edgeHybrid, id))!;
    assert.equal(during.status, 'running', `the instance ended during the cut: ${JSON.stringify(during.context)}`);
    assert.equal(during.value, 'settling');
    assert.equal(startsAtEndpoint(), endpointBefore, 'nothing reached the endpoint during the cut');
    assert.ok(
      logger.lines.some((l) => /stage 'settle' of hybrid 'cut-start'.*StartExecution got no answer from AWS/.test(l)),
      `a warning names the stage, the instance and the error:\n${logger.lines.slice(-5).join('\n')}`,
    );
    await siteKeepsWorking('busy-1');

    await restore();
    const done = await engine!.waitFor(edgeHybrid, id, (i) => i.status !== 'running', { timeoutMs: 30_000 });
    assert.equal(done.value, 'completed', JSON.stringify(done.context));
    assert.equal((done.context as HybridContext).settlementId, `stl-${id}`);
    assert.equal((await executionsOf(namespace, id)).length, 1, 'one execution');
    // Usually one StartExecution. Once, in a full suite run on a loaded machine, two reached the
    // endpoint (the second found the execution by its name). The likely cause, a StartExecution
    // slower than the hold time (handed over while it ran, then deferred, then run again from the
    // tasks stream), is fixed and tested in test/integration/task-deferred-handover.test.ts; one
    // execution and one outcome are what the stage promises.
    const calls = startsAtEndpoint() - endpointBefore;
    assert.ok(calls === 1 || calls === 2, `${calls} StartExecution calls reached the endpoint`);
    await appliedOnce(id);
    // The cloud reads the same outcome through the restored link.
    await topo!.linked('edge');
    const cloud = await createClient({ servers: topo!.hub.url, namespace, jsDomain: 'edge', workflows: [edgeHybrid, site] });
    try {
      assert.equal((await cloud.get(edgeHybrid, id))!.value, 'completed');
    } finally {
      await cloud.close();
    }
  });

  it('a cut after the start and before the end: polls wait for AWS, the outcome is applied once after the restore', async () => {
    const id = 'cut-middle';
    // Nobody answers the execution's task token until the site is cut off.
    await pauseCallbacks();
    const endpointBefore = startsAtEndpoint();
    await engine!.start(edgeHybrid, { id, input: { orderId: id, sku: 'lamp', quantity: 2, amount: 40 } });
    await eventually(async () => {
      assert.equal((await engine!.get(edgeHybrid, id))!.value, 'settling');
      assert.equal((await executionsOf(namespace, id))[0]?.status, 'RUNNING');
      assert.equal(sfn.stats().pending, 1, 'the site follows the execution');
    }, 15_000);
    await cut();
    // The cloud answers the token while the site cannot see it: the execution ends in the cloud.
    await resumeCallbacks();
    const [execution] = await executionsOf(namespace, id);
    assert.equal((await world!.waitForEnd(execution!.executionArn!)).status, 'SUCCEEDED');
    const unansweredBefore = sfn.stats().unanswered;
    await eventually(() => assert.ok(sfn.stats().unanswered - unansweredBefore >= 3, 'polls without an answer'), 20_000, 100);
    const during = (await engine!.get(edgeHybrid, id))!;
    assert.equal(during.status, 'running', JSON.stringify(during.context));
    assert.equal(during.value, 'settling');
    await siteKeepsWorking('busy-2');

    await restore();
    const done = await engine!.waitFor(edgeHybrid, id, (i) => i.status !== 'running', { timeoutMs: 30_000 });
    assert.equal(done.value, 'completed', JSON.stringify(done.context));
    assert.equal((done.context as HybridContext).execution, execution!.name);
    assert.equal((await executionsOf(namespace, id)).length, 1, 'one execution');
    assert.equal(startsAtEndpoint() - endpointBefore, 1, 'one StartExecution reached the endpoint');
    await appliedOnce(id);
    await eventually(() => assert.equal(sfn.stats().pending, 0, 'nothing left to follow'));
  });

  it('a start that reached AWS but whose reply was lost in a cut is found again by its name and adopted, once', async () => {
    const id = 'cut-reply';
    const endpointBefore = startsAtEndpoint();
    // The next StartExecution starts the execution at once and answers 1.5 s later: the cut drops the reply.
    world!.endpoint.delay({ ms: 1_500, actions: ['StartExecution'] });
    await engine!.start(edgeHybrid, { id, input: { orderId: id, sku: 'book', quantity: 3, amount: 60 } });
    await eventually(() => assert.equal(startsAtEndpoint() - endpointBefore, 1, 'the start reached the endpoint'));
    const unansweredBefore = sfn.stats().unanswered;
    await cut();
    // The execution runs and ends in the cloud; the site knows nothing of it yet.
    const [execution] = await eventually(async () => {
      const found = await executionsOf(namespace, id);
      assert.equal(found.length, 1);
      return found;
    });
    assert.equal((await world!.waitForEnd(execution!.executionArn!)).status, 'SUCCEEDED');
    await eventually(() => assert.ok(sfn.stats().unanswered - unansweredBefore >= 3, 'tries without an answer'), 20_000, 100);
    const during = (await engine!.get(edgeHybrid, id))!;
    assert.equal(during.status, 'running', JSON.stringify(during.context));
    assert.equal(during.value, 'settling');

    await restore();
    const done = await engine!.waitFor(edgeHybrid, id, (i) => i.status !== 'running', { timeoutMs: 30_000 });
    assert.equal(done.value, 'completed', JSON.stringify(done.context));
    // The next try asked for the same name: ExecutionAlreadyExists, described and adopted.
    assert.equal((done.context as HybridContext).execution, execution!.name, 'the execution whose reply was lost');
    assert.equal((await executionsOf(namespace, id)).length, 1, 'one execution');
    assert.equal(startsAtEndpoint() - endpointBefore, 2, 'the lost start and the one that found it');
    await appliedOnce(id);
  });

  it('a CANCEL during the cut leaves the stage at once; a start whose reply was lost is stopped once AWS answers', async () => {
    const id = 'cut-cancel';
    // Nobody answers the execution's task token: it runs until stopped.
    await pauseCallbacks();
    try {
      const endpointBefore = startsAtEndpoint();
      world!.endpoint.delay({ ms: 1_500, actions: ['StartExecution'] });
      await engine!.start(edgeHybrid, { id, input: { orderId: id, sku: 'lamp', quantity: 1, amount: 5 } });
      await eventually(() => assert.equal(startsAtEndpoint() - endpointBefore, 1, 'the start reached the endpoint'));
      const unansweredBefore = sfn.stats().unanswered;
      await cut();
      await eventually(() => assert.ok(sfn.stats().unanswered > unansweredBefore, 'the reply was lost'), 10_000);
      await engine!.send(edgeHybrid, id, { type: 'CANCEL', reason: 'changed my mind' });
      const done = await engine!.waitFor(edgeHybrid, id, (i) => i.status !== 'running', { timeoutMs: 10_000 });
      assert.equal(done.value, 'cancelled', 'left the cloud stage and released the reservation at the site, cut off');
      const [execution] = await executionsOf(namespace, id);
      assert.equal(execution?.status, 'RUNNING', 'still running in the cloud while the site is cut off');

      await restore();
      await stoppedByTheEngine(execution!.executionArn!);
    } finally {
      await restore();
      await resumeCallbacks();
    }
  });

  it('a start whose reply was lost, cancelled during the cut, is stopped once AWS answers though the engine that tried was closed meanwhile, without waiting for a poll interval', async () => {
    const id = 'cut-cancel-close';
    const ns = uniqueNamespace('edgesfnstop');
    // Polled every minute: the stop recorded by the first engine must not wait for that in the second.
    const slowPoll = defineHybridWorkflow({ pollIntervalMs: 60_000, stage: { retry: RETRY, ...REACH } });
    const options = { servers: topo!.leaf.url, namespace: ns, workflows: [slowPoll], leaseTtlMs: 1_000, drainTimeoutMs: 500, logger };
    // Nobody answers the execution's task token: it runs until stopped.
    await pauseCallbacks();
    const first = siteExtension(awsPath!);
    const open = new Set([await createEngine({ ...options, extensions: [first] })]);
    try {
      const [a] = open;
      const endpointBefore = startsAtEndpoint();
      world!.endpoint.delay({ ms: 1_500, actions: ['StartExecution'] });
      await a!.start(slowPoll, { id, input: { orderId: id, sku: 'lamp', quantity: 1, amount: 7 } });
      await eventually(() => assert.equal(startsAtEndpoint() - endpointBefore, 1, 'the start reached the endpoint'));
      await cut();
      await eventually(() => assert.ok(first.stats().unanswered > 0, 'the reply was lost'), 10_000);
      await a!.send(slowPoll, id, { type: 'CANCEL', reason: 'changed my mind' });
      const done = await a!.waitFor(slowPoll, id, (i) => i.status !== 'running', { timeoutMs: 10_000 });
      assert.equal(done.value, 'cancelled');
      const [execution] = await executionsOf(ns, id);
      assert.equal(execution?.status, 'RUNNING', 'still running in the cloud while the site is cut off');

      // The engine that tried the stop closes before AWS answers; another one serves the namespace.
      await a!.close();
      open.delete(a!);
      open.add(await createEngine({ ...options, extensions: [siteExtension(awsPath!)] }));
      await restore();
      await stoppedByTheEngine(execution!.executionArn!);
    } finally {
      await restore();
      for (const e of open) await e.close();
      await resumeCallbacks();
    }
  });

  it('two engines at the site: the one waiting for AWS holds the stage; closed during the cut, the other takes it over; started once', async () => {
    const id = 'cut-pair';
    const ns = uniqueNamespace('edgesfnpair');
    const exts = [siteExtension(awsPath!), siteExtension(awsPath!)];
    // A short drain: the engine that closes hands the waiting stage on after it.
    const engines = await Promise.all(
      exts.map((x) =>
        createEngine({ servers: topo!.leaf.url, namespace: ns, workflows: [edgeHybrid], leaseTtlMs: 1_000, drainTimeoutMs: 500, logger, extensions: [x] }),
      ),
    );
    const open = new Set(engines);
    try {
      const endpointBefore = startsAtEndpoint();
      await cut();
      await engines[0]!.start(edgeHybrid, { id, input: { orderId: id, sku: 'chair', quantity: 1, amount: 15 } });
      const holder = await eventually(() => {
        const i = exts.findIndex((x) => x.stats().starts > 0);
        assert.ok(i >= 0, 'an engine tries to start the stage');
        return i;
      });
      const other = 1 - holder;
      // Many tries, over several acknowledgement waits (1 s): the other engine never runs the stage meanwhile.
      await eventually(() => assert.ok(exts[holder]!.stats().starts >= 2 * UNANSWERED_TRIES, `${exts[holder]!.stats().starts} tries`), 30_000, 100);
      assert.equal(exts[other]!.stats().starts, 0, 'the stage is held by the engine that waits');
      assert.equal((await engines[other]!.get(edgeHybrid, id))!.value, 'settling');

      // The holder closes during the cut: its attempt ends without counting, the other takes over and waits.
      await engines[holder]!.close();
      open.delete(engines[holder]!);
      await eventually(() => assert.ok(exts[other]!.stats().starts >= 2, 'the other engine waits for AWS now'), 30_000, 100);
      const during = (await engines[other]!.get(edgeHybrid, id))!;
      assert.equal(during.status, 'running', JSON.stringify(during.context));
      assert.equal(during.value, 'settling');

      await restore();
      const done = await engines[other]!.waitFor(edgeHybrid, id, (i) => i.status !== 'running', { timeoutMs: 30_000 });
      assert.equal(done.value, 'completed', JSON.stringify(done.context));
      assert.equal((await executionsOf(ns, id)).length, 1, 'one execution');
      assert.equal(startsAtEndpoint() - endpointBefore, 1, 'one StartExecution reached the endpoint');
      const outcomes = (await engines[other]!.history(edgeHybrid, id)).filter((h) => (h.event as { type?: string }).type === 'jetstate.task');
      assert.deepEqual(
        outcomes.map((h) => h.actorEvent),
        ['xstate.done.actor.reserve', 'xstate.done.actor.settle', 'xstate.done.actor.confirm'],
      );
    } finally {
      await restore();
      for (const e of open) await e.close();
    }
  });

  /** A site engine in the push namespace: completion by status events, the back-up poll after `fallbackMs`. */
  async function pushSite(fallbackMs: number) {
    const wf = defineHybridWorkflow({ pollIntervalMs: 200, completion: 'push', stage: { retry: RETRY, ...REACH } });
    const ext = siteExtension(awsPath!, { pushFallbackPollMs: fallbackMs });
    const e = await createEngine({ servers: topo!.leaf.url, namespace: pushNamespace, workflows: [wf], leaseTtlMs: 1_000, logger, extensions: [ext] });
    return { wf, ext, e };
  }

  it('completes by push: a status event published in the hub reaches the site engine over the link, no poll needed', async () => {
    const id = 'push-up';
    const { wf, ext, e } = await pushSite(600_000);
    try {
      await e.start(wf, { id, input: { orderId: id, sku: 'lamp', quantity: 1, amount: 3 } });
      const done = await e.waitFor(wf, id, (i) => i.status !== 'running', { timeoutMs: 30_000 });
      assert.equal(done.value, 'completed', JSON.stringify(done.context));
      assert.equal(ext.stats().describes, 0, 'no DescribeExecution: the outcome came by push');
      const outcomes = (await e.history(wf, id)).filter((h) => (h.event as { type?: string }).type === 'jetstate.task');
      assert.equal(outcomes.filter((h) => h.actorEvent === 'xstate.done.actor.settle').length, 1);
    } finally {
      await e.close();
    }
  });

  it('completes by push: a status event lost in a cut is made up for by the back-up poll after the restore, once', async () => {
    const id = 'push-cut';
    const { wf, ext, e } = await pushSite(1_000);
    // The execution waits for its task token, answered in the hub: not until the site is cut.
    await pauseCallbacks();
    try {
      await e.start(wf, { id, input: { orderId: id, sku: 'lamp', quantity: 1, amount: 4 } });
      await eventually(async () => assert.equal((await executionsOf(pushNamespace, id)).length, 1, 'the execution started'), 10_000);
      await cut();
      await resumeCallbacks();
      const [execution] = await executionsOf(pushNamespace, id);
      const ended = await world!.waitForEnd(execution!.executionArn!, 30_000);
      assert.equal(ended.status, 'SUCCEEDED', 'ended in the cloud while the site was cut off (its status event went nowhere)');
      assert.equal((await e.get(wf, id))!.value, 'settling');
      await restore();
      const done = await e.waitFor(wf, id, (i) => i.status !== 'running', { timeoutMs: 30_000 });
      assert.equal(done.value, 'completed', JSON.stringify(done.context));
      assert.ok(ext.stats().describes > 0, 'the back-up poll found it');
      const outcomes = (await e.history(wf, id)).filter((h) => (h.event as { type?: string }).type === 'jetstate.task');
      assert.equal(outcomes.filter((h) => h.actorEvent === 'xstate.done.actor.settle').length, 1);
    } finally {
      await restore();
      await resumeCallbacks();
      await e.close();
    }
  });

  it('with untilReachable: false the same cut fails the stage after its retry policy (the behaviour before the option)', async () => {
    const id = 'cut-old';
    const ns = uniqueNamespace('edgesfnold');
    const old = defineHybridWorkflow({ pollIntervalMs: 200, stage: { retry: RETRY, untilReachable: false } });
    const oldEngine = await createEngine({
      servers: topo!.leaf.url,
      namespace: ns,
      workflows: [old],
      leaseTtlMs: 1_000,
      logger: memoryLogger(),
      extensions: [siteExtension(awsPath!)],
    });
    try {
      await cut();
      await oldEngine.start(old, { id, input: { orderId: id, sku: 'chair', quantity: 1, amount: 10 } });
      const done = await oldEngine.waitFor(old, id, (i) => i.status !== 'running', { timeoutMs: 20_000 });
      assert.equal(done.value, 'cancelled', JSON.stringify(done.context));
      assert.match((done.context as HybridContext).error!.message, /ECONNREFUSED/);
      await restore();
      assert.equal((await executionsOf(ns, id)).length, 0);
    } finally {
      await restore();
      await oldEngine.close();
    }
  });
});
