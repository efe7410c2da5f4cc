/**
 * A 3-node cluster (replicas 3) that loses a node loses, doubles and reorders no accepted event;
 * how long partitions pause while the node is down is measured.
 *
 * Three nats-servers on loopback, three engine processes SIGKILLed and restarted every 2 s, 200
 * counter instances each sent 20 ordered events (each after the previous was accepted). Twice,
 * the server leading the events stream is SIGKILLed while events flow and restarted on its store:
 * first after 7 s, during a fast burst of sends (it rejoins before the cluster has recovered from
 * its loss: accepted events were lost so), then after 21 s. Every instance must have seen exactly [0..19] in order (no event
 * lost, doubled or reordered) and `verify` must be ok for a sample. The stall watchdog: during
 * the long loss, per partition, the longest pause of progress while its events waited (from a
 * watch of the records) is reported, and checked against CLUSTER_STALL_BOUND_MS when set (see below).
 *
 * One repetition here; `npm run soak` runs the same scenario many times. The server binary is
 * $JETSTATE_NATS_SERVER or the project's copy (2.10).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeReport, runClusterScenario } from './cluster-scenario.js';

/**
 * How long a partition may wait for progress while the node is down, checked only when
 * CLUSTER_STALL_BOUND_MS is set (`npm run soak` checks it over many runs, SOAK_STALL_BOUND_MS)...
 *
 * Measured on nats-server 2.10.27 (bench/leader-loss-probe.ts, plain NATS): after the leader of
 * R3 streams is SIGKILLed, publishes to them fail for 4-8 s (no stream leader), consumer creates
 * time out for about 7 s (no meta leader), and afterwards about one single-server consumer in four
 * is placed on the dead server and never answered until it returns. Readers of replicated streams
 * now make replicated consumers, which elect a leader among the servers that are up: in this
 * scenario (engines also replaced every 2 s) the longest pause during the 21 s loss was 12-15 s in
 * four of five runs and 20.3 s in one (before: 20.8-21.5 s, every run: the whole outage). So the
 * pause is reported in every run and asserted on request, not in the suite.
 */
const STALL_BOUND_MS = Number(process.env['CLUSTER_STALL_BOUND_MS'] ?? 0);
/** ...when the node is down for longer than this. */
const STALL_CHECKED_WHEN_DOWN_MS = 20_000;

describe('a 3-node cluster losing the events leader', () => {
  it('loses, doubles and reorders no event while a node is down', { timeout: 280_000 }, async () => {
    const report = await runClusterScenario({ log: (line) => console.log(`cluster-loss: ${line}`) });
    console.log(`cluster-loss: ${describeReport(report)}`);
    const summary = report.problems.slice(0, 20).map((p) => `${p.id} (partition ${p.partition}): log ${JSON.stringify(p.log)}`);
    assert.deepEqual(
      { lostFromMiddle: report.lostFromMiddle, lostAtTheEnd: report.lost - report.lostFromMiddle, doubled: report.doubled, reordered: report.reordered },
      { lostFromMiddle: 0, lostAtTheEnd: 0, doubled: 0, reordered: 0 },
      `instances whose events were not applied exactly once and in order (lostAtTheEnd: not applied after the scenario's settle time, lost or stuck):\n${summary.join('\n')}`,
    );
    assert.deepEqual(report.verifyFailures, [], 'verify of a sample');
    const long = report.losses.filter((l) => l.downMs > STALL_CHECKED_WHEN_DOWN_MS);
    assert.ok(
      long.length > 0,
      `precondition: a node was down more than ${STALL_CHECKED_WHEN_DOWN_MS} ms (${report.losses.map((l) => l.downMs).join(', ')} ms)`,
    );
    const worst = Math.max(0, ...long.flatMap((l) => l.longestPauseMs));
    console.log(`cluster-loss: longest pause of a partition while a node was down more than ${STALL_CHECKED_WHEN_DOWN_MS} ms: ${(worst / 1_000).toFixed(1)} s`);
    if (STALL_BOUND_MS > 0) {
      const stalled = long.flatMap((l) => l.longestPauseMs.map((ms, p) => ({ server: l.killedServer, partition: p, ms })).filter((x) => x.ms > STALL_BOUND_MS));
      assert.deepEqual(
        stalled,
        [],
        `partitions idle for more than ${STALL_BOUND_MS} ms while their events waited and the node was down more than ${STALL_CHECKED_WHEN_DOWN_MS} ms`,
      );
    }
  });
});
