/**
 * Options of `createClient` and `createEngine`, validated once with zod; code inside trusts the
 * resolved values.
 */
import { consoleLogger, type Logger } from './logger.js';
import type { NatsConnection } from '@nats-io/nats-core';
import type { MeterProvider, TracerProvider } from '@opentelemetry/api';
import type { EngineExtension } from './define/extension.js';
import { NatsAuthSchema } from './security/credentials.js';
import type { IdentityOptions } from './security/identity.js';
import { KeyRing } from './security/secrets.js';
import { z } from 'zod';
import { isWorkflowDefinition, type WorkflowDefinition } from './define/definition.js';
import { ErrorCode, fail } from './errors.js';
import { NAME_PATTERN } from './protocol/names.js';
import { nearest } from './define/keys.js';

/** The events streams' duplicate window unless the namespace was created with another. */
export const DEFAULT_DUPLICATE_WINDOW_MS = 120_000;

const isConnection = (v: unknown): v is NatsConnection =>
  typeof v === 'object' &&
  v !== null &&
  typeof (v as { publish?: unknown }).publish === 'function' &&
  typeof (v as { request?: unknown }).request === 'function';

const ClientShape = z
  .object({
    /** NATS server URL(s), e.g. `nats://127.0.0.1:4222`. */
    servers: z
      .union([z.string().min(1), z.array(z.string().min(1)).min(1)], { error: "servers: a URL or a list of URLs, e.g. 'nats://127.0.0.1:4222'" })
      .optional(),
    /** A connection of yours; jetstate uses it and leaves it open on close. */
    connection: z.custom<NatsConnection>(isConnection, 'connection must be a NatsConnection from @nats-io/transport-node').optional(),
    /**
     * JetStream domain to use (`jetstream { domain }` of the servers that hold the namespace): the
     * JetStream API is then reached as `$JS.<domain>.API`, e.g. an engine on a leaf node without
     * JetStream using its hub's (`'hub'`), or a client on the hub reading an edge site (`'edge'`).
     * Absent: the JetStream of the server connected to. See docs/EDGE.md.
     */
    jsDomain: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/, "jsDomain: a JetStream domain name such as 'hub' (1-64 of A-Z a-z 0-9 _ -)")
      .optional(),
    /** Prefix of every bucket, stream and subject. */
    namespace: z.string().regex(NAME_PATTERN, 'namespace: use 1-128 of A-Z a-z 0-9 _ -').default('jetstate'),
    /** Replicas of the streams and buckets jetstate creates (3 on a cluster). */
    replicas: z.number().int().min(1).max(5).default(1),
    /**
     * How long the events stream remembers an idempotency key (`Nats-Msg-Id`); set when the
     * namespace is first created.
     */
    duplicateWindowMs: z
      .number()
      .int()
      .min(100)
      .max(7 * 24 * 3_600_000)
      .default(DEFAULT_DUPLICATE_WINDOW_MS),
    /**
     * How long the history stream (the audit trail) keeps entries; 0 keeps them for ever. Set
     * when the namespace is first created; `verify` needs the whole history of an instance.
     */
    historyMaxAgeMs: z.number().int().min(0).default(0),
    /**
     * KV buckets the instance records are spread over, fixed when the namespace is first created
     * (default 4): under `sync_interval: always` each stream fsyncs its writes one after another,
     * so several buckets take more writes per second.
     */
    recordShards: z.number().int().min(1).max(64).optional(),
    /**
     * How long opening waits for JetStream to answer when it cannot yet (a cluster electing its
     * leaders, a node restarting): requests that time out or find no leader are retried, logged.
     * 0 fails at once. A server without JetStream fails at once either way. Default: 120 s for an
     * engine (a supervisor restarting it during an election should not see it exit), 0 for a
     * client (a caller waits on it; and a refused permission in another JetStream domain also
     * shows as a timeout, which should fail at once).
     */
    openTimeoutMs: z.number().int().min(0).optional(),
    /** Partitions of the event stream, fixed when the namespace is first created (default 16). */
    partitions: z.number().int().min(1).max(1024).optional(),
    /** Workflow versions this process knows (needed by `verify` of older versions). */
    workflows: z.array(z.custom<WorkflowDefinition>(isWorkflowDefinition, 'each workflow must come from defineWorkflow()')).default([]),
    logger: z
      .custom<Logger>(
        (v) => typeof v === 'object' && v !== null && ['error', 'warn', 'info', 'debug'].every((m) => typeof (v as Record<string, unknown>)[m] === 'function'),
        'logger must be an object with error, warn, info and debug functions, e.g. console or a pino logger',
      )
      .default(consoleLogger),
    /**
     * Prefix of this connection's reply subjects (default `_INBOX`). Give each NATS user its own
     * (`_INBOX.<user>`) and allow it to subscribe only there, so no other user can read its
     * replies (see docs/SECURITY.md).
     */
    inboxPrefix: z
      .string()
      .regex(/^_INBOX[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$/, "inboxPrefix: an inbox subject such as '_INBOX.sender' (tokens of A-Z a-z 0-9 _ -)")
      .optional(),
    /** Connection name shown by the server. */
    name: z.string().default('jetstate'),
    /** NATS credentials: token, user/password, NKey seed (file), JWT creds file, TLS. Files are read again at every reconnect. */
    auth: NatsAuthSchema.optional(),
    /** How tokens given to `send()`/`start()` are verified (OIDC issuers, AWS IAM) and mapped to roles. */
    identity: z.custom<IdentityOptions>((v) => typeof v === 'object' && v !== null, 'identity must be an object { oidc?, awsIam?, roles? }').optional(),
    /** The key ring for workflows that declare `secrets`: a KeyRing, or 'id1:base64key,id2:base64key' (the last is the newest). */
    secrets: z
      .object({
        keyRing: z.union([z.string().min(1), z.custom<KeyRing>((v) => v instanceof KeyRing, 'keyRing must come from createKeyRing() or be an id:base64 list')]),
      })
      .strict()
      .optional(),
    /** Limits for every workflow; a workflow's own `limits` override them. */
    limits: z
      .object({
        /** Largest encoded event payload, in bytes (NATS itself refuses messages over its max_payload, 1 MiB by default). */
        maxEventBytes: z.number().int().min(64).default(262_144),
        /** Largest encoded instance record, in bytes. */
        maxSnapshotBytes: z.number().int().min(1_024).default(900_000),
        /** Most events per second per instance; unlimited by default. */
        maxEventsPerSecond: z.number().positive().optional(),
      })
      .strict()
      .default({ maxEventBytes: 262_144, maxSnapshotBytes: 900_000 }),
    /**
     * OpenTelemetry providers to use instead of the globally registered ones. jetstate never
     * registers a provider itself; with none at all, tracing and metrics are no-ops.
     */
    telemetry: z
      .object({
        tracerProvider: z
          .custom<TracerProvider>((v) => typeof (v as TracerProvider | undefined)?.getTracer === 'function', 'tracerProvider must have getTracer()')
          .optional(),
        meterProvider: z
          .custom<MeterProvider>((v) => typeof (v as MeterProvider | undefined)?.getMeter === 'function', 'meterProvider must have getMeter()')
          .optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

const needsServer = {
  message: "give 'servers' (e.g. 'nats://127.0.0.1:4222') or a 'connection'",
};
const hasServer = (o: { servers?: unknown; connection?: unknown }): boolean => o.servers !== undefined || o.connection !== undefined;

export const ClientOptionsSchema = ClientShape.extend({
  /**
   * Queue this client's `send()`s and `start()`s in the relay stream of this JetStream domain (a
   * hub's) instead of publishing them to the instances' inboxes: the engines of the site that owns the namespace
   * relay them in order, once, whenever their link to the hub is up (`edgeRelay` from
   * `jetstate/adapters/edge`). Used with `jsDomain` naming the site. See docs/EDGE.md.
   */
  relayDomain: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, "relayDomain: a JetStream domain name such as 'hub' (1-64 of A-Z a-z 0-9 _ -)")
    .optional(),
})
  .strict()
  .refine(hasServer, needsServer);

export const EngineOptionsSchema = ClientShape.extend({
  workflows: z
    .array(z.custom<WorkflowDefinition>(isWorkflowDefinition, 'each workflow must come from defineWorkflow()'))
    .min(1, 'give at least one workflow from defineWorkflow()'),
  /** A partition lease not renewed for this long is taken over by another engine. */
  leaseTtlMs: z.number().int().min(300).max(600_000).default(5_000),
  /** How long `close()` waits for in-flight events before it gives up on them (they are redelivered). */
  drainTimeoutMs: z.number().int().min(0).default(10_000),
  /** Most events of one partition held in memory before intake pauses. */
  maxPendingPerPartition: z.number().int().min(1).default(4_096),
  /**
   * Most tasks (invoked activities) this engine runs in process at once, right after the write
   * that started them, for instances of its own partitions: no round trip through the tasks
   * stream, the outcome applied in the next write. 0 sends every task through the tasks stream.
   */
  localTasks: z.number().int().min(0).default(256),
  /**
   * How long a task runs (or waits for a retry) in process before it is also published to the
   * tasks stream (claimed by this engine while it still runs it), so that the partition's events
   * are not held back and another engine takes it over if this one dies.
   */
  localHoldMs: z.number().int().min(0).default(1_000),
  /** Most events of one instance applied in one write. */
  maxBatch: z.number().int().min(1).max(10_000).default(256),
  /**
   * @internal Fault injection for the recovery tests: called right after an instance's state
   * write and before its history publish, the exact window of guarantee 1.
   */
  testHooks: z
    .object({
      afterStateWrite: z.custom<(key: string, revision: number) => void>((v) => typeof v === 'function').optional(),
      /** Called right before an instance's state write (an event read but not yet applied). */
      beforeStateWrite: z.custom<(key: string, revision: number) => void>((v) => typeof v === 'function').optional(),
      /**
       * Called once a write's sends, child starts and stops are stored, before the record is
       * written again without them (a never-settling promise stands for a crash right there).
       */
      beforeOutboxMark: z.custom<(key: string) => Promise<void> | void>((v) => typeof v === 'function').optional(),
      /** Called before the owner of a partition trims its stream up to (not including) `seq`. */
      beforeTrim: z.custom<(stream: string, seq: number) => Promise<void> | void>((v) => typeof v === 'function').optional(),
      /** Called before a partition's worker starts reading (a slow start stands for a slow JetStream API). */
      beforeWorkerStart: z.custom<(workflow: string, partition: number) => Promise<void> | void>((v) => typeof v === 'function').optional(),
      /**
       * Called for each entry the watch of leases and members delivers (`generation` counts the
       * watches opened, from 1); true drops it, standing for a watch that stalled.
       */
      dropWatchEntry: z.custom<(generation: number, key: string) => boolean>((v) => typeof v === 'function').optional(),
    })
    .optional(),
  /** Source of the current time for timers; tests pass a controllable one. Default: `Date.now`. */
  clock: z
    .custom<{ now(): number }>(
      (v) => typeof v === 'object' && v !== null && typeof (v as { now?: unknown }).now === 'function',
      'clock must be { now(): number }',
    )
    .optional(),
  /**
   * Services that run beside the engine and finish tasks out of band, e.g. the Step Functions
   * adapter: `extensions: [stepFunctions({ region })]`.
   */
  extensions: z
    .array(
      z.custom<EngineExtension>(
        (v) => typeof (v as EngineExtension | undefined)?.start === 'function' && typeof (v as EngineExtension).name === 'string',
        'each extension must have a name and start()',
      ),
    )
    .superRefine((xs, ctx) => {
      const seen = new Set<string>();
      for (const x of xs) {
        if (seen.has(x.name)) ctx.addIssue({ code: 'custom', message: `extension '${x.name}' is given twice; give each once` });
        seen.add(x.name);
      }
    })
    .default([]),
  /**
   * Id of this engine process, as leases, logs and `status()` name it (e.g. the host name);
   * defaults to a random one. Give each process its own: two live processes with one id are
   * reported as an error by both (their heartbeats overwrite each other).
   */
  engineId: z.string().regex(NAME_PATTERN, "engineId: 1-128 letters, digits, '_' and '-' (e.g. the host name with other characters replaced)").optional(),
})
  .strict()
  .refine(hasServer, needsServer);

export type ClientOptions = z.input<typeof ClientOptionsSchema>;
export type ResolvedClientOptions = z.output<typeof ClientOptionsSchema>;
export type EngineOptions = z.input<typeof EngineOptionsSchema>;
export type ResolvedEngineOptions = z.output<typeof EngineOptionsSchema>;

/** Options a connection of yours already settles: given beside it, they would be ignored. */
const SET_BY_CONNECTION = ['servers', 'auth', 'inboxPrefix'] as const;

export function parseOptions<S extends z.ZodType>(schema: S, what: string, options: unknown): z.output<S> {
  const given = (options ?? {}) as Record<string, unknown>;
  if (given['connection'] !== undefined) {
    const ignored = SET_BY_CONNECTION.filter((k) => given[k] !== undefined);
    if (ignored.length > 0)
      fail(
        ErrorCode.InvalidOptions,
        `${what} options are not valid: ${ignored.map((k) => `'${k}'`).join(', ')} would be ignored beside a 'connection' (it has its own servers, credentials and reply prefix): set ${ignored.length > 1 ? 'them' : 'it'} where you connect (connect({ servers, inboxPrefix, ... })), or give 'servers' instead of 'connection'`,
      );
  }
  const r = schema.safeParse(options ?? {});
  if (!r.success) {
    // A misspelt option: the one most likely meant.
    for (const issue of r.error.issues) {
      if (issue.code !== 'unrecognized_keys') continue;
      const known = Object.keys(shapeAt(schema, issue.path) ?? {});
      (issue as { message: string }).message = issue.keys
        .map((k) => {
          const near = nearest(k, known);
          return `unknown option '${k}'${near ? `; did you mean '${near}'?` : ''}`;
        })
        .join('; ');
    }
    fail(ErrorCode.InvalidOptions, `${what} options are not valid:\n${z.prettifyError(r.error)}`);
  }
  return r.data;
}

/** The keys of the object schema at `path` in `schema` (through optional, default and pipe), if it is one. */
function shapeAt(schema: z.ZodType, path: readonly PropertyKey[]): Record<string, unknown> | undefined {
  type Node = { shape?: Record<string, unknown>; _zod?: { def?: { innerType?: unknown; in?: unknown } } } | undefined;
  const unwrap = (n: Node): Node => {
    for (let i = 0; i < 10 && n; i++) {
      const def = n._zod?.def;
      const inner = (def?.innerType ?? def?.in) as Node;
      if (!inner) break;
      n = inner;
    }
    return n;
  };
  let node = unwrap(schema as Node);
  for (const p of path) node = unwrap(node?.shape?.[String(p)] as Node);
  return node?.shape;
}
