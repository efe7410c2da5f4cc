/**
 * The shared runtime of a client or engine: the NATS connection, the streams and buckets of the
 * namespace (created on first use, checked afterwards), and the workflow registry.
 */
import { connect } from '@nats-io/transport-node';
import { PermissionViolationError, type NatsConnection } from '@nats-io/nats-core';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { z } from 'zod';
import type { WorkflowDefinition } from '../define/definition.js';
import { ErrorCode, JetstateError, fail } from '../errors.js';
import { layout, type Layout } from '../protocol/names.js';
import type { Logger, ResolvedClientOptions } from '../options.js';
import { decodeJson, encodeJson } from '../protocol/record.js';
import { MachineRunner } from '../step/step.js';
import { Telemetry } from '../telemetry/telemetry.js';
import { describeNatsAuthError, natsConnectionAuth } from '../security/credentials.js';
import { createIdentityVerifier, type IdentityVerifier } from '../security/identity.js';
import { keyRingFromEnv } from '../security/secrets.js';
import { ENGINE_KEY_NAME, EngineSigner, ensureEngineKey } from '../security/signer.js';
import { SecretCodec } from '../security/codec.js';

const NS_PER_MS = 1_000_000;
const DEFAULT_PARTITIONS = 16;

const MetaSchema = z.object({ layoutVersion: z.literal(1), partitions: z.number().int().positive() });

export interface Runtime {
  readonly nc: NatsConnection;
  readonly ownsConnection: boolean;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly names: Layout;
  readonly instances: KV;
  readonly control: KV;
  readonly partitions: number;
  readonly logger: Logger;
  readonly registry: Registry;
  readonly telemetry: Telemetry;
  readonly security: RuntimeSecurity;
}

export interface RuntimeSecurity {
  /** Verifies tokens given to send()/start(); undefined without `identity` options. */
  readonly verifier: IdentityVerifier | undefined;
  /** Seals and opens the `secrets` fields of workflows. */
  readonly codec: SecretCodec;
  /** Signs the events engines publish themselves (timers, task outcomes, sends between instances). */
  readonly signer: EngineSigner;
  readonly limits: ResolvedClientOptions['limits'];
}

/** Workflow versions by name, with one machine runner per version. */
export class Registry {
  private readonly byName = new Map<string, Map<number, { def: WorkflowDefinition; runner: MachineRunner }>>();

  add(def: WorkflowDefinition): void {
    let versions = this.byName.get(def.name);
    if (!versions) this.byName.set(def.name, (versions = new Map()));
    const existing = versions.get(def.version);
    if (existing && existing.def !== def) {
      fail(ErrorCode.InvalidOptions, `workflow '${def.name}' version ${def.version} is registered twice with different definitions; give each change a new version`);
    }
    if (existing) return;
    const runner = new MachineRunner(def.machine);
    versions.set(def.version, { def, runner });
    // Child workflows it invokes run here too.
    for (const child of runner.children.values()) this.add(child);
  }

  find(name: string, version: number): { def: WorkflowDefinition; runner: MachineRunner } | undefined {
    return this.byName.get(name)?.get(version);
  }

