// The test files for `npm test`: every test/*/*.test.ts, the longest first, so that the last
// files to start (three run at once) are short ones and no long file runs on alone at the end.
// The order is from the per-file durations of a full run on 2 cores (a full run's TAP output); a file
// missing from the list runs after them, in name order.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const LONGEST_FIRST = [
  'test/examples/two-services.test.ts',
  'test/fidelity/fidelity.test.ts',
  'test/recovery/cluster-loss.test.ts',
  'test/cli/habits.test.ts',
  'test/integration/partition-reader.test.ts',
  'test/recovery/exactly-once.test.ts',
  'test/recovery/fresh-namespace.test.ts',
  'test/recovery/timer-takeover.test.ts',
  'test/recovery/order-and-crash.test.ts',
  'test/edge/step-functions.test.ts',
  'test/edge/permissions.test.ts',
  'test/cli/security-cli.test.ts',
  'test/security/event-layer-property.test.ts',
  'test/integration/cluster.test.ts',
  'test/recovery/open-during-election.test.ts',
  'test/sfn/activity-bridge.test.ts',
];

const all = readdirSync('test', { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .flatMap((d) =>
    readdirSync(join('test', d.name))
      .filter((f) => f.endsWith('.test.ts'))
      .map((f) => `test/${d.name}/${f}`),
  )
  .sort();
const present = new Set(all);
const first = LONGEST_FIRST.filter((f) => present.has(f));
const rest = all.filter((f) => !first.includes(f));
process.stdout.write([...first, ...rest].join(' ') + '\n');
