/**
 * A 3-node cluster (replicas 3) that loses a node loses no accepted event and stalls no partition
 * for as long as the node is down.
 *
 * Three nats-servers on loopback, three engine processes SIGKILLed and restarted every 2 s, 200
 * counter instances each sent 20 ordered events (each after the previous was accepted). Twice,
 * the server leading the events stream is SIGKILLed while events flow and restarted on its store:
 * first after 7 s, during a fast burst of sends (it rejoins before the cluster has recovered from
 * its loss: accepted events were lost so), then after 21 s. Every instance must have seen exactly [0..19] in order (no event
 * lost, doubled or reordered) and `verify` must be ok for a sample. The stall watchdog: during
 * the long loss, per partition, the longest pause of progress while its events waited (from a
 * watch of the records) must stay under 12 s. That bound is far above a lease takeover (1 s), for
 * a shared machine, and below the node's downtime, which is what a partition whose consumer lived
 * on the dead node waits today.
 *
 * One repetition here; `npm run soak` runs the same scenario many times. The server binary is
 * $JETSTATE_NATS_SERVER or the project's copy (2.10).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeReport, runClusterScenario } from './cluster-scenario.js';

/**
 * No partition may wait longer than this for progress while the node is down...
 *
 * Measured on nats-server 2.10.27 (bench/leader-loss-probe.ts, plain NATS): after the leader of
 * R3 streams is SIGKILLed, publishes to them fail for 4-8 s (no stream leader), consumer creates
 * time out for about 7 s (no meta leader), and afterwards about one create in four is placed on
 * the dead server and never answered until it returns. With engines replaced every 2 s on top,
 * the scenario's longest pause was 14-17.5 s in three of four runs and 21.3 s in one (down from
 * 21-21.5 s when a consumer create waited for the dead server), so this bound still fails.
 */
const STALL_BOUND_MS = 12_000;
/** ...when the node is down for longer than this. */
const STALL_CHECKED_WHEN_DOWN_MS = 20_000;

describe('a 3-node cluster losing the events leader', () => {
  it('loses, doubles and reorders no event, and no partition stalls while the node is down', { timeout: 180_000 }, async () => {
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
    assert.ok(long.length > 0, `precondition: a node was down more than ${STALL_CHECKED_WHEN_DOWN_MS} ms (${report.losses.map((l) => l.downMs).join(', ')} ms)`);
    const stalled = long.flatMap((l) => l.longestPauseMs.map((ms, p) => ({ server: l.killedServer, partition: p, ms })).filter((x) => x.ms > STALL_BOUND_MS));
    assert.deepEqual(stalled, [], `partitions idle for more than ${STALL_BOUND_MS} ms while their events waited and the node was down more than ${STALL_CHECKED_WHEN_DOWN_MS} ms`);
  });
});