  /** Registers `def` if it is new and returns its runner. */
  runnerFor(def: WorkflowDefinition): MachineRunner {
    this.add(def);
    return this.byName.get(def.name)!.get(def.version)!.runner;
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  versions(name: string): Array<{ def: WorkflowDefinition; runner: MachineRunner }> {
    return [...(this.byName.get(name)?.values() ?? [])];
  }
}

export interface OpenRuntimeOptions {
  /**
   * When to read the namespace's signing key from the control bucket: `'now'` for engines (they
   * verify every internal event), `'when-needed'` for clients (only a start that must sign reads
   * it), so that a NATS user that only sends or reads needs no access to the key.
   */
  signingKey?: 'now' | 'when-needed';
}

/**
 * Connects (unless given a connection) and opens the namespace: checks its streams and buckets
 * and creates the missing ones, then reads its layout. On a namespace that exists this only
 * reads (stream info, the `meta` record), so a NATS user with narrow permissions can open it; a
 * permission it lacks is a `PERMISSION_DENIED` error that names the subject.
 */
export async function openRuntime(options: ResolvedClientOptions, open: OpenRuntimeOptions = {}): Promise<Runtime> {
  const names = layout(options.namespace);
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
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    await ensureStream(jsm, names.eventsStream, `${names.namespace}.evt.>`, options.replicas, options.duplicateWindowMs, 0);
    await ensureStream(jsm, names.historyStream, `${names.namespace}.hist.>`, options.replicas, options.duplicateWindowMs, options.historyMaxAgeMs);
    await ensureStream(jsm, names.timersStream, `${names.namespace}.tmr.>`, options.replicas, options.duplicateWindowMs, 0, 'workqueue');
    await ensureStream(jsm, names.tasksStream, `${names.namespace}.task.>`, options.replicas, options.duplicateWindowMs, 0, 'workqueue');
    // Rejected events, kept a week for operators (`jetstate deadletters`).
    await ensureStream(jsm, names.deadLetterStream, `${names.namespace}.dlq.>`, options.replicas, options.duplicateWindowMs, 7 * 24 * 3_600_000);
    const kvm = new Kvm(js);
    const instances = await kvm.create(names.instancesBucket, { history: 1, replicas: options.replicas, storage: 'file' });
    const control = await kvm.create(names.controlBucket, { history: 1, replicas: options.replicas, storage: 'file' });
    const partitions = await ensureMeta(control, options.partitions ?? DEFAULT_PARTITIONS, names.namespace);
    if (options.partitions !== undefined && options.partitions !== partitions) {
      options.logger.warn(`namespace '${names.namespace}' has ${partitions} partitions, fixed when it was created; the configured ${options.partitions} is ignored`);
    }
    const registry = new Registry();
    for (const def of options.workflows) registry.add(def);
    const security: RuntimeSecurity = {
      verifier: options.identity ? createIdentityVerifier(options.identity) : undefined,
      codec: new SecretCodec(registry, typeof options.secrets?.keyRing === 'string' ? keyRingFromEnv(options.secrets.keyRing, { source: 'secrets.keyRing' }) : options.secrets?.keyRing),
      signer: new EngineSigner(() => loadEngineKey(control, names)),
      limits: options.limits,
    };
    if ((open.signingKey ?? 'now') === 'now') await security.signer.ready();
    return { nc, ownsConnection, js, jsm, names, instances, control, partitions, logger: options.logger, registry, telemetry: new Telemetry(options.telemetry), security };
  } catch (e) {
    if (ownsConnection) await nc.close().catch(() => {});
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

/** The NATS permission violation behind `e` (itself or a cause), if there is one. */
export function permissionViolation(e: unknown): PermissionViolationError | undefined {
  for (let c = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) {
    if (c instanceof PermissionViolationError) return c;
  }
  return undefined;
}

async function loadEngineKey(control: KV, names: Layout): Promise<Buffer> {
  try {
    return await ensureEngineKey(control);
  } catch (e) {
    const denied = permissionViolation(e);
    if (!denied) throw e;
    throw new JetstateError(
      ErrorCode.PermissionDenied,
      `[nats.permission] namespace '${names.namespace}': this NATS user may not read (or create) the engine signing key '${ENGINE_KEY_NAME}' in bucket '${names.controlBucket}' ('${denied.subject}'); ` +
        `only engines and starters of workflows whose start runs custom actions or that declare secrets need it: start those from a process allowed to read it (see docs/SECURITY.md, "NATS permissions")`,
      { cause: e },
    );
  }
}

async function ensureStream(
  jsm: JetStreamManager,
  name: string,
  subject: string,
  replicas: number,
  duplicateWindowMs: number,
  maxAgeMs: number,
  retention: 'limits' | 'workqueue' = 'limits',
): Promise<void> {
  try {
    await jsm.streams.info(name);
    return;
  } catch (e) {
    if (!/not found/i.test((e as Error).message)) throw e;
  }
  try {
    await jsm.streams.add({
      name,
      subjects: [subject],
      storage: 'file' as never,
      retention: retention as never,
      num_replicas: replicas,
      // The duplicate window may not exceed max_age.
      duplicate_window: (maxAgeMs > 0 ? Math.min(duplicateWindowMs, maxAgeMs) : duplicateWindowMs) * NS_PER_MS,
      max_age: maxAgeMs * NS_PER_MS,
    });
  } catch (e) {
    // Another process created it first.
    if (!/already in use|exists/i.test((e as Error).message)) throw e;
  }
}

/**
 * The partition count is fixed per namespace: the first process records it, later ones follow.
 * Read first, so opening an existing namespace needs no write to the control bucket.
 */
async function ensureMeta(control: KV, partitions: number, namespace: string): Promise<number> {
  let entry = await control.get('meta');
  if (!entry || entry.operation !== 'PUT') {
    try {
      await control.create('meta', encodeJson({ layoutVersion: 1 as const, partitions }));
      return partitions;
    } catch (e) {
      // Another process created it first: follow it.
      if (!/wrong last sequence|key exists/i.test((e as Error).message)) throw e;
    }
    entry = await control.get('meta');
  }
  if (!entry || entry.operation !== 'PUT') throw new JetstateError(ErrorCode.LayoutMismatch, `namespace '${namespace}': its meta record is missing; delete the namespace's streams and buckets or use another namespace`);
  const parsed = MetaSchema.safeParse(decodeJson(entry.value));
  if (!parsed.success) {
    fail(ErrorCode.LayoutMismatch, `namespace '${namespace}' was created by an incompatible jetstate; use another namespace`);
  }
  return parsed.data.partitions;
}
