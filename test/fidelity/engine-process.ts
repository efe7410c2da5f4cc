/**
 * A jetstate engine in its own process for the SIGKILL mode of the fidelity test, with every
 * corpus workflow registered.
 *
 *   node --import tsx test/fidelity/engine-process.ts --nats nats://127.0.0.1:4222 --namespace ns
 *
 * Lines on stdout (a word, then JSON):
 *   READY {"pid"}                       the engine runs
 *   EFFECT {EffectCall}                 a corpus action ran (written synchronously)
 *   CRASH {"key","revision","atMs"}     right before it SIGKILLs itself after an armed state write
 * IPC messages from the test: { crashAfterWriteOf: '<workflow>.<id>' } arms that crash.
 */
import { writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createEngine } from '../../engine/index.js';
import { corpusWorkflows } from './corpus.js';
import { setEffectSink } from './effects.js';

const { values } = parseArgs({ options: { nats: { type: 'string' }, namespace: { type: 'string' } }, strict: true });
if (!values.nats || !values.namespace) {
  console.error('engine-process: give --nats and --namespace');
  process.exit(2);
}

const say = (word: string, fields: unknown): void => {
  writeSync(1, `${word} ${JSON.stringify(fields)}\n`);
};
setEffectSink((call) => say('EFFECT', call));

const armed = new Set<string>();
process.on('message', (m: { crashAfterWriteOf?: string }) => {
  if (typeof m?.crashAfterWriteOf === 'string') armed.add(m.crashAfterWriteOf);
});

const engine = await createEngine({
  servers: values.nats,
  namespace: values.namespace,
  partitions: 4,
  workflows: corpusWorkflows(),
  // Renewed every 200 ms: the test reads checkpoints from the leases after a restart.
  leaseTtlMs: 600,
  drainTimeoutMs: 2_000,
  name: `fidelity-engine-${process.pid}`,
  testHooks: {
    afterStateWrite: (key, revision) => {
      if (!armed.has(key)) return;
      // The state is written; its history, tasks and actions are not: die exactly here.
      say('CRASH', { key, revision, atMs: Date.now() });
      process.kill(process.pid, 'SIGKILL');
    },
  },
});

const shutdown = (): void => {
  setTimeout(() => process.exit(3), 5_000).unref();
  void engine.close().finally(() => process.exit(0));
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// Orphaned (the test runner died): stop on our own rather than linger.
process.on('disconnect', shutdown);

say('READY', { pid: process.pid });
