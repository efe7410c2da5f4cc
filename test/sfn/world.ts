/**
 * The world of the Step Functions adapter tests: a real nats-server, the loopback STS and the
 * loopback Step Functions endpoint (which accepts what the STS issued), and real SDK clients
 * over HTTP with explicit credentials.
 */
import {
  CreateActivityCommand,
  CreateStateMachineCommand,
  DescribeExecutionCommand,
  SFNClient,
  type DescribeExecutionCommandOutput,
} from '@aws-sdk/client-sfn';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { startLocalSts, type LocalSts } from '../../adapters/local/aws/sts.js';
import {
  startLocalStepFunctions,
  type EventBridgeExecutionStatusEvent,
  type LocalStepFunctions,
  type TaskHandler,
} from '../../adapters/local/step-functions/server.js';
import { createStepFunctionsClients, type StepFunctionsClients, type StepFunctionsClientsOptions } from '../../adapters/step-functions/clients.js';
import { eventually, startNats, type NatsServer } from '../helpers.js';

export const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };
export const ACCOUNT = '123456789012';
export const REGION = 'us-east-1';
export const EXECUTION_ROLE = `arn:aws:iam::${ACCOUNT}:role/sfn-exec`;

export interface SfnWorldOptions {
  /** Start a nats-server (default true). */
  nats?: boolean;
  /** Lifetime of credentials the STS issues (default 900). */
  assumedDurationSeconds?: number;
  activityPollTimeoutMs?: number;
  /** Stand-ins for Lambda functions; built once NATS is connected. */
  taskHandlers?: (nc: NatsConnection | undefined) => Record<string, TaskHandler>;
  /** What EventBridge would forward: every execution status change. */
  onStatusChange?: (event: EventBridgeExecutionStatusEvent) => void;
}

export interface SfnWorld {
  nats: NatsServer | undefined;
  /** Connected when `nats` is. */
  nc: NatsConnection;
  sts: LocalSts;
  endpoint: LocalStepFunctions;
  /** A plain SDK client with the static test credentials. */
  client(extra?: { maxAttempts?: number; requestTimeoutMs?: number }): SFNClient;
  /** A client pool on the endpoint and the STS. */
  clients(extra?: Partial<StepFunctionsClientsOptions>): StepFunctionsClients;
  createStateMachine(name: string, definition: object): Promise<string>;
  createActivity(name: string): Promise<string>;
  /** Waits until the execution leaves RUNNING. */
  waitForEnd(executionArn: string, timeoutMs?: number): Promise<DescribeExecutionCommandOutput>;
  close(): Promise<void>;
}

export async function startSfnWorld(options: SfnWorldOptions = {}): Promise<SfnWorld> {
  const nats = options.nats === false ? undefined : await startNats();
  const nc = nats ? await connect({ servers: nats.url }) : (undefined as unknown as NatsConnection);
  const sts = await startLocalSts({ account: ACCOUNT, assumedDurationSeconds: options.assumedDurationSeconds ?? 900 });
  const endpoint = await startLocalStepFunctions({
    region: REGION,
    account: ACCOUNT,
    credentials: [CREDENTIALS],
    sts,
    activityPollTimeoutMs: options.activityPollTimeoutMs ?? 2_000,
    taskHandlers: options.taskHandlers?.(nats ? nc : undefined) ?? {},
    ...(options.onStatusChange ? { onStatusChange: options.onStatusChange } : {}),
  });
  const owned: Array<{ destroy(): void }> = [];
  const admin = new SFNClient({ endpoint: endpoint.endpoint, region: REGION, credentials: CREDENTIALS });
  owned.push(admin);
  const world: SfnWorld = {
    nats,
    nc,
    sts,
    endpoint,
    client(extra = {}) {
      const c = new SFNClient({
        endpoint: endpoint.endpoint,
        region: REGION,
        credentials: CREDENTIALS,
        ...(extra.maxAttempts ? { maxAttempts: extra.maxAttempts } : {}),
        requestHandler: { requestTimeout: extra.requestTimeoutMs ?? 70_000 },
      });
      owned.push(c);
      return c;
    },
    clients(extra = {}) {
      const pool = createStepFunctionsClients({ region: REGION, endpoint: endpoint.endpoint, stsEndpoint: sts.endpoint, credentials: CREDENTIALS, ...extra });
      owned.push(pool);
      return pool;
    },
    async createStateMachine(name, definition) {
      const r = await admin.send(new CreateStateMachineCommand({ name, definition: JSON.stringify(definition), roleArn: EXECUTION_ROLE }));
      return r.stateMachineArn!;
    },
    async createActivity(name) {
      return (await admin.send(new CreateActivityCommand({ name }))).activityArn!;
    },
    waitForEnd(executionArn, timeoutMs = 15_000) {
      return eventually(async () => {
        const d = await admin.send(new DescribeExecutionCommand({ executionArn }));
        if (d.status === 'RUNNING') throw new Error(`execution ${executionArn} is still RUNNING`);
        return d;
      }, timeoutMs);
    },
    async close() {
      for (const c of owned) c.destroy();
      await endpoint.close();
      await sts.close();
      if (nats) {
        await nc.close();
        await nats.dispose();
      }
    },
  };
  return world;
}
