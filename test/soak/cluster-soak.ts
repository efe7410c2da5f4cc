/**
 * Soak of the cluster-loss scenario (see test/recovery/cluster-scenario.ts): runs it
 * SOAK_ROUNDS times (default 10) and prints, per repetition, how many instances lost, doubled or
 * reordered events and the longest pause of progress per partition. Exits 1 if any repetition
 * lost, doubled or reordered an event or failed verify, 2 if only the stall watchdog was exceeded
 * (a partition idle more than SOAK_STALL_BOUND_MS, default 18000: below the 21 s outage, while the node was down more
 * than 20 s), 0 otherwise. Not part of `npm test`.
 *
 *   npm run soak
 *   SOAK_ROUNDS=3 JETSTATE_NATS_SERVER=/path/to/nats-server npm run soak
 *
 * Other knobs: SOAK_INSTANCES (200), SOAK_EVENTS (20), SOAK_ENGINE_KILL_EVERY_MS (2000: one engine
 * SIGKILLed and replaced this often), and SOAK_LOSSES, the node losses as JSON
 * (default: DEFAULT_LOSSES of cluster-scenario.ts), e.g.
 *   SOAK_LOSSES='[{"burstMs":6000,"killAfterMs":2000,"downMs":10000}]'
 */
import { describeReport, runClusterScenario, type ClusterScenarioReport, type NodeLoss } from '../recovery/cluster-scenario.js';
import { findNatsServer } from '../../adapters/nats-server/launcher.js';
import { spawnSync } from 'node:child_process';

const env = process.env;
const rounds = Number(env['SOAK_ROUNDS'] ?? 10);
const stallBoundMs = Number(env['SOAK_STALL_BOUND_MS'] ?? 18_000);
const num = (name: string): number | undefined => (env[name] ? Number(env[name]) : undefined);
const binary = findNatsServer();
const version = spawnSync(binary, ['--version'], { encoding: 'utf8' }).stdout.trim();

console.log(`cluster soak: ${rounds} repetitions with ${version} (${binary})`);
const reports: ClusterScenarioReport[] = [];
let failedRuns = 0;
for (let r = 1; r <= rounds; r++) {
  try {
    const report = await runClusterScenario({
      binary,
      ...(num('SOAK_INSTANCES') ? { instances: num('SOAK_INSTANCES')! } : {}),
      ...(num('SOAK_EVENTS') ? { eventsPerInstance: num('SOAK_EVENTS')! } : {}),
      ...(num('SOAK_ENGINE_KILL_EVERY_MS') ? { engineKillEveryMs: num('SOAK_ENGINE_KILL_EVERY_MS')! } : {}),
      ...(env['SOAK_LOSSES'] ? { losses: JSON.parse(env['SOAK_LOSSES']) as NodeLoss[] } : {}),
    });
    reports.push(report);
    console.log(`#${r}: ${describeReport(report)}`);
  } catch (e) {
    failedRuns++;
    console.log(`#${r}: the scenario itself failed: ${(e as Error).stack ?? e}`);
  }
}

const lossy = reports.filter((r) => r.lost > 0 || r.doubled > 0 || r.reordered > 0 || r.verifyFailures.length > 0);
/** The longest pause of any partition during a loss of more than 20 s (the stall watchdog's measure). */
const worstPause = (r: ClusterScenarioReport): number => Math.max(0, ...r.losses.filter((l) => l.downMs > 20_000).flatMap((l) => l.longestPauseMs));
const stalled = reports.filter((r) => worstPause(r) > stallBoundMs);
console.log(
  `cluster soak: ${reports.length}/${rounds} repetitions ran; with lost, doubled or reordered events: ${lossy.length}` +
    ` (lost instances per repetition: ${reports.map((r) => r.lost).join(' ')}); over the stall bound of ${stallBoundMs} ms: ${stalled.length}` +
    ` (longest pause during a loss of more than 20 s, per repetition: ${reports.map((r) => (worstPause(r) / 1_000).toFixed(1)).join(' ')} s)`,
);
process.exit(lossy.length > 0 || failedRuns > 0 ? 1 : stalled.length > 0 ? 2 : 0);
