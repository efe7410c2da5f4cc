/**
 * The shared runtime of a client or engine: the NATS connection, the streams and buckets of the
 * namespace (created on first use, checked afterwards), and the workflow registry.
 */
import { connect } from '@nats-io/transport-node';
import { headers as natsHeaders, type NatsConnection } from '@nats-io/nats-core';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager, type PubAck, type StreamConfig } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { z } from 'zod';
import { ErrorCode, JetstateError, fail } from '../errors.js';
import type { Logger } from '../logger.js';
import { LAYOUT_VERSION, layout, shardOf, type Layout } from '../protocol/names.js';
import { decodeJson, encodeJson } from '../protocol/json.js';
import { KV_OPERATION_HEADER } from '../protocol/headers.js';
import type { DeleteNote } from '../protocol/record.js';
import { Registry } from '../step/registry.js';
import { Telemetry } from '../telemetry/telemetry.js';
import { describeNatsAuthError, natsConnectionAuth } from '../security/credentials.js';
import { createIdentityVerifier } from '../security/identity.js';
import { keyRingFromEnv } from '../security/secrets.js';
import { ENGINE_KEY_NAME, EngineSigner, ensureEngineKey } from '../security/signer.js';
import { SecretCodec } from '../security/codec.js';
import { DEFAULT_DUPLICATE_WINDOW_MS, type ResolvedClientOptions } from '../options.js';
import type { GateSecurity } from '../gate/event-gate.js';
import { AckPublisher, type AckPublishOptions } from './ack-publisher.js';
import { publishSecretPaths } from './secret-paths.js';
import { isAlreadyExists, isCasConflict, isNoResponders, isStreamNotFound, isTransient, permissionViolation } from './nats-errors.js';

const NS_PER_MS = 1_000_000;
const DEFAULT_PARTITIONS = 16;
/** Record buckets of a new namespace: four streams fsync about three times as many writes as one. */
const DEFAULT_SHARDS = 4;
/** A record write's answer wait: jetstream()'s default publish timeout. */
const PUBLISH_TIMEOUT_MS = 5_000;

const MetaSchema = z.object({ layoutVersion: z.number().int(), partitions: z.number().int().positive(), shards: z.number().int().positive().default(1) });

export interface Runtime {
  readonly nc: NatsConnection;
  readonly ownsConnection: boolean;
  /** Where this connection's replies arrive (`_INBOX` unless configured per user). */
  readonly inboxPrefix: string;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  /** Subject prefix of the JetStream API: `$JS.API`, or `$JS.<domain>.API` with `jsDomain`. */
  readonly jsApiPrefix: string;
  /** The JetStream domain named in the options, if any. */
  readonly jsDomain: string | undefined;
  /** With `relayDomain`: where `send()` queues events for the site's engines to relay. */
  readonly relay: RelayTarget | undefined;
  readonly names: Layout;
  /** The instance records, spread over `shards` KV buckets by partition. */
  readonly records: RecordBuckets;
  /**
   * A JetStream publish answered on one subscription (see ack-publisher.ts): the engine's and
   * client's publishes on the hot path (record writes, history, inbox events) go through it.
   */
  publish(subject: string, data: Uint8Array, options?: AckPublishOptions): Promise<PubAck>;
  readonly control: KV;
  readonly partitions: number;
  readonly replicas: number;
  readonly duplicateWindowMs: number;
  readonly logger: Logger;
  readonly registry: Registry;
  readonly telemetry: Telemetry;
  readonly security: RuntimeSecurity;
}

/** The relay stream of a namespace in another JetStream domain (see docs/EDGE.md). */
export interface RelayTarget {
  readonly domain: string;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
}

/** Token verification, secrets, engine signatures and limits (see gate/event-gate.ts). */
export type RuntimeSecurity = GateSecurity;

