/**
 * Guarantees 2 (per-instance order) and 4 (crash recovery, no event lost or applied twice), under
 * fire: three engine processes share a few hundred instances with a short lease TTL while the
 * test sends events, SIGKILLs and restarts engines (some of them crash themselves right after a
 * state write, before its history), freezes one past its lease TTL (SIGSTOP/SIGCONT), and
 * restarts nats-server once on the same store. Every send
 * is retried with the same idempotency key until the stream accepts it, so each event is
 * accepted exactly once; the final state of every instance is then compared with a model built
 * from what was sent.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createClient, partitionOf, type Client } from '../../engine/index.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';
import { counter, expectedContext, type CounterContext } from './counter-workflow.js';
import { Raw, historyProblems, killAllEngines, mapLimit, sendUntilAccepted, sleep, spawnEngine, within, type EngineChild } from './harness.js';

const INSTANCES = 300;
const EVENTS_PER_INSTANCE = 20;
const ENGINES = 3;
const PARTITIONS = 16;
const LEASE_TTL_MS = 1_000;
/** Pause between two sends of one instance: the send phase lasts about 20 s. */
const PACE_MS: [number, number] = [400, 1_400];

describe('guarantees 2 and 4: order and crash recovery with engines killed and nats-server restarted', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let client: Client | undefined;
  let raw: Raw | undefined;
  const namespace = uniqueNamespace('chaos');
  const everyChild: EngineChild[] = [];

  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await killAllEngines();
    await within(client?.close() ?? Promise.resolve(), 10_000, 'client close').catch(() => {});
    await raw?.close();
    await nats?.dispose();
  });

  it('every instance ends exactly as the model of the sent events says', { timeout: 150_000 }, async (t) => {
    const t0 = Date.now();
    const log = (m: string): void => t.diagnostic(`${((Date.now() - t0) / 1000).toFixed(1)}s ${m}`);
    client = await createClient({ servers: nats.url, namespace, partitions: PARTITIONS, workflows: [counter] });
    raw = await Raw.open(nats.url, namespace);
    const c = client;

    const ids = Array.from({ length: INSTANCES }, (_, i) => `i-${i}`);
    await mapLimit(ids, 32, (id) => c.start(counter, { id, input: { label: id } }));

    // --- engines -------------------------------------------------------------------------
    let finishing = false;
    let crashesInWindow = 0;
    const crashedKeys: string[] = [];
    const slots: EngineChild[] = [];
    /** Killed on purpose by the chaos schedule, which starts their replacement itself. */
    const killedByChaos = new Set<EngineChild>();
    const spawn = (slot: number, crashAfterWrites?: number): EngineChild => {
      const child = spawnEngine({
        url: nats.url,
        namespace,
        partitions: PARTITIONS,
        leaseTtlMs: LEASE_TTL_MS,
        label: `engine-${slot}.${everyChild.length}`,
        ...(crashAfterWrites ? { crashAfterWrites } : {}),
      });
      everyChild.push(child);
      slots[slot] = child;
      if (crashAfterWrites) {
        // It dies by itself in the window after a state write; a plain engine replaces it.
        void child.crashed.then((crash) => {
          crashesInWindow++;
          crashedKeys.push(crash.key);
          log(`${child.label} crashed itself after writing ${crash.key} revision ${crash.revision}`);
        });
        void child.exited.then(() => {
          if (!finishing && slots[slot] === child && !killedByChaos.has(child)) spawn(slot);
        });
      }
      return child;
    };
    for (let s = 0; s < ENGINES; s++) spawn(s);
    await Promise.all(slots.map((e) => e.waitReady()));
    log(`${ENGINES} engines ready`);

    // --- senders -------------------------------------------------------------------------
    const ks = new Map<string, number[]>(ids.map((id) => [id, []]));
    const seqs = new Map<string, number[]>(ids.map((id) => [id, []]));
    let attempts = 0;
    let duplicates = 0;
    const pace = (): number => PACE_MS[0] + Math.floor(Math.random() * (PACE_MS[1] - PACE_MS[0]));
    const senders = Promise.all(
      ids.map(async (id, i) => {
        await sleep(Math.floor(Math.random() * PACE_MS[1]));
        for (let j = 1; j <= EVENTS_PER_INSTANCE; j++) {
          const k = 1_000 * i + j;
          // Sequential per instance: the next send starts once this one is accepted, so the
          // stream order of an instance's events is its send order.
          const r = await sendUntilAccepted(c, id, k, `${id}-${j}`, 60_000);
          attempts += r.attempts;
          if (r.duplicate) duplicates++;
          ks.get(id)!.push(k);
          seqs.get(id)!.push(r.seq);
          if (j < EVENTS_PER_INSTANCE) await sleep(pace());
        }
      }),
    );
    // A sender that gives up fails the test below; until then, no unhandled rejection.
    senders.catch(() => {});

    // --- chaos: a fixed, bounded schedule while the events flow --------------------------------
    const killAndReplace = async (slot: number, crashAfterWrites?: number, downMs = 0): Promise<void> => {
      const victim = slots[slot]!;
      killedByChaos.add(victim);
      const exit = await victim.kill();
      log(`SIGKILLed ${victim.label} (${exit.signal ?? exit.code})`);
      if (downMs > 0) await sleep(downMs);
      const next = spawn(slot, crashAfterWrites);
      await next.waitReady();
      log(`started ${next.label}${crashAfterWrites ? ` (crashes after write ${crashAfterWrites})` : ''}`);
    };
    const schedule: Array<[atMs: number, what: () => Promise<void>]> = [
      [2_000, () => killAndReplace(0)],
      [4_500, () => killAndReplace(1, 150)],
      [
        7_000,
        async () => {
          await Promise.all([killAndReplace(0, undefined, 1_500), killAndReplace(2, undefined, 1_500)]);
        },
      ],
      [
        10_500,
        async () => {
          log('restarting nats-server');
          await nats.restart();
          log('nats-server is back');
        },
      ],
      [13_500, () => killAndReplace(2, 200)],
      [16_000, () => killAndReplace(0)],
      [
        18_000,
        async () => {
          // A stalled engine: its leases expire and are taken over while it is frozen; when it
          // thaws it still has events in flight, until its renewal finds the lease lost.
          const frozen = slots[1]!;
          log(`freezing ${frozen.label} for ${3 * LEASE_TTL_MS} ms`);
          await frozen.freeze(3 * LEASE_TTL_MS);
          log(`thawed ${frozen.label}`);
        },
      ],
    ];
    const chaosStart = Date.now();
    let kills = 0;
    for (const [atMs, what] of schedule) {
      await sleep(Math.max(0, chaosStart + atMs - Date.now()));
      await what();
      kills++;
    }
    await within(senders, 90_000, 'senders');
    finishing = true;
    // From here on plain engines only: replace whatever a crash hook killed or may still kill.
    for (let s = 0; s < ENGINES; s++) {
      const child = slots[s]!;
      if (child.options.crashAfterWrites && child.running) await child.kill();
      if (!child.running) spawn(s);
    }
    await Promise.all(slots.map((e) => e.waitReady()));
    const sent = EVENTS_PER_INSTANCE * INSTANCES;
    assert.ok(crashesInWindow >= 1, 'at least one engine crashed itself between a state write and its history');
    log(
      `all ${sent} events accepted (${attempts - sent} retried attempts, ${duplicates} duplicate acks); ${kills} chaos steps, ${crashesInWindow} crashes in the write window`,
    );

    try {
      // --- each event is in the stream exactly once ------------------------------------------
      // A deduplicated retry takes no sequence: had any retry been stored as a second copy, the
      // partition streams would hold more than the starts and the `sent` events.
      const byPartition = new Map<number, number[]>();
      for (const [id, list] of seqs) {
        const p = partitionOf('counter', id, PARTITIONS);
        byPartition.set(p, [...(byPartition.get(p) ?? []), ...list]);
      }
      for (const [p, list] of byPartition) assert.equal(new Set(list).size, list.length, `partition ${p}: each accepted sequence once`);
      assert.equal((await raw!.eventsState()).lastSeq, sent + ids.length, 'the events streams hold exactly the starts and the accepted events');

      // --- wait for every instance to reach its expected revision ---------------------------
      const want = 1 + EVENTS_PER_INSTANCE;
      const deadline = Date.now() + 60_000;
      let behind = ids;
      for (;;) {
        const revs = await mapLimit(behind, 64, async (id) => (await c.get(counter, id))?.revision ?? 0);
        const still = behind.filter((_, i) => revs[i]! < want);
        const over = behind.filter((_, i) => revs[i]! > want);
        assert.deepEqual(over, [], 'instances past their expected revision: an event was applied twice');
        behind = still;
        if (behind.length === 0) break;
        if (Date.now() > deadline) {
          const detail = await mapLimit(
            behind.slice(0, 20),
            8,
            async (id) => `${id} (partition ${partitionOf('counter', id, PARTITIONS)}) at revision ${(await c.get(counter, id))?.revision}`,
          );
          assert.fail(`${behind.length} instances did not reach revision ${want} within 60 s after the last send: ${detail.join(', ')}`);
        }
        await sleep(250);
      }
      log('every instance reached its expected revision');
      // Quiescence: every partition's checkpoint covers its last accepted event, so nothing is
      // left in flight that could still change an instance after the comparison below.
      const lastOf = new Map<number, number>();
      for (const id of ids) {
        const p = partitionOf('counter', id, PARTITIONS);
        lastOf.set(p, Math.max(lastOf.get(p) ?? 0, ...seqs.get(id)!));
      }
      await eventually(
        async () => {
          for (const [p, last] of lastOf) {
            const lease = await raw!.lease(p);
            assert.ok(lease && lease.checkpoint >= last, `partition ${p}: checkpoint ${lease?.checkpoint} below its last event ${last}`);
          }
        },
        20_000,
        200,
      );

      // --- compare with the model -----------------------------------------------------------
      const problems: string[] = [];
      await mapLimit(ids, 16, async (id) => {
        const inst = await c.get(counter, id);
        const expected = expectedContext(id, ks.get(id)!);
        const context = inst?.context as CounterContext | undefined;
        if (JSON.stringify(context) !== JSON.stringify(expected))
          problems.push(`${id}: context ${JSON.stringify(context)} but the model says ${JSON.stringify(expected)}`);
        if (inst?.status !== 'running') problems.push(`${id}: status ${inst?.status}`);
        const history = await c.history(counter, id);
        for (const p of historyProblems(history, ks.get(id)!, seqs.get(id)!)) problems.push(`${id}: ${p}`);
        // Beneath the read-side dedupe: the stream itself holds every revision (messages may
        // overlap: a write publishes the entries the stream has not confirmed yet).
        const stored = [...new Set((await raw!.historyMessages('counter', id)).flat().map((e) => e.revision))].sort((a, b) => a - b);
        if (JSON.stringify(stored) !== JSON.stringify(Array.from({ length: 1 + EVENTS_PER_INSTANCE }, (_, i) => i + 1))) {
          problems.push(`${id}: stored history revisions ${JSON.stringify(stored)}`);
        }
      });
      assert.deepEqual(problems.slice(0, 20), [], `${problems.length} differences from the model (first 20 shown)`);
      log('every instance matches the model: context, order, exactly once, complete history');

      // Verify (replay from history) a sample, with every instance a crash hook cut off.
      const crashed = crashedKeys.map((k) => k.slice('counter.'.length));
      const sample = [...new Set([...crashed, ...ids.filter((_, i) => i % 10 === 0)])];
      const reports = await mapLimit(sample, 8, (id) => c.verify(counter, id));
      const failed = reports.filter((r) => !r.ok).map((r) => `${r.id}: ${r.problems.join('; ')}`);
      assert.deepEqual(failed, [], 'verify');
      assert.ok(reports.every((r) => r.replayed === EVENTS_PER_INSTANCE));
      log(`verify ok for ${sample.length} instances`);

      // --- the surviving engines close cleanly ------------------------------------------------
      const exits = await Promise.all(slots.map((e) => e.stop()));
      assert.deepEqual(
        exits,
        slots.map(() => ({ code: 0, signal: null })),
        'engines close cleanly on SIGTERM',
      );
    } catch (e) {
      for (const child of everyChild) if (child.stderr.trim()) console.error(`--- ${child.label} (pid ${child.pid}) stderr tail ---\n${child.stderr}`);
      throw e;
    }
    const lines = everyChild.flatMap((ch) => ch.stderrLines);
    const lost = lines.filter((l) => /lease (lost|expired)/.test(l)).length;
    const errors = lines.filter((l) => l.startsWith('jetstate error')).length;
    log(`engines reported ${lost} lost/expired leases, ${errors} errors, ${lines.length} stderr lines in all`);
    log('done');
  });
});
