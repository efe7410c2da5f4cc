/**
 * An engine started while its 3-node cluster has no JetStream quorum (two nodes down, so no meta
 * leader) waits for the cluster instead of failing: it opens once the nodes are back, logs why it
 * waited, and applies an event sent meanwhile. An engine restarted by its supervisor during a
 * leader election used to exit at once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createClient, createEngine, type Engine } from '../../engine/index.js';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { eventually, memoryLogger, startCluster, uniqueNamespace, type NatsServer } from '../helpers.js';
import { toggle } from '../toggle-workflow.js';
import { within } from './harness.js';

describe('an engine started without a JetStream quorum', () => {
  let servers: NatsServer[];
  const namespace = uniqueNamespace('election');

  before(async () => {
    servers = await startCluster(3);
  });

  after(async () => {
    await Promise.all(servers.map((s) => s.stop().catch(() => {})));
  });

  it('waits for the cluster, then opens and applies', { timeout: 240_000 }, async () => {
    const urls = servers.map((s) => s.url);
    const options = { servers: urls, namespace, workflows: [toggle], replicas: 3 };
    // The namespace exists, with an instance in it.
    const first = await createEngine(options);
    const client = await createClient(options);
    const logger = memoryLogger();
    let engine: Engine | undefined;
    let opening: Promise<Engine> | undefined;
    try {
      await client.start(toggle, { id: 't1', input: {} });
      await first.close();

      await servers[1]!.kill();
      await servers[2]!.kill();
      // The node left answers JetStream requests until it sees it has lost its peers.
      await untilNoMetaLeader(servers[0]!.url);
      // Bounded, so that a failure of this test cannot leave an engine trying for ever.
      opening = createEngine({ ...options, logger, openTimeoutMs: 150_000 }).then((e) => (engine = e));
      // The engine keeps trying while the cluster cannot answer JetStream requests.
      await eventually(
        () =>
          assert.ok(
            logger.lines.some((l) => /waiting for JetStream/.test(l)),
            logger.lines.join('\n'),
          ),
        60_000,
        100,
      );
      assert.equal(engine, undefined);
      await Promise.all([servers[1]!.restart(), servers[2]!.restart()]);
      await within(opening, 150_000, 'the engine opening').catch((e: Error) => {
        throw new Error(`${e.message}; the engine's log:\n${logger.lines.join('\n')}`, { cause: e });
      });
      // The workflow's events stream may still be electing its leader: a sender retries with its key.
      await eventually(() => client.send(toggle, 't1', { type: 'FLIP' }, { idempotencyKey: 'flip-1' }), 60_000, 250);
      await eventually(async () => assert.equal((await client.get(toggle, 't1'))?.value, 'on'), 60_000);
    } finally {
      await opening?.catch(() => {});
      await engine?.close();
      await client.close();
    }
  });
});

/** Resolves once the server at `url` no longer answers JetStream account requests (no meta leader). */
async function untilNoMetaLeader(url: string): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    await eventually(
      async () => {
        const jsm = await jetstreamManager(nc, { timeout: 1_000, checkAPI: false });
        const answered = await jsm.getAccountInfo().then(
          () => true,
          () => false,
        );
        assert.equal(answered, false, 'the node left still has a JetStream meta leader');
      },
      60_000,
      200,
    );
  } finally {
    await nc.close();
  }
}
