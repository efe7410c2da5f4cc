/**
 * A jetstate engine in its own process for the SIGKILL mode of the fidelity test, with every
 * corpus workflow registered.
 *
 *   node --import tsx test/fidelity/engine-process.ts --nats nats://127.0.0.1:4222 --namespace ns
 *
 * Lines on stdout (a word, then JSON):
 *   READY {"pid"}                       the engine runs
 *   EFFECT {EffectCall}                 a corpus action ran, or XState's log (written synchronously)
 *   CRASH {"key","revision","atMs"}     right before it SIGKILLs itself after an armed state write
 * IPC messages from the test: { crashAfterWriteOf: '<workflow>.<id>' } arms that crash;
 * { query, instances } is answered { answer: query, ok } (see caught-up.ts).
 */
import { writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createEngine } from '../../engine/index.js';
import { corpusWorkflows } from './corpus.js';
import { engineCaughtUp } from './caught-up.js';
import { recordLog, setEffectSink } from './effects.js';

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
let answer: ((m: { query: number; instances: Array<{ workflow: string; id: string }> }) => void) | undefined;
process.on('message', (m: { crashAfterWriteOf?: string; query?: number; instances?: Array<{ workflow: string; id: string }> }) => {
  if (typeof m?.crashAfterWriteOf === 'string') armed.add(m.crashAfterWriteOf);
  if (typeof m?.query === 'number' && Array.isArray(m.instances)) answer?.({ query: m.query, instances: m.instances });
});

const engine = await createEngine({
  servers: values.nats,
  namespace: values.namespace,
  partitions: 4,
  recordShards: 1,
  workflows: corpusWorkflows(),
  // A new process takes the partitions of a killed one over within a second.
  leaseTtlMs: 600,
  drainTimeoutMs: 2_000,
  name: `fidelity-engine-${process.pid}`,
  // Warnings and errors to stderr as the default logger writes them; XState's log as an effect.
  logger: {
    debug: () => {},
    info: (_m, f) => {
      if (f?.['action'] === 'xstate.log') recordLog(String(f['id']), f['label'], f['value']);
    },
    warn: (m, f) => console.error(`jetstate warn: ${m}`, f ?? ''),
    error: (m, f) => console.error(`jetstate error: ${m}`, f ?? ''),
  },
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

answer = ({ query, instances }) => {
  engineCaughtUp(engine, instances)
    .catch(() => false)
    .then((ok) => process.send?.({ answer: query, ok }));
};

say('READY', { pid: process.pid });
