// A secret value a Step Functions stage echoes back in its output (a Pass state, a ResultPath
// that keeps the input) under another name than the declared path: an in-process activity's
// outcome names such paths so they stay sealed on the events stream and in the history; a
// stage's outcome did not, and the card number was stored in the clear.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { CreateStateMachineCommand } from '@aws-sdk/client-sfn';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { activity, createEngine, defineWorkflow, type Engine } from '../../engine/index.js';
import { startLocalStepFunctions, type LocalStepFunctions } from '../../adapters/local/step-functions/server.js';
import { stepFunctions, stepFunctionsExecution } from '../../adapters/step-functions/execution.js';
import { startNats, uniqueNamespace } from '../helpers.js';
import { ROLE, TEST_CREDENTIALS, asl, sfnClient } from './sfn-local-helpers.js';

const RUN = randomBytes(6).toString('hex');
const KEYS = `k1:${randomBytes(32).toString('base64')}`;
type In = { orderId: string; payment: { card: string } };

const machineWith = (stage: unknown) =>
  setup({
    types: { context: {} as { orderId: string; payment: { card: string }; ok?: boolean }, input: {} as In },
    actors: { stage: stage as never },
  }).createMachine({
    context: ({ input }) => ({ ...input }),
    initial: 'paying',
    states: {
      paying: {
        invoke: {
          src: 'stage',
          input: ({ context }: { context: In }) => ({ card: context.payment.card }) as never,
          onDone: { target: 'done', actions: assign({ ok: ({ event, context }) => (event.output as { card?: string }).card === context.payment.card }) },
          onError: 'failed',
        },
      },
      done: { type: 'final' },
      failed: { type: 'final' },
    },
  });

describe('a secret echoed back by a delegated stage', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let local: LocalStepFunctions;
  let engine: Engine;
  let nc: NatsConnection;
  let namespace: string;
  const wfs: Record<string, ReturnType<typeof defineWorkflow>> = {};
  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    namespace = uniqueNamespace('stagesecret');
    local = await startLocalStepFunctions({});
    const sfn = sfnClient(local);
    const arn = (
      await sfn.send(
        new CreateStateMachineCommand({ name: 'echo', definition: asl({ StartAt: 'E', States: { E: { Type: 'Pass', End: true } } }), roleArn: ROLE }),
      )
    ).stateMachineArn!;
    sfn.destroy();
    const inputSchema = z.object({ orderId: z.string(), payment: z.object({ card: z.string() }) });
    wfs.sfn = defineWorkflow({
      name: 'sfnpay',
      version: 1,
      input: inputSchema,
      events: {},
      secrets: ['payment.card'],
      machine: machineWith(stepFunctionsExecution({ stateMachineArn: arn, pollIntervalMs: 100, maxPollIntervalMs: 200, traceContext: false })),
    });
    wfs.local = defineWorkflow({
      name: 'localpay',
      version: 1,
      input: inputSchema,
      events: {},
      secrets: ['payment.card'],
      machine: machineWith(activity(async ({ input }) => input)),
    });
    engine = await createEngine({
      servers: nats.url,
      namespace,
      workflows: Object.values(wfs),
      secrets: { keyRing: KEYS },
      extensions: [stepFunctions({ region: local.region, endpoint: local.endpoint, credentials: TEST_CREDENTIALS })],
    });
  });
  after(async () => {
    await engine?.close();
    await nc?.close();
    await local?.close();
    await nats?.dispose();
  });

  async function plainIn(marker: string): Promise<string[]> {
    const jsm = await jetstreamManager(nc);
    const found: string[] = [];
    for await (const s of jsm.streams.list()) {
      const name = s.config.name;
      if (!name.startsWith(namespace)) continue;
      const info = await jsm.streams.info(name);
      for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
        const m = await jsm.streams.getMessage(name, { seq }).catch(() => null);
        if (m && new TextDecoder().decode(m.data).includes(marker)) found.push(`${name}#${seq} ${m.subject}`);
      }
    }
    return found;
  }

  for (const kind of ['local', 'sfn'] as const) {
    it(`${kind}: the echoed card is not stored in the clear`, async () => {
      const card = `card-${RUN}-${kind}`;
      await engine.start(wfs[kind]!, { id: `o-${kind}`, input: { orderId: `o-${kind}`, payment: { card } } });
      const i = await engine.waitFor(wfs[kind]!, `o-${kind}`, (x) => x.status !== 'running', { timeoutMs: 20_000 });
      assert.equal(i.value, 'done');
      assert.equal((i.context as { ok: boolean }).ok, true, 'the machine saw the card echoed');
      const leaks = await plainIn(card);
      assert.deepEqual(leaks, [], `${kind}: card in the clear`);
    });
  }
});