/** The KV buckets of the instance records. */
export interface RecordBuckets {
  readonly shards: number;
  /** Every shard's bucket, in shard order. */
  readonly all: readonly KV[];
  /** The bucket that holds this instance's record. */
  of(workflow: string, id: string): KV;
  /** The bucket of a record key (`<workflow>.<id>`). */
  ofKey(key: string): KV;
  /**
   * Compare-and-set of a record that exists (the engine's write per step): `kv.update()` without
   * nats.js's per-request costs (see ack-publisher.ts). Resolves with the new revision.
   */
  update(key: string, value: Uint8Array, revision: number): Promise<number>;
  /**
   * Creates a record (the engine's write for a new instance): compare-and-set on an empty key, or
   * on the delete or purge marker at revision `over` (an earlier instance's). Fails with the
   * compare-and-set error when the key holds anything else. Resolves with the new revision.
   */
  create(key: string, value: Uint8Array, over?: number): Promise<number>;
  /**
   * Deletes a record (compare-and-set on `revision`) with a delete marker that says where the
   * delete was in its partition stream (see {@link DeleteNote}). Resolves with the marker's revision.
   */
  remove(key: string, revision: number, note: DeleteNote): Promise<number>;
  /** Fails what `update` (and the runtime's `publish`) still waits for; the connection stays open. */
  close(): void;
}

export interface OpenRuntimeOptions {
  /** Engines load the signing key when they open; clients never need it. */
  engine?: boolean;
}

/**
 * Connects (unless given a connection) and opens the namespace: checks its shared streams and
 * buckets and creates the missing ones (the events streams of a workflow are created by the
 * engines that serve it), then reads its layout. On a namespace that exists this only reads, so a
 * NATS user with narrow permissions can open it; a permission it lacks is a `PERMISSION_DENIED`
 * error that names the subject.
 */
export async function openRuntime(options: ResolvedClientOptions, open: OpenRuntimeOptions = {}): Promise<Runtime> {
  const names = layout(options.namespace);
  // Options that can be wrong are read before anything connects: their error, not NATS's, is what the user sees.
  const early: EarlyParts = {
    verifier: options.identity ? createIdentityVerifier(options.identity) : undefined,
    keyRing: typeof options.secrets?.keyRing === 'string' ? keyRingFromEnv(options.secrets.keyRing, { source: 'secrets.keyRing' }) : options.secrets?.keyRing,
  };
  let nc: NatsConnection;
  const ownsConnection = options.connection === undefined;
  if (options.connection) {
    nc = options.connection;
  } else {
    try {
      nc = await connect({
        servers: options.servers,
        name: options.name,
        ...natsConnectionAuth(options.auth, options.logger),
        // Replies (signing key reads, publish acks) come to this prefix: with per-user prefixes and
        // permissions no other NATS user can read them (see docs/SECURITY.md).
        ...(options.inboxPrefix ? { inboxPrefix: options.inboxPrefix } : {}),
        // Building an Error per request for async stack traces costs ~40% of client CPU.
        noAsyncTraces: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
      });
    } catch (e) {
      const hint = describeNatsAuthError(e, options.auth) ?? 'start nats-server with JetStream (-js) or pass --server/NATS_URL';
      throw new JetstateError(ErrorCode.Closed, `cannot connect to NATS at ${String(options.servers)}: ${(e as Error).message}; ${hint}`, { cause: e });
    }
  }
  try {
    return await waitForJetStream(() => openNamespace(nc, ownsConnection, options, open, early), isElection, {
      namespace: names.namespace,
      logger: options.logger,
      openTimeoutMs: options.openTimeoutMs ?? (open.engine ? ENGINE_OPEN_TIMEOUT_MS : 0),
    });
  } catch (e) {
    if (ownsConnection) await nc.close().catch(() => {});
    throw e;
  }
}

/** How long an engine waits for JetStream when it opens, unless `openTimeoutMs` says otherwise. */
export const ENGINE_OPEN_TIMEOUT_MS = 120_000;

