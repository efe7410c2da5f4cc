/**
 * jetstate/testing: the loopback stand-ins this project's own tests run against, for your tests
 * too. A nats-server with JetStream on a free port and a fresh store, a Step Functions-compatible
 * endpoint that runs state machines (`jetstate sfn-local` in a process of its own), and an STS
 * whose credentials that endpoint accepts. Everything binds to 127.0.0.1 and keeps its state in
 * memory or a temporary folder.
 *
 * Needs `aws-local-stepfunctions` (the endpoint's interpreter) in your dev dependencies, and a
 * nats-server 2.10 or newer (on PATH, or `JETSTATE_NATS_SERVER`). Production code never imports
 * this entry: `jetstate/adapters/step-functions` does not load any of it.
 *
 * @example
 * ```ts
 * import { NatsServer, startLocalStepFunctions, startLocalSts } from 'jetstate/testing';
 *
 * const nats = await NatsServer.start();
 * const sts = await startLocalSts();
 * const sfn = await startLocalStepFunctions({ sts, taskHandlers: { charge: async () => ({ ok: true }) } });
 * // createEngine({ servers: nats.url, extensions: [stepFunctions({ region: sfn.region, endpoint: sfn.endpoint,
 * //   credentials: { accessKeyId: 'test', secretAccessKey: 'test' } })] })
 * await sfn.close();
 * await sts.close();
 * await nats.stop();
 * ```
 */
export { startLocalStepFunctions, SfnApiError, REFUSED_FEATURES } from '../local/step-functions/server.js';
export type {
  LocalStepFunctions,
  LocalStepFunctionsOptions,
  StsLike,
  EventBridgeExecutionStatusEvent,
  ExecutionStatus,
  TaskHandler,
  TaskHandlerContext,
  DelaySpec,
  RequestStats,
  ThrottleSpec,
} from '../local/step-functions/server.js';
export { startLocalSts } from '../local/aws/sts.js';
export type { LocalSts, LocalStsOptions, RootCredential, IssuedCredential, KnownCredential } from '../local/aws/sts.js';
export { verifySigV4, SigV4Failure } from '../local/aws/sigv4.js';
export type { SigningSecret, SigV4Result } from '../local/aws/sigv4.js';
export { NatsServer, startCluster, findNatsServer } from '../nats-server/launcher.js';
export type { NatsServerOptions, ClusterOptions } from '../nats-server/launcher.js';
