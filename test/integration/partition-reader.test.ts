// The partition reader against real nats-servers: its start does not wait for a consumer it cannot
// make yet (a lease round waits for it, and used to take over nothing else meanwhile), and a move
// to a new stream leader makes the successor before it drops the consumer in use, delivering every
// event once and in order.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { PartitionReader } from '../../engine/worker/partition-reader.js';
import type { Runtime } from '../../engine/store/runtime.js';
import { eventually, memoryLogger, startCluster, startNats, type NatsServer } from '../helpers.js';

/** What the reader uses of a runtime. */
function readerRuntime(nc: NatsConnection, jsm: JetStreamManager, logger = memoryLogger()): Runtime {
  return { nc, jsm, logger, inboxPrefix: '_INBOX', jsApiPrefix: '$JS.API', jsDomain: undefined } as unknown as Runtime;
}

function reader(rt: Runtime, stream: string, seen: number[]): PartitionReader {
  return new PartitionReader(rt, { stream, label: `stream ${stream}`, batch: 16, consumerPrefix: 'test', onEvent: (e) => void seen.push(e.seq) });
}

describe('partition reader', () => {
  describe('on one server', () => {
    let nats: Awaited<ReturnType<typeof startNats>>;
    let nc: NatsConnection;
    before(async () => {
      nats = await startNats();
      nc = await connect({ servers: nats.url });
    });
    after(async () => {
      await nc?.close();
      await nats?.dispose();
    });

    it('starts without waiting for a consumer it cannot make yet, and reads once it can', { timeout: 60_000 }, async () => {
      const jsm = await jetstreamManager(nc);
      const seen: number[] = [];
      const r = reader(readerRuntime(nc, jsm), 'late', seen);
      // No stream yet: every consumer create fails. The start still returns (it used to wait).
      await r.start(1);
      await jsm.streams.add({ name: 'late', subjects: ['late.>'] });
      for (let i = 0; i < 5; i++) await nc.request('late.x', new TextEncoder().encode(String(i)));
      await eventually(() => assert.deepEqual(seen, [1, 2, 3, 4, 5]), 20_000, 100);
      await r.stop();
    });
  });

  describe('on a three-server cluster', () => {
    let servers: NatsServer[];
    let nc: NatsConnection;
    before(async () => {
      servers = await startCluster(3);
      nc = await connect({ servers: servers.map((s) => s.url) });
    });
    after(async () => {
      await nc?.close();
      await Promise.all((servers ?? []).map((s) => s.stop().catch(() => {})));
    });

    it('moves to a new stream leader without losing, doubling or reordering events', { timeout: 240_000 }, async () => {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: 'moving', subjects: ['moving.>'], num_replicas: 3 });
      const logger = memoryLogger();
      const seen: number[] = [];
      const r = reader(readerRuntime(nc, jsm, logger), 'moving', seen);
      await r.start(1);
      let sent = 0;
      let sending = true;
      const publisher = (async () => {
        while (sending) {
          // A publish that timed out may still be stored: the check below is against the stream.
          const id = `m${sent + 1}`;
          const ok = await jsm.streams
            .info('moving')
            .then(() => nc.request('moving.x', new TextEncoder().encode(id), { timeout: 2_000 }))
            .then(
              () => true,
              () => false,
            );
          if (ok) sent++;
          await new Promise((res) => setTimeout(res, 20));
        }
      })();
      // Moves the stream leader away from the reader's consumer a few times, while events keep
      // coming; the reader follows on its placement checks (as a lease round calls them).
      const host = (): string | undefined => (r as unknown as { hostedOn?: string }).hostedOn;
      for (let round = 0; round < 3; round++) {
        await eventually(() => assert.ok(sent > 10 * (round + 1), `${sent} events sent`), 60_000, 50);
        const restarts = r.restarts;
        const before = (await jsm.streams.info('moving')).cluster?.leader;
        // Stepped down until a new leader is elsewhere than the consumer (an election picks either other server).
        await eventually(
          async () => {
            const now = (await jsm.streams.info('moving')).cluster?.leader;
            if (now === before || now === host()) await nc.request('$JS.API.STREAM.LEADER.STEPDOWN.moving', undefined, { timeout: 5_000 }).catch(() => {});
            assert.ok(now && now !== before && now !== host(), `stream leader ${now} (was ${before}), consumer on ${host()}`);
          },
          60_000,
          1_000,
        );
        await eventually(
          async () => {
            await r.checkPlacement();
            assert.ok(r.restarts > restarts, 'the reader did not move');
          },
          30_000,
          200,
        );
      }
      sending = false;
      await publisher;
      const last = (await jsm.streams.info('moving')).state.last_seq;
      await eventually(() => assert.equal(seen.length, last), 30_000, 100);
      assert.deepEqual(
        seen,
        Array.from({ length: last }, (_, i) => i + 1),
      );
      await r.stop();
    });
  });
});
