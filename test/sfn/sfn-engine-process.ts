/**
 * An engine with the Step Functions extension in its own process, for the kill tests: it runs the
 * stage workflow of stage-workflow.ts against the endpoint the test started, and SIGKILLs itself
 * right after its first StartExecution call returned, before the adapter writes the pending
 * execution to the `<namespace>_sfn` bucket.
 *
 *   node --import tsx test/sfn/sfn-engine-process.ts --nats URL --namespace NS --endpoint URL \
 *     --region R --workflow NAME --state-machine ARN [--trace]
 *
 * `--trace` gives the engine a recording tracer provider (no exporter), as a traced deployment has.
 *
 * Lines on stdout (one JSON object after a word), written synchronously:
 *   READY {"pid"}                 the engine is created
 *   STARTED {"executionArn"}      StartExecution returned; the process SIGKILLs itself next
 *
 * The hook wraps `SFNClient.prototype.send` in this process only: the adapter's clients are
 * real SDK clients talking HTTP to the endpoint, and the call completes before the kill.
 */
import { writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { SFNClient, StartExecutionCommand, type StartExecutionCommandOutput } from '@aws-sdk/client-sfn';
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { createEngine } from '../../engine/index.js';
import { stepFunctions } from '../../adapters/step-functions/execution.js';
import { killStageWorkflow } from './stage-workflow.js';
import { TEST_CREDENTIALS } from './sfn-local-helpers.js';

const { values } = parseArgs({
  options: {
    nats: { type: 'string' },
    namespace: { type: 'string' },
    endpoint: { type: 'string' },
    region: { type: 'string' },
    workflow: { type: 'string' },
    'state-machine': { type: 'string' },
    trace: { type: 'boolean' },
  },
  strict: true,
});
const { nats, namespace, endpoint, region, workflow } = values;
const stateMachineArn = values['state-machine'];
if (!nats || !namespace || !endpoint || !region || !workflow || !stateMachineArn) {
  console.error('sfn-engine-process: give --nats, --namespace, --endpoint, --region, --workflow and --state-machine');
  process.exit(2);
}

const say = (word: string, fields: Record<string, unknown>): void => {
  writeSync(1, `${word} ${JSON.stringify(fields)}\n`);
};

// Between StartExecution and the adapter's KV put: the execution exists, nothing records it.
const send = SFNClient.prototype.send as (this: SFNClient, ...args: unknown[]) => Promise<unknown>;
SFNClient.prototype.send = async function (this: SFNClient, ...args: unknown[]): Promise<unknown> {
  const out = await send.apply(this, args);
  if (args[0] instanceof StartExecutionCommand) {
    say('STARTED', { executionArn: (out as StartExecutionCommandOutput).executionArn });
    process.kill(process.pid, 'SIGKILL');
    await new Promise(() => {}); // never returns to the adapter
  }
  return out;
} as never;

const engine = await createEngine({
  servers: nats,
  namespace,
  workflows: [killStageWorkflow(workflow, stateMachineArn)],
  extensions: [stepFunctions({ region, endpoint, credentials: TEST_CREDENTIALS })],
  leaseTtlMs: 1_000,
  name: `sfn-kill-engine-${process.pid}`,
  ...(values.trace ? { telemetry: { tracerProvider: new BasicTracerProvider() } } : {}),
});
say('READY', { pid: process.pid });

const shutdown = (): void => {
  setTimeout(() => process.exit(3), 10_000).unref();
  void engine.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGTERM', shutdown);
// Orphaned (the test runner died): stop rather than linger.
process.on('disconnect', shutdown);
