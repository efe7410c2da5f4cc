/**
 * Guarantee 1: a crash right after an instance's state write and before its history publish
 * (the engine's `testHooks.afterStateWrite` window) loses nothing and applies nothing twice.
 * The next owner of the partition resumes from the lease checkpoint, skips the events the
 * record shows as applied (redelivery), republishes the history of the cut-off write, and goes
 * on. Each engine here is a child process that SIGKILLs itself in that exact window.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { createClient, partitionOf, type Client } from '../../engine/index.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';
import { counter, expectedContext, type CounterContext } from './counter-workflow.js';
import { Raw, historyProblems, killAllEngines, mapLimit, sendUntilAccepted, spawnEngine, within, type EngineChild } from './harness.js';

const PARTITIONS = 4;

describe('guarantee 1: crash between the state write and the history publish', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  const opened: Array<{ close(): Promise<void> }> = [];

  before(async () => {
    nats = await startNats();
  });
  afterEach(async () => {
    await killAllEngines();
    await Promise.all(opened.splice(0).map((c) => within(c.close(), 10_000, 'close').catch(() => {})));
  });
  after(async () => {
    await killAllEngines();
    await nats?.dispose();
  });

  /** A fresh namespace with a client and a raw connection, closed after the test. */
  async function setup(label: string): Promise<{ namespace: string; client: Client; raw: Raw }> {
    const namespace = uniqueNamespace(label);
    const client = await createClient({ servers: nats.url, namespace, partitions: PARTITIONS, workflows: [counter] });
    const raw = await Raw.open(nats.url, namespace);
    opened.push(client, raw);
    return { namespace, client, raw };
  }

  const engine = (namespace: string, label: string, extra: { crashAfterWrites?: number; leaseTtlMs?: number } = {}): EngineChild =>
    spawnEngine({
      url: nats.url,
      namespace,
      partitions: PARTITIONS,
      leaseTtlMs: extra.leaseTtlMs ?? 1_000,
      label,
      ...(extra.crashAfterWrites ? { crashAfterWrites: extra.crashAfterWrites } : {}),
    });

  async function revisionOf(client: Client, id: string): Promise<number> {
    return (await client.get(counter, id))?.revision ?? 0;
  }

  async function waitRevision(client: Client, id: string, revision: number, ms = 20_000): Promise<void> {
    await eventually(
      async () => {
        const have = await revisionOf(client, id);
        assert.equal(have, revision, `instance '${id}' at revision ${have}, waiting for ${revision}`);
      },
      ms,
      50,
    );
  }

  /** The highest revision any stored history message of the instance carries. */
  async function topHistoryRevision(raw: Raw, id: string): Promise<number> {
    return (await raw.historyMessages('counter', id)).flat().reduce((m, e) => Math.max(m, e.revision), 0);
  }

  /** The final check of one instance against the model, through the public API and raw. */
  async function checkInstance(client: Client, raw: Raw, id: string, ks: number[], seqs: number[]): Promise<void> {
    const inst = await client.get(counter, id);
    assert.ok(inst, `instance '${id}' exists`);
    assert.deepEqual(inst.context as CounterContext, expectedContext(id, ks), `instance '${id}': every event applied exactly once, in send order`);
    assert.equal(inst.revision, 1 + ks.length);
    assert.equal(inst.status, 'running');
    const history = await client.history(counter, id);
    assert.deepEqual(historyProblems(history, ks, seqs), [], `instance '${id}': history complete and in order`);
    // Beneath the read-side dedupe: the stream itself holds every revision (messages may overlap:
    // a write publishes the entries the stream has not confirmed yet; a republish of the same
    // entries reuses their message id).
    // History goes out in batches (at most about 100 ms after a write): wait for the last one.
    await eventually(
      async () => {
        const stored = [...new Set((await raw.historyMessages('counter', id)).flat().map((e) => e.revision))].sort((a, b) => a - b);
        assert.deepEqual(
          stored,
          Array.from({ length: ks.length + 1 }, (_, i) => i + 1),
          `instance '${id}': stored history revisions`,
        );
      },
      10_000,
      100,
    );
    const report = await client.verify(counter, id);
    assert.equal(report.ok, true, report.problems.join('\n'));
    assert.equal(report.replayed, ks.length);
  }

  it('the cut-off write is kept once, its history republished, and finished events that are redelivered are skipped', { timeout: 60_000 }, async () => {
    const { namespace, client, raw } = await setup('once');
    const id = 'a';
    await client.start(counter, { id, input: { label: id } });
    // A long lease TTL for the crashing engine: it renews (and so advances the stored checkpoint)
    // only every 10 s, so everything it applied before its crash is redelivered to the next owner.
    // (Its leases are then rewritten with a TTL of 1 s, so the next owner need not wait 30 s.)
    const doomed = engine(namespace, 'doomed', { crashAfterWrites: 2, leaseTtlMs: 30_000 });
    await doomed.waitReady();
    const ks: number[] = [];
    const seqs: number[] = [];
    for (let k = 1; k <= 5; k++) {
      ks.push(k);
      seqs.push((await sendUntilAccepted(client, id, k, `a-${k}`)).seq);
      // The first event in a write of its own, so that the crash comes at a later write.
      if (k === 1) await waitRevision(client, id, 2);
    }
    const crash = await within(doomed.crashed, 15_000, 'crash in the window');
    assert.deepEqual(await within(doomed.exited, 10_000, 'doomed exit'), { code: null, signal: 'SIGKILL' });
    assert.equal(crash.key, `counter.${id}`);

    // Preconditions: the engine died exactly between the state write and its history publish...
    assert.ok(crash.revision >= 3, `the second write is at revision ${crash.revision}`);
    assert.equal(await revisionOf(client, id), crash.revision, 'the state write of the crashed step is durable');
    assert.ok((await topHistoryRevision(raw, id)) < crash.revision, 'the history of the crashed step was not published');
    // ...and the next owner must redeliver events that were completely finished (the first write).
    const lease = await raw.lease(partitionOf('counter', id, PARTITIONS));
    assert.ok(lease && lease.checkpoint < seqs[0]!, `lease checkpoint ${lease?.checkpoint} is below the first event ${seqs[0]}: all events get redelivered`);

    // More events arrive while no engine runs.
    for (let k = 6; k <= 8; k++) {
      ks.push(k);
      seqs.push((await sendUntilAccepted(client, id, k, `a-${k}`)).seq);
    }
    await raw.shortenLeases(1_000);
    const next = engine(namespace, 'next');
    await next.waitReady();
    await waitRevision(client, id, 1 + ks.length);
    await checkInstance(client, raw, id, ks, seqs);
    assert.deepEqual(await next.stop(), { code: 0, signal: null }, `clean close:\n${next.stderr}`);
  });

  it('repeated crashes in the window: each next engine repairs the previous cut-off write, the last one finishes', { timeout: 60_000 }, async () => {
    const { namespace, client, raw } = await setup('repeat');
    const id = 'b';
    await client.start(counter, { id, input: { label: id } });
    const ks: number[] = [];
    const seqs: number[] = [];
    for (let round = 1; round <= 3; round++) {
      const k = round * 10 + round;
      ks.push(k);
      seqs.push((await sendUntilAccepted(client, id, k, `b-${round}`)).seq);
      const doomed = engine(namespace, `doomed-${round}`, { crashAfterWrites: 1 });
      // The previous (dead) owner still holds the lease: this one takes over after the TTL.
      const crash = await within(doomed.crashed, 20_000, `crash of round ${round}`);
      await within(doomed.exited, 10_000, 'doomed exit');
      assert.equal(crash.revision, 1 + round, `round ${round} wrote revision ${1 + round}`);
      assert.equal(await revisionOf(client, id), 1 + round);
      // Nothing of the cut-off writes is lost: what the stream has not got yet, the record's journal
      // holds, and history() reads both.
      const revisions = (await client.history(counter, id)).filter((e) => e.kind !== 'rejected').map((e) => e.revision);
      assert.deepEqual(
        revisions,
        Array.from({ length: 1 + round }, (_, i) => i + 1),
        `round ${round}: history holds every revision up to ${1 + round}`,
      );
      assert.ok((await topHistoryRevision(raw, id)) <= 1 + round, 'the stream holds nothing beyond the last write');
    }
    const last = engine(namespace, 'last');
    await last.waitReady();
    await eventually(async () => assert.equal(await topHistoryRevision(raw, id), 1 + ks.length), 20_000, 100);
    await checkInstance(client, raw, id, ks, seqs);
    assert.deepEqual(await last.stop(), { code: 0, signal: null }, `clean close:\n${last.stderr}`);
  });

  it('a crash while many instances are in flight: every instance ends exactly as the model says', { timeout: 60_000 }, async () => {
    const { namespace, client, raw } = await setup('many');
    const ids = Array.from({ length: 30 }, (_, i) => `m-${i}`);
    await mapLimit(ids, 16, (id) => client.start(counter, { id, input: { label: id } }));
    const ks = new Map<string, number[]>(ids.map((id) => [id, []]));
    const seqs = new Map<string, number[]>(ids.map((id) => [id, []]));
    const sendRound = async (from: number, to: number): Promise<void> => {
      await mapLimit(ids, 30, async (id, i) => {
        for (let j = from; j <= to; j++) {
          const k = 100 * i + j;
          const r = await sendUntilAccepted(client, id, k, `${id}-${j}`);
          ks.get(id)!.push(k);
          seqs.get(id)!.push(r.seq);
        }
      });
    };
    await sendRound(1, 6);
    // 180 events wait; the engine dies at its 25th write with other instances mid-step.
    const doomed = engine(namespace, 'doomed', { crashAfterWrites: 25, leaseTtlMs: 30_000 });
    const crash = await within(doomed.crashed, 20_000, 'crash in the window');
    await within(doomed.exited, 10_000, 'doomed exit');
    assert.equal(await revisionOf(client, crash.key.slice('counter.'.length)), crash.revision);
    await sendRound(7, 8);
    await raw.shortenLeases(1_000);
    const next = engine(namespace, 'next');
    await next.waitReady();
    await eventually(
      async () => {
        const revs = await mapLimit(ids, 30, (id) => revisionOf(client, id));
        const behind = ids.filter((_, i) => revs[i] !== 9);
        assert.deepEqual(behind, [], 'instances not yet at revision 9');
      },
      30_000,
      100,
    );
    await mapLimit(ids, 8, (id) => checkInstance(client, raw, id, ks.get(id)!, seqs.get(id)!));
    assert.deepEqual(await next.stop(), { code: 0, signal: null }, `clean close:\n${next.stderr}`);
  });

  it('a send retried with the same idempotency key after a server restart is not applied twice', { timeout: 60_000 }, async () => {
    // Regression: applied events used to be purged from the events stream at the next lease
    // renewal. JetStream keeps its Nats-Msg-Id dedupe table in memory and, after a restart,
    // rebuilds it from the messages still stored, so a send retried with the same key after a
    // server restart was stored again and applied twice. The engine now purges only events whose
    // keys have left the duplicate window.
    const own = await startNats();
    let client: Client | undefined;
    let raw: Raw | undefined;
    try {
      const namespace = uniqueNamespace('dedupe');
      const c = await createClient({ servers: own.url, namespace, partitions: PARTITIONS, workflows: [counter] });
      client = c;
      raw = await Raw.open(own.url, namespace);
      const id = 'd';
      await c.start(counter, { id, input: { label: id } });
      const e = spawnEngine({ url: own.url, namespace, partitions: PARTITIONS, leaseTtlMs: 1_000, label: 'engine' });
      await e.waitReady();
      const first = await sendUntilAccepted(c, id, 1, 'd-1');
      await waitRevision(c, id, 2);
      // Same key again before the restart: deduplicated by the stream, as promised.
      const again = await sendUntilAccepted(c, id, 1, 'd-1');
      assert.deepEqual([again.seq, again.duplicate], [first.seq, true]);
      // Several lease renewals (each may purge) pass; the applied event stays while its key is in the window.
      await new Promise((r) => setTimeout(r, 1_500));
      assert.equal(await raw.eventsStored(), 2, 'the start and the applied event stay while their keys are in the window');
      await own.restart();
      // The retry of a send whose ack was lost, within the duplicate window.
      const retry = await sendUntilAccepted(c, id, 1, 'd-1', 30_000);
      await sendUntilAccepted(c, id, 2, 'd-2', 30_000);
      await eventually(
        async () => {
          const inst = await c.get(counter, id);
          assert.ok(inst && (inst.context as CounterContext).log.includes(2), 'the event after the retry is applied');
        },
        20_000,
        100,
      );
      const inst = await c.get(counter, id);
      assert.deepEqual(
        { duplicate: retry.duplicate, seq: retry.seq, log: (inst!.context as CounterContext).log },
        { duplicate: true, seq: first.seq, log: [1, 2] },
        'the retry is recognised as a duplicate and the retried event is applied once',
      );
      await e.stop();
    } finally {
      await killAllEngines();
      // Closed while its server still runs: a connection left to a dead server reconnects forever.
      await within(client?.close() ?? Promise.resolve(), 10_000, 'client close').catch(() => {});
      await raw?.close();
      await own.dispose();
    }
  });
});
