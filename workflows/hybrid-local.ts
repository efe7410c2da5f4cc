/**
 * Runs the hybrid example offline, beside `jetstate sfn-local` (README, "Hybrid workflows
 * offline"): an engine with the hybrid workflow and the Step Functions extension pointed at
 * sfn-local, the callback server that answers the cloud stage's task tokens, and the settlement
 * service. Run it instead of `jetstate dev`, not beside it in the same namespace: an engine
 * without the extension would take the cloud stage's attempts too (and fail them). It uses the NATS at NATS_URL (default nats://127.0.0.1:4222), or starts a nats-server
 * there with its data in ./.jetstate/hybrid-data. Stops on Ctrl-C (draining the engine first).
 *
 *   npm run build && node dist/workflows/hybrid-local.js
 *
 * Environment: NATS_URL; SFN_ENDPOINT (default http://127.0.0.1:8083), AWS_REGION (default
 * us-east-1); AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (default test / test, sfn-local's);
 * JETSTATE_NAMESPACE (default jetstate, as the CLI's).
 */
import { reachable } from '../adapters/cli/dev.js';
import { resolve } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { createEngine } from '../engine/index.js';
import { NatsServer } from '../adapters/nats-server/launcher.js';
import { createStepFunctionsClients } from '../adapters/step-functions/clients.js';
import { stepFunctions } from '../adapters/step-functions/execution.js';
import { hybrid } from './hybrid.js';
import { serveHybridCallbacks, startSettlementService } from './hybrid-cloud.js';

const env = process.env;
const natsUrl = env['NATS_URL'] || 'nats://127.0.0.1:4222';
const endpoint = env['SFN_ENDPOINT'] || 'http://127.0.0.1:8083';
const region = env['AWS_REGION'] || 'us-east-1';
const credentials = { accessKeyId: env['AWS_ACCESS_KEY_ID'] || 'test', secretAccessKey: env['AWS_SECRET_ACCESS_KEY'] || 'test' };
const namespace = env['JETSTATE_NAMESPACE'] || 'jetstate';

let server: NatsServer | undefined;
if (!(await reachable(natsUrl))) {
  server = await NatsServer.start({
    storeDir: resolve(process.cwd(), '.jetstate', 'hybrid-data'),
    port: Number(new URL(natsUrl.replace(/^nats:/, 'http:')).port || 4222),
    serverName: 'jetstate_hybrid',
  });
  process.stdout.write(`started nats-server (pid ${server.pid}) at ${server.url}\n`);
}
const url = server?.url ?? natsUrl;
const nc = await connect({ servers: url, name: 'jetstate-hybrid-local' });
const clients = createStepFunctionsClients({ region, endpoint, credentials });
const engine = await createEngine({
  servers: url,
  namespace,
  workflows: [hybrid],
  extensions: [stepFunctions({ region, endpoint, credentials })],
  name: 'jetstate-hybrid-local',
});
const settlement = startSettlementService(nc);
const callbacks = await serveHybridCallbacks({ connection: nc, clients });

const server_ = url === 'nats://127.0.0.1:4222' ? '' : ` --server ${url}`;
process.stdout.write(
  [
    `engine ${engine.engineId} runs the hybrid workflow with Step Functions at ${endpoint} (${region}); callback tasks and the settlement service are up`,
    '',
    'Try it from another shell:',
    `  npx jetstate start hybrid --id h-1 --input '{"orderId":"h-1","sku":"book","quantity":2,"amount":30}'${server_}`,
    `  npx jetstate wait hybrid h-1 --state completed${server_}`,
    `  npx jetstate history hybrid h-1${server_}`,
    `  npx jetstate start hybrid --id h-2 --input '{"orderId":"h-2","sku":"lamp","quantity":1,"amount":20000}'${server_}   # declined in the cloud: ends cancelled`,
    '',
    'Press Ctrl-C to stop.',
    '',
  ].join('\n'),
);

await new Promise<void>((done) => {
  process.once('SIGINT', done);
  process.once('SIGTERM', done);
});
process.stdout.write('stopping\n');
await callbacks.stop();
settlement.stop();
await engine.close();
clients.destroy();
await nc.close();
await server?.stop();