/**
 * Runs `attempt` again while it fails in a way `retryable` calls passing (JetStream cannot answer
 * yet: a cluster electing its leaders, a node restarting), backing off from 250 ms to 5 s, for up
 * to `openTimeoutMs` from `started`; logs why it waits. Other errors, and the last one, are thrown.
 */
export async function waitForJetStream<T>(
  attempt: () => Promise<T>,
  retryable: (e: unknown) => boolean,
  o: { namespace: string; logger: Logger; openTimeoutMs: number; started?: number; doing?: string },
): Promise<T> {
  const started = o.started ?? Date.now();
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (e) {
      const waited = Date.now() - started;
      if (!retryable(e) || waited >= o.openTimeoutMs) throw e;
      const delay = Math.min(250 * 2 ** (n - 1), 5_000, o.openTimeoutMs - waited);
      o.logger.warn(
        `namespace '${o.namespace}': waiting for JetStream${o.doing ? ` ${o.doing}` : ''} (${(e as Error).message}; a cluster electing its leaders or a node restarting, ` +
          `or, if it lasts, more replicas asked for than the cluster can place); ` +
          `trying again in ${delay} ms, for up to ${o.openTimeoutMs} ms in all (openTimeoutMs)`,
      );
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/**
 * JetStream cannot answer yet but will: a request timed out, or the stream, consumer or cluster
 * has no leader. Not "no responders": a server without JetStream never answers.
 */
function isElection(e: unknown): boolean {
  if (e instanceof JetstateError || isNoResponders(e)) return false;
  return isTransient(e);
}

/** What the runtime builds from its options before it connects. */
interface EarlyParts {
  verifier: RuntimeSecurity['verifier'];
  keyRing: ConstructorParameters<typeof SecretCodec>[1];
}

async function openNamespace(
  nc: NatsConnection,
  ownsConnection: boolean,
  options: ResolvedClientOptions,
  open: OpenRuntimeOptions,
  early: EarlyParts,
): Promise<Runtime> {
  const names = layout(options.namespace);
  try {
    // Every JetStream client of the runtime goes through this domain (extensions get these too).
    const domainOpts = options.jsDomain ? { domain: options.jsDomain } : {};
    const js = jetstream(nc, domainOpts);
    const jsm = await jetstreamManager(nc, domainOpts);
    if (options.jsDomain && !open.engine) await requireNamespace(js, jsm, names, options.jsDomain);
    const relayDomain = options.relayDomain;
    let relay: RelayTarget | undefined;
    if (relayDomain) {
      relay = { domain: relayDomain, js: jetstream(nc, { domain: relayDomain }), jsm: await jetstreamManager(nc, { domain: relayDomain }) };
      await ensureRelayStream(relay.jsm, names, options.replicas, options.duplicateWindowMs);
    }
    const stream = (name: string, subject: string, maxAgeMs: number, retention: 'limits' | 'workqueue' = 'limits'): Promise<StreamConfig> =>
      ensureStream(jsm, { name, subjects: [subject], retention: retention as never, ...common(options.replicas, options.duplicateWindowMs, maxAgeMs) });
    const history = await stream(names.historyStream, `${names.namespace}.hist.>`, options.historyMaxAgeMs);
    const historyAgeMs = Math.round(history.max_age / NS_PER_MS);
    await stream(names.timersStream, `${names.namespace}.tmr.>`, 0, 'workqueue');
    // The namespace's replicas and duplicate window are what its first process chose: streams made
    // later (a new workflow's) follow them, and signed messages are judged by that window.
    const tasks = await stream(names.tasksStream, `${names.namespace}.task.>`, 0, 'workqueue');
    const namespaceWindowMs = Math.round(tasks.duplicate_window / NS_PER_MS);
    // Said when this process asked for something else than the defaults (a client that asked for
    // nothing follows quietly).
    const differs = [
      ...(options.replicas !== 1 && tasks.num_replicas !== options.replicas ? [`replicas ${tasks.num_replicas} (asked: ${options.replicas})`] : []),
      ...(options.duplicateWindowMs !== DEFAULT_DUPLICATE_WINDOW_MS && namespaceWindowMs !== options.duplicateWindowMs
        ? [`duplicateWindowMs ${namespaceWindowMs} (asked: ${options.duplicateWindowMs})`]
        : []),
      ...(options.historyMaxAgeMs !== 0 && historyAgeMs !== options.historyMaxAgeMs
        ? [`historyMaxAgeMs ${historyAgeMs} (asked: ${options.historyMaxAgeMs})`]
        : []),
    ];
    if (differs.length > 0)
      options.logger.warn(
        `namespace '${names.namespace}' exists with ${differs.join(', ')}: its settings stand, and the streams made here follow them; ` +
          `to change them, edit its streams (e.g. nats stream edit) or use a new namespace`,
      );
    // Rejected events, kept a week for operators (`jetstate deadletters`).
    await stream(names.deadLetterStream, `${names.namespace}.dlq.>`, 7 * 24 * 3_600_000);
    const kvm = new Kvm(js);
    const control = await kvm.create(names.controlBucket, { history: 1, replicas: options.replicas, storage: 'file' });
    const { partitions, shards } = await ensureMeta(control, options.partitions ?? DEFAULT_PARTITIONS, options.recordShards ?? DEFAULT_SHARDS, names.namespace);
    const buckets = await Promise.all(
      Array.from({ length: shards }, (_, s) => kvm.create(names.instancesShard(s), { history: 1, replicas: options.replicas, storage: 'file' })),
    );
    const of = (workflow: string, id: string): KV => buckets[shardOf(workflow, id, partitions, shards)]!;
    const shardOfKey = (key: string): number => {
      const dot = key.indexOf('.');
      return shardOf(key.slice(0, dot), key.slice(dot + 1), partitions, shards);
    };
    // A KV write names its bucket's subject, through the domain's API prefix in another domain (as @nats-io/kv does).
    const kvPrefixes = Array.from({ length: shards }, (_, s) => `${options.jsDomain ? `$JS.${options.jsDomain}.API.` : ''}$KV.${names.instancesShard(s)}.`);
    const inboxPrefix = (nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix || '_INBOX';
    let acks: AckPublisher | undefined;
    const publish = (subject: string, data: Uint8Array, o?: AckPublishOptions): Promise<PubAck> =>
      (acks ??= new AckPublisher(nc, inboxPrefix, PUBLISH_TIMEOUT_MS)).publish(subject, data, o);
    const records: RecordBuckets = {
      shards,
      all: buckets,
      of,
      ofKey: (key) => buckets[shardOfKey(key)]!,
      update: async (key, value, revision) => (await publish(kvPrefixes[shardOfKey(key)]! + key, value, { expectLastSubjectSequence: revision })).seq,
      create: async (key, value, over = 0) => (await publish(kvPrefixes[shardOfKey(key)]! + key, value, { expectLastSubjectSequence: over })).seq,
      remove: async (key, revision, note) => {
        // A KV delete as nats.js writes one (readers see the key deleted), carrying the note.
        const headers = natsHeaders();
        headers.set(KV_OPERATION_HEADER, 'DEL');
        return (await publish(kvPrefixes[shardOfKey(key)]! + key, encodeJson(note), { expectLastSubjectSequence: revision, headers })).seq;
      },
      close: () => acks?.close(),
    };
    if (options.partitions !== undefined && options.partitions !== partitions) {
      options.logger.warn(
        `namespace '${names.namespace}' has ${partitions} partitions, fixed when it was created; the configured ${options.partitions} is ignored`,
      );
    }
    if (options.recordShards !== undefined && options.recordShards !== shards) {
      options.logger.warn(
        `namespace '${names.namespace}' has ${shards} record shards, fixed when it was created; the configured ${options.recordShards} is ignored`,
      );
    }
    const registry = new Registry();
    for (const def of options.workflows) registry.add(def);
    const security: RuntimeSecurity = {
      verifier: early.verifier,
      codec: new SecretCodec((wf) => registry.secretPaths(wf), early.keyRing),
      signer: new EngineSigner(() => loadEngineKey(control, names)),
      limits: options.limits,
    };
    // A version registered later may declare more secret paths.
    registry.onAdd(() => security.codec.refresh());
    if (open.engine) await security.signer.ready();
    return {
      nc,
      ownsConnection,
      inboxPrefix,
      js,
      jsm,
      jsApiPrefix: options.jsDomain ? `$JS.${options.jsDomain}.API` : '$JS.API',
      jsDomain: options.jsDomain,
      relay,
      names,
      records,
      publish,
      control,
      partitions,
      replicas: tasks.num_replicas,
      duplicateWindowMs: namespaceWindowMs,
      logger: options.logger,
      registry,
      telemetry: new Telemetry(options.telemetry),
      security,
    };
  } catch (e) {
    const denied = permissionViolation(e);
    if (denied && !(e instanceof JetstateError)) {
      throw new JetstateError(
        ErrorCode.PermissionDenied,
        `[nats.permission] namespace '${names.namespace}': this NATS user may not ${denied.operation === 'subscription' ? 'subscribe to' : 'publish to'} '${denied.subject}', which opening the namespace needs; ` +
          `an engine creates a missing namespace (start one first), and docs/SECURITY.md ("NATS permissions") lists what each role needs`,
        { cause: e },
      );
    }
    throw e;
  }
}

/**
 * A client that names a JetStream domain reads (or sends to) a namespace some engine made there:
 * creating its streams and buckets would only make an empty second namespace in that domain,
 * which every read would then silently show as empty.
 */
async function requireNamespace(js: JetStreamClient, jsm: JetStreamManager, names: Layout, domain: string): Promise<void> {
  const missing = (): never =>
    fail(
      ErrorCode.NamespaceNotFound,
      `namespace '${names.namespace}' does not exist in JetStream domain '${domain}' (no '${names.controlBucket}' bucket with its meta record there); ` +
        `start an engine of that namespace in that domain first, or check the namespace and jsDomain (--domain) given`,
    );
  let allowDirect = false;
  try {
    allowDirect = (await jsm.streams.info(`KV_${names.controlBucket}`)).config.allow_direct === true;
  } catch (e) {
    if (isStreamNotFound(e)) missing();
    throw e;
  }
  // A direct get, as when the bucket is opened for use: a bound bucket would read with
  // STREAM.MSG.GET, a right that reads every control key (the signing key too), not only meta.
  const meta = await (await new Kvm(js).open(names.controlBucket, { allow_direct: allowDirect })).get('meta');
  if (!meta || meta.operation !== 'PUT') missing();
}

/**
 * The relay stream of a namespace (in the hub's domain): kept until the site's relay has moved
 * its events on (it purges what it relayed); direct gets let the relay read it without a
 * consumer, which survives a link that comes and goes. Created by hub-side clients and by the relay.
 */
export async function ensureRelayStream(jsm: JetStreamManager, names: Layout, replicas: number, duplicateWindowMs: number): Promise<void> {
  await ensureStream(jsm, {
    name: names.relayStream,
    subjects: [`${names.namespace}.relay.>`],
    retention: 'limits' as never,
    allow_direct: true,
    ...common(replicas, duplicateWindowMs, 0),
  });
}

/** Storage, replicas, duplicate window and age of the streams jetstate creates. */
function common(replicas: number, duplicateWindowMs: number, maxAgeMs: number): Partial<StreamConfig> {
  return {
    storage: 'file' as never,
    num_replicas: replicas,
    // The duplicate window may not exceed max_age.
    duplicate_window: (maxAgeMs > 0 ? Math.min(duplicateWindowMs, maxAgeMs) : duplicateWindowMs) * NS_PER_MS,
    max_age: maxAgeMs * NS_PER_MS,
  };
}

/**
 * Creates the events streams of a workflow, one per partition, if they are not there yet. Engines
 * call it for every workflow they serve; a client publishing to a workflow no engine ever served
 * finds no stream and is told so (see inbox.ts).
 */
export async function ensureWorkflowStreams(rt: Runtime, workflow: string): Promise<void> {
  // Before the streams: a sender that finds them finds the paths it must seal too.
  await publishSecretPaths(rt, workflow);
  await Promise.all(
    Array.from({ length: rt.partitions }, (_, p) =>
      ensureStream(rt.jsm, {
        name: rt.names.eventStream(workflow, p),
        subjects: [rt.names.eventStreamSubject(workflow, p)],
        retention: 'limits' as never,
        ...common(rt.replicas, rt.duplicateWindowMs, 0),
      }),
    ),
  );
}

/** The stream's configuration, as found or as created. */
async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<StreamConfig> {
  try {
    return (await jsm.streams.info(config.name)).config;
  } catch (e) {
    if (!isStreamNotFound(e)) throw e;
  }
  try {
    return (await jsm.streams.add(config)).config;
  } catch (e) {
    // Another process created it first.
    if (!isAlreadyExists(e)) throw e;
    return (await jsm.streams.info(config.name)).config;
  }
}

/**
 * The partition count is fixed per namespace: the first process records it, later ones follow.
 * Read first, so opening an existing namespace needs no write to the control bucket.
 */
async function ensureMeta(control: KV, partitions: number, shards: number, namespace: string): Promise<{ partitions: number; shards: number }> {
  let entry = await control.get('meta');
  if (!entry || entry.operation !== 'PUT') {
    try {
      await control.create('meta', encodeJson({ layoutVersion: LAYOUT_VERSION, partitions, shards }));
      return { partitions, shards };
    } catch (e) {
      // Another process created it first: follow it.
      if (!isCasConflict(e)) throw e;
    }
    entry = await control.get('meta');
  }
  if (!entry || entry.operation !== 'PUT')
    throw new JetstateError(
      ErrorCode.LayoutMismatch,
      `namespace '${namespace}': its meta record is missing; delete the namespace's streams and buckets or use another namespace`,
    );
  const parsed = MetaSchema.safeParse(decodeJson(entry.value));
  if (!parsed.success) fail(ErrorCode.LayoutMismatch, `namespace '${namespace}' was created by an incompatible jetstate; use another namespace`);
  if (parsed.data.layoutVersion !== LAYOUT_VERSION) {
    fail(
      ErrorCode.LayoutMismatch,
      `namespace '${namespace}' has layout version ${parsed.data.layoutVersion}, this jetstate uses ${LAYOUT_VERSION} (one events stream per workflow partition); ` +
        `let the engines of the old version apply every pending event, then use a new namespace (docs/OPERATIONS.md, "Upgrading")`,
    );
  }
  return { partitions: parsed.data.partitions, shards: parsed.data.shards };
}

async function loadEngineKey(control: KV, names: Layout): Promise<Buffer> {
  try {
    return await ensureEngineKey(control, isCasConflict);
  } catch (e) {
    const denied = permissionViolation(e);
    if (!denied) throw e;
    throw new JetstateError(
      ErrorCode.PermissionDenied,
      `[nats.permission] namespace '${names.namespace}': this NATS user may not read (or create) the engine signing key '${ENGINE_KEY_NAME}' in bucket '${names.controlBucket}' ('${denied.subject}'); ` +
        `only engines need it: run engines as a NATS user allowed to read it (see docs/SECURITY.md, "NATS permissions")`,
      { cause: e },
    );
  }
}

/**
 * Drains a connection this library opened, or closes it when draining fails or takes longer than
 * `timeoutMs` (a server that is gone: a drain refused while reconnecting would leave the
 * connection reconnecting for ever, and the process running).
 */
export async function closeConnection(nc: NatsConnection, timeoutMs = 5_000): Promise<void> {
  if (nc.isClosed()) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const drained = await Promise.race([
    nc.drain().then(
      () => true,
      () => false,
    ),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (!drained || !nc.isClosed()) await nc.close().catch(() => {});
}
