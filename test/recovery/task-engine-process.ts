/**
 * An engine in its own process for the recovery tests of effects; prints READY, closes on SIGTERM.
 * WORKFLOWS_MODULE: a module exporting `workflows` (default: task-workflow.ts's relay).
 * CRASH_AFTER_WRITE_OF: an instance key; the process SIGKILLs itself right after writing its state.
 */
import { writeSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { createEngine, type WorkflowDefinition } from '../../engine/index.js';
import { relay } from './task-workflow.js';

const env = process.env;
const workflows: WorkflowDefinition[] = env['WORKFLOWS_MODULE']
  ? ((await import(pathToFileURL(env['WORKFLOWS_MODULE']).href)) as { workflows: WorkflowDefinition[] }).workflows
  : [relay];
const crashKey = env['CRASH_AFTER_WRITE_OF'];
const engine = await createEngine({
  servers: env['NATS_URL']!,
  namespace: env['JETSTATE_NAMESPACE']!,
  workflows,
  leaseTtlMs: 1_000,
  testHooks: {
    afterStateWrite: (key, revision) => {
      // Not at its creation (revision 1): at the write of an event.
      if (key !== crashKey || revision === 1) return;
      writeSync(1, `CRASH ${key}\n`);
      process.kill(process.pid, 'SIGKILL');
    },
  },
});
writeSync(1, `READY ${process.pid}\n`);
process.on('SIGTERM', () => void engine.close().then(() => process.exit(0)));
