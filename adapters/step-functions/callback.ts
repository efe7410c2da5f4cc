/**
 * Callback tasks: a `.waitForTaskToken` state hands its token to a forwarder (a Lambda function,
 * a container, or the local endpoint's `taskHandlers`), which stores it durably in a JetStream
 * stream; a service consumes it, does the work, and answers Step Functions with SendTaskSuccess
 * or SendTaskFailure, sending heartbeats meanwhile.
 *
 * Why JetStream and not a plain publish: a token that is lost leaves its execution waiting until
 * the state's timeout (a year by default). The publish is acknowledged by the stream, deduplicated
 * by a hash of the token (a retried Lambda invocation stores it once), and the consumer
 * acknowledges a token only after AWS has accepted its answer, so a crash anywhere before that
 * hands the token to another consumer.
 */
import { AckPolicy, DeliverPolicy, RetentionPolicy, StorageType, jetstream, jetstreamManager, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import { connect, headers as natsHeaders, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import type { SFNClient } from '@aws-sdk/client-sfn';
import { z } from 'zod';
import { JetStreamDomainSchema, checkDomain, inDomain } from './domain.js';
import { ErrorCode, JetstateError } from '../../engine/internal.js';
import { parseOptions } from '../../engine/internal.js';
import { resolveStepFunctionsClient, type StepFunctionsClients, type StepFunctionsTarget } from './clients.js';
import { TOKEN_HASH_HEADER } from './nats-service.js';
import { answerOfResult, backoffDelayMs, failureOf, sendHeartbeat, sendTaskAnswer, sleep, tokenHash, FailureRun, type TaskAnswer } from './task-answer.js';
import { EXECUTION_ARN, stateEntryKey } from './state-entry.js';
import { consoleLogger, type Logger } from '../../engine/internal.js';

export { TaskFailedError } from './task-answer.js';

const NS_PER_MS = 1_000_000;

/** What a forwarder stores for each token. */
const TokenMessageSchema = z.object({ taskToken: z.string().min(1), input: z.unknown().optional(), executionArn: z.string().regex(EXECUTION_ARN).optional() });

const isConnection = (v: unknown): v is NatsConnection => typeof v === 'object' && v !== null && typeof (v as NatsConnection).publish === 'function';

// ---------------------------------------------------------------------------------------------
// The stream

export interface TaskTokenStreamOptions {
  connection: NatsConnection;
  /** Stream name, e.g. `SFN_TOKENS`. */
  stream: string;
  /** Subjects it stores, e.g. `['sfn.tokens.>']`. */
  subjects: string[];
  replicas?: number;
  /** How long a token's hash is remembered to drop a second copy of it (default 10 minutes). */
  duplicateWindowMs?: number;
  /** JetStream domain of the stream (a leaf node's own JetStream, e.g. an edge site's `edge`); the connection's own JetStream when absent. */
  domain?: string;
}

/**
 * Creates the stream that keeps task tokens until they are answered (a work queue on disk: a
 * token leaves it when its consumer acknowledges it), unless a stream of that name exists; an
 * existing stream is left as it is.
 *
 * @example
 * ```ts
 * await ensureTaskTokenStream({ connection: nc, stream: 'SFN_TOKENS', subjects: ['sfn.tokens.>'] });
 * ```
 */
export async function ensureTaskTokenStream(options: TaskTokenStreamOptions): Promise<void> {
  checkDomain('ensureTaskTokenStream', options.domain);
  const jsm = await jetstreamManager(options.connection, inDomain(options.domain));
  try {
    await jsm.streams.info(options.stream);
    return;
  } catch (e) {
    if (!/not found/i.test((e as Error).message)) throw e;
  }
  try {
    await jsm.streams.add({
      name: options.stream,
      subjects: options.subjects,
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: options.replicas ?? 1,
      duplicate_window: (options.duplicateWindowMs ?? 600_000) * NS_PER_MS,
    });
  } catch (e) {
    // Created meanwhile by another process: fine.
    if (!/already in use|exists/i.test((e as Error).message)) throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// The forwarder

export interface TaskTokenForwarderOptions {
  /** NATS server URL(s); the forwarder connects on its first call and keeps the connection. */
  servers?: string | string[];
  /** A connection of yours instead (left open by `close()`). */
  connection?: NatsConnection;
  /** Subject the tokens are published to; a stream must store it (see {@link ensureTaskTokenStream}). */
  subject: string;
  /** When set, the publish fails unless this stream stores it. */
  stream?: string;
  /** Further options of the connection the forwarder opens (credentials, TLS, name). */
  connectionOptions?: Omit<NodeConnectionOptions, 'servers'>;
  /** JetStream domain of the stream (a leaf node's own JetStream, e.g. an edge site's `edge`); the connection's own JetStream when absent. */
  domain?: string;
}

/**
 * The event of a `.waitForTaskToken` Lambda task:
 * `Payload: { "taskToken.$": "$$.Task.Token", "executionArn.$": "$$.Execution.Id", "input.$": "$" }`.
 * `executionArn` is optional; with it, the handler gets an idempotency key that stays the same
 * across the state's retries (see {@link CallbackTask.idempotencyKey}).
 */
export interface TaskTokenEvent {
  taskToken: string;
  input?: unknown;
  executionArn?: string;
  [key: string]: unknown;
}

/** Takes a {@link TaskTokenEvent} (typed `unknown` because it is checked at run time, and so that it fits any Lambda-style handler slot). */
export type TaskTokenForwarder = ((event: unknown) => Promise<{ forwarded: true }>) & {
  /** Closes the connection the forwarder opened (not one you passed). */
  close(): Promise<void>;
};

/**
 * A Lambda-style handler that stores each task token, with its input, in JetStream. It resolves
 * once the stream has acknowledged the token and throws otherwise, so the task fails (and its
 * `Retry` applies) rather than waiting for an answer that can never come. The message carries
 * `{ taskToken, input, executionArn? }`, where `input` is `event.input` or, if absent, the event
 * without its token and execution, and `executionArn` is `event.executionArn` when the state
 * passes it (`"executionArn.$": "$$.Execution.Id"`, for an idempotency key that outlives the
 * state's retries); its message id is a hash of the token, so a retried invocation stores it once.
 *
 * In a Lambda, create it at module scope: the connection is opened on the first invocation and
 * reused by later ones (and opened again if it was closed while the function was frozen).
 *
 * @example
 * ```ts
 * // lambda.ts
 * export const handler = taskTokenForwarder({ servers: process.env.NATS_URL!, subject: 'sfn.tokens.charge', stream: 'SFN_TOKENS' });
 * // or, with the local endpoint:
 * startLocalStepFunctions({ taskHandlers: { charge: taskTokenForwarder({ connection: nc, subject: 'sfn.tokens.charge' }) } });
 * ```
 */
export function taskTokenForwarder(options: TaskTokenForwarderOptions): TaskTokenForwarder {
  const { subject, stream } = options;
  if (!options.servers && !options.connection)
    throw new JetstateError(ErrorCode.InvalidOptions, `taskTokenForwarder for '${subject}': give 'servers' (e.g. 'nats://127.0.0.1:4222') or a 'connection'`);
  if (options.connection && !isConnection(options.connection))
    throw new JetstateError(ErrorCode.InvalidOptions, 'taskTokenForwarder: connection must be a NatsConnection');
  checkDomain('taskTokenForwarder', options.domain);
  let opened: Promise<NatsConnection> | undefined;
  const connection = async (): Promise<NatsConnection> => {
    if (options.connection) return options.connection;
    if (opened) {
      const nc = await opened.catch(() => undefined);
      if (nc && !nc.isClosed()) return nc;
    }
    opened = connect({ name: 'jetstate-task-token-forwarder', ...options.connectionOptions, servers: options.servers! });
    return opened;
  };

  const forward = async (event: unknown): Promise<{ forwarded: true }> => {
    const parsed = TokenMessageSchema.passthrough().safeParse(event);
    if (!parsed.success) {
      const badArn = parsed.error.issues.some((i) => i.path[0] === 'executionArn');
      throw new JetstateError(
        ErrorCode.InvalidInput,
        badArn
          ? `task token forwarder for '${subject}': the event's executionArn is not an execution ARN; pass the execution's: "executionArn.$": "$$.Execution.Id"`
          : `task token forwarder for '${subject}': the event has no taskToken; pass it in the state's Parameters: "Payload": { "taskToken.$": "$$.Task.Token", "input.$": "$" }`,
      );
    }
    const { taskToken, input, executionArn, ...rest } = parsed.data;
    const hash = tokenHash(taskToken);
    const h = natsHeaders();
    h.set(TOKEN_HASH_HEADER, hash);
    const js = jetstream(await connection(), inDomain(options.domain));
    const ack = await js.publish(
      subject,
      JSON.stringify({ taskToken, input: 'input' in parsed.data ? input : rest, ...(executionArn ? { executionArn } : {}) }),
      {
        msgID: `sfn-token-${hash}`,
        headers: h,
        ...(stream ? { expect: { streamName: stream } } : {}),
      },
    );
    // The subject decides which stream stores the token; `domain` says which one that must be.
    if (options.domain && ack.domain !== options.domain) {
      throw new JetstateError(
        ErrorCode.InvalidOptions,
        `task token forwarder for '${subject}': the token was stored by stream '${ack.stream}' in JetStream domain '${ack.domain ?? '(none)'}', not in '${options.domain}'; ` +
          `make only the stream in domain '${options.domain}' store '${subject}'`,
      );
    }
    return { forwarded: true };
  };
  return Object.assign(forward, {
    async close() {
      if (options.connection || !opened) return;
      const nc = await opened.catch(() => undefined);
      opened = undefined;
      await nc?.close();
    },
  });
}

// ---------------------------------------------------------------------------------------------
// The consumer

/** One callback task, as a handler of {@link serveCallbackTasks} sees it. */
export interface CallbackTask {
  input: unknown;
  taskToken: string;
  /** A digest of the token, for logs and correlation. */
  taskTokenHash: string;
  /**
   * The key to make the work idempotent with. When the forwarded event names the execution
   * (`"executionArn.$": "$$.Execution.Id"`), it is derived from the execution ARN and the id of the
   * state entry in its history, so every retry of the state (each with a new token) and every
   * redelivery of a token has the same key, and each state entry (each Map iteration too) its
   * own. Without it, the key is `taskTokenHash`, which changes with each retry.
   */
  idempotencyKey: string;
  /** The execution that runs the task, when the forwarded event named it. */
  executionArn?: string | undefined;
  /** Aborts when Step Functions no longer waits for the task (timed out) or the server stops past its drain timeout. */
  signal: AbortSignal;
  /** Sends a heartbeat now (besides the automatic ones). Never throws; a gone task aborts `signal`. */
  heartbeat(): Promise<void>;
}

/** Returns the task's output (JSON-serialisable, ≤256 KiB) or throws to fail it (see {@link TaskFailedError}). */
export type CallbackHandler = (task: CallbackTask) => Promise<unknown>;

const ServeOptionsSchema = z
  .object({
    connection: z.custom<NatsConnection>(isConnection, 'connection must be a NatsConnection'),
    /** Stream of the tokens; found from `subject` when absent. */
    stream: z.string().min(1).optional(),
    /** Subject of the tokens: the consumer's filter, and how the stream is found. */
    subject: z.string().min(1).optional(),
    /** JetStream domain of the stream (e.g. an edge site's `edge`); the connection's own JetStream when absent. */
    domain: JetStreamDomainSchema.optional(),
    /** Durable consumer name; servers sharing it share the tokens. Created if missing. */
    durable: z.string().regex(/^[A-Za-z0-9_-]{1,128}$/, 'durable: 1-128 of A-Z a-z 0-9 _ -'),
    client: z.custom<SFNClient>((v) => typeof v === 'object' && v !== null && typeof (v as SFNClient).send === 'function').optional(),
    clients: z.custom<StepFunctionsClients>((v) => typeof v === 'object' && v !== null && typeof (v as StepFunctionsClients).get === 'function').optional(),
    target: z.custom<StepFunctionsTarget>((v) => typeof v === 'object' && v !== null).optional(),
    handler: z.custom<CallbackHandler>((v) => typeof v === 'function', 'handler must be an async function (task) => output'),
    /** SendTaskHeartbeat this often while a handler runs; 0 turns automatic heartbeats off. */
    heartbeatIntervalMs: z.number().int().min(0).default(10_000),
    /** Handlers running at once. */
    concurrency: z.number().int().min(1).max(1_000).default(8),
    /** Ack wait of the consumer it creates; extended while a token is being worked on. */
    ackWaitMs: z.number().int().min(1_000).default(30_000),
    /** How long `stop()` lets running tasks finish before it aborts them (their tokens come back). */
    drainTimeoutMs: z.number().int().min(0).default(30_000),
    logger: z.custom<Logger>((v) => typeof v === 'object' && v !== null && typeof (v as Logger).warn === 'function').default(consoleLogger),
  })
  .strict()
  .refine((o) => o.stream !== undefined || o.subject !== undefined, { message: "give 'stream' or 'subject' (or both)" });

export type ServeCallbackTasksOptions = z.input<typeof ServeOptionsSchema>;

export interface CallbackTaskStats {
  received: number;
  succeeded: number;
  failed: number;
  /** Tasks Step Functions no longer waited for (timed out, already answered). */
  gone: number;
  heartbeats: number;
}

export interface CallbackTaskServer {
  readonly stats: CallbackTaskStats;
  /**
   * Takes no new tokens, lets running tasks finish and answer (up to `drainTimeoutMs`), then aborts
   * the rest, whose tokens are redelivered. Idempotent.
   */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Consumes task tokens and answers them: runs `handler`, then SendTaskSuccess with its result
 * (payload-guarded) or SendTaskFailure with the error it threw (name ≤256, cause ≤32,768
 * characters), sending SendTaskHeartbeat every `heartbeatIntervalMs` while it runs. A token is
 * acknowledged only once AWS accepted the answer; throttling and network errors are retried
 * with backoff. `TaskTimedOut`, `InvalidToken` and `TaskDoesNotExist` end the task without retry
 * (logged). A handler may run more than once for one token (a crash before the acknowledgement),
 * and once per retry of the state: make it idempotent, keyed by `idempotencyKey`.
 *
 * @example
 * ```ts
 * const server = await serveCallbackTasks({ connection: nc, stream: 'SFN_TOKENS', subject: 'sfn.tokens.charge', durable: 'charge', clients,
 *   handler: async ({ input, signal }) => charge(input, { signal }) });
 * await server.stop();
 * ```
 */
export async function serveCallbackTasks(options: ServeCallbackTasksOptions): Promise<CallbackTaskServer> {
  const o = parseOptions(ServeOptionsSchema, 'serveCallbackTasks', options);
  const client = resolveStepFunctionsClient(o, 'serveCallbackTasks');
  const { logger } = o;
  const jsm = await jetstreamManager(o.connection, inDomain(o.domain));
  const stream =
    o.stream ??
    (await jsm.streams.find(o.subject!).catch((e: unknown) => {
      throw new JetstateError(
        ErrorCode.InvalidOptions,
        `serveCallbackTasks: no stream stores '${o.subject}' (${(e as Error).message}); create one with ensureTaskTokenStream() or name it in 'stream'`,
        { cause: e },
      );
    }));
  try {
    await jsm.consumers.info(stream, o.durable);
  } catch (e) {
    if (!/not found/i.test((e as Error).message)) throw e;
    await jsm.consumers.add(stream, {
      durable_name: o.durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: o.ackWaitMs * NS_PER_MS,
      max_deliver: -1,
      ...(o.subject ? { filter_subject: o.subject } : {}),
    });
  }
  const consumer = await jetstream(o.connection, inDomain(o.domain)).consumers.get(stream, o.durable);

  const stats: CallbackTaskStats = { received: 0, succeeded: 0, failed: 0, gone: 0, heartbeats: 0 };
  const running = new Map<string, { latest: JsMsg; controller: AbortController; done: Promise<void> }>();
  const giveUp = new AbortController();
  let stopping = false;
  let batch: ConsumerMessages | undefined;
  let slotFreed: (() => void) | undefined;

  const handle = async (m: JsMsg): Promise<void> => {
    stats.received++;
    let token: z.infer<typeof TokenMessageSchema>;
    try {
      token = TokenMessageSchema.parse(JSON.parse(new TextDecoder().decode(m.data)));
    } catch {
      logger.warn(`callback tasks '${o.durable}': message ${m.seq} of ${stream} is not a task token { taskToken, input, executionArn? }; dropped`);
      m.term();
      return;
    }
    const hash = tokenHash(token.taskToken);
    const what = `callback task ${hash} ('${o.durable}')`;
    const already = running.get(hash);
    if (already) {
      // A redelivery while it still runs here: answer through the newest delivery.
      already.latest = m;
      m.working();
      return;
    }
    const controller = new AbortController();
    let settle!: () => void;
    const entry = { latest: m, controller, done: new Promise<void>((r) => (settle = r)) };
    running.set(hash, entry);
    let gone = false;
    const markGone = (): void => {
      gone = true;
      controller.abort(new Error('Step Functions no longer waits for this task (timed out or answered)'));
    };
    const beats = new FailureRun();
    const beat = async (): Promise<void> => {
      entry.latest.working();
      if (gone) return;
      const r = await sendHeartbeat(client, token.taskToken, logger, what, beats);
      if (r === 'ok') stats.heartbeats++;
      if (r === 'gone') markGone();
    };
    const workingTimer = setInterval(() => entry.latest.working(), Math.max(500, Math.floor(o.ackWaitMs / 3)));
    const heartbeatTimer = o.heartbeatIntervalMs > 0 ? setInterval(() => void beat(), o.heartbeatIntervalMs) : undefined;
    try {
      const aborted = new Promise<never>((_, reject) => controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true }));
      let answer: TaskAnswer;
      try {
        // One GetExecutionHistory call (usually) when the execution is named; a failure fails the task.
        const idempotencyKey = token.executionArn
          ? await Promise.race([stateEntryKey(client, token.executionArn, token.taskToken, controller.signal), aborted])
          : hash;
        const task: CallbackTask = {
          input: token.input,
          taskToken: token.taskToken,
          taskTokenHash: hash,
          idempotencyKey,
          signal: controller.signal,
          heartbeat: beat,
        };
        if (token.executionArn) task.executionArn = token.executionArn;
        const result = await Promise.race([o.handler(task), aborted]);
        answer = answerOfResult(result, `output of ${what}`);
      } catch (e) {
        answer = failureOf(e);
      } finally {
        clearInterval(heartbeatTimer);
      }
      if (gone) {
        stats.gone++;
        logger.warn(`${what}: Step Functions no longer waits for it; its result is dropped`);
        entry.latest.term();
        return;
      }
      if (giveUp.signal.aborted) {
        entry.latest.nak(); // stopping past the drain timeout: another server takes the token
        return;
      }
      const outcome = await sendTaskAnswer(client, token.taskToken, answer, { logger, what, giveUp: giveUp.signal });
      if (outcome === 'abandoned') return void entry.latest.nak();
      if (outcome === 'gone') stats.gone++;
      else if (answer.ok) stats.succeeded++;
      else stats.failed++;
      await entry.latest
        .ackAck()
        .catch((e: unknown) => logger.warn(`${what}: acknowledging the token failed (${(e as Error).message}); it may be answered again, harmlessly`));
    } finally {
      clearInterval(workingTimer);
      running.delete(hash);
      settle();
      slotFreed?.();
    }
  };

  const loop = (async () => {
    for (let failures = 0; !stopping;) {
      const free = o.concurrency - running.size;
      if (free <= 0) {
        await new Promise<void>((r) => (slotFreed = r));
        slotFreed = undefined;
        continue;
      }
      try {
        batch = await consumer.fetch({ max_messages: free, expires: 5_000 });
        if (stopping) batch.stop();
        for await (const m of batch) void handle(m);
        failures = 0;
      } catch (e) {
        if (stopping) break;
        const wait = backoffDelayMs(++failures, 200, 5_000);
        logger.warn(`callback tasks '${o.durable}': reading tokens failed (${(e as Error).message}); retrying in ${wait} ms`);
        await sleep(wait);
      }
    }
  })();

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      stopping = true;
      batch?.stop();
      slotFreed?.();
      await loop;
      const all = Promise.all([...running.values()].map((r) => r.done));
      const drained = new AbortController();
      const outcome = await Promise.race([all.then(() => 'done' as const), sleep(o.drainTimeoutMs, drained.signal)]);
      drained.abort();
      if (outcome !== 'done') {
        logger.warn(
          `callback tasks '${o.durable}': ${running.size} task(s) still running after ${o.drainTimeoutMs} ms; aborting them (their tokens are redelivered)`,
        );
        giveUp.abort();
        for (const r of running.values()) r.controller.abort(new Error('the callback task server is stopping'));
      }
      await all;
    })());

  return {
    get stats() {
      return { ...stats };
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
