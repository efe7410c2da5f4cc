/**
 * The engine: a client that also applies events. It serves the workflows it was given: it takes
 * a fair share of their partitions (see worker/leases.ts) and runs one {@link PartitionWorker}
 * per owned partition, plus the timer and task consumers and its extensions.
 */
import { Client } from './client.js';
import { EngineOptionsSchema, parseOptions, type EngineOptions, type ResolvedEngineOptions } from './options.js';
import { PartitionManager } from './worker/leases.js';
import { PartitionWorker } from './worker/partition-worker.js';
import { Committer } from './worker/commit.js';
import { learnPublishedEntry, SECRETS_KEYS } from './store/secret-paths.js';
import { ENGINE_OPEN_TIMEOUT_MS, ensureWorkflowStreams, openRuntime, waitForJetStream, type Runtime } from './store/runtime.js';
import { isTransient } from './store/nats-errors.js';
import { InstanceStore } from './store/records.js';
import { partitionOf } from './protocol/names.js';
import { TimerService } from './effects/timers.js';
import { ActionExecutor } from './effects/outbox.js';
import { TaskService } from './effects/tasks.js';
import { createExtensionHost } from './effects/extension-host.js';
import type { EngineExtension } from './define/extension.js';
import { systemClock, waitAtMost } from './clock.js';
import { ErrorCode, fail } from './errors.js';

export interface EngineStatus {
  engineId: string;
  partitions: number;
  /** The partitions this engine owns now, by workflow. */
  owned: Array<{ workflow: string; partition: number }>;
  /** Instances whose events wait because their record cannot be processed. */
  blocked: Array<{ key: string; reason: string }>;
}

/** Signatures of engine events older than this at acceptance are refused (at least the duplicate window covers the rest). */
const MIN_SIGNATURE_AGE_MS = 30_000;

/**
 * An engine embedded in your service.
 *
 * @example
 * ```ts
 * const engine = await createEngine({ servers: 'nats://127.0.0.1:4222', workflows: [order] });
 * await engine.start(order, { id: 'o-1', input: { orderId: 'o-1', amount: 10 } });
 * await engine.waitFor(order, 'o-1', (s) => s.matches('paid'), { timeoutMs: 5_000 });
 * await engine.close(); // drains in-flight events
 * ```
 */
export class Engine extends Client {
  private readonly manager: PartitionManager;
  private readonly timers: TimerService;
  private readonly tasks: TaskService;
  private readonly extensions: EngineExtension[];
  private readonly startedExtensions: EngineExtension[] = [];
  /** The workflows (and versions) this engine serves: those it was given, with their child workflows. */
  private readonly served: Map<string, number[]>;
  private readonly committer: Committer;
  private readonly drainTimeoutMs: number;

  private constructor(rt: Runtime, options: ResolvedEngineOptions) {
    super(rt);
    this.served = new Map(
      rt.registry.names().map((n) => [
        n,
        rt.registry
          .versions(n)
          .map((v) => v.def.version)
          .sort((a, b) => a - b),
      ]),
    );
    this.drainTimeoutMs = options.drainTimeoutMs;
    const store = new InstanceStore(rt.records, rt.registry, rt.security.codec);
    const committer = (this.committer = new Committer(rt, store, new ActionExecutor(rt), {
      afterStateWrite: options.testHooks?.afterStateWrite,
      beforeStateWrite: options.testHooks?.beforeStateWrite,
      beforeOutboxMark: options.testHooks?.beforeOutboxMark,
    }));
    // A pulled timer or task comes back to another engine this long after its engine died.
    const ackWaitMs = Math.min(30_000, Math.max(1_000, options.leaseTtlMs));
    this.timers = new TimerService(rt, options.clock ?? systemClock, ackWaitMs);
    this.extensions = options.extensions;
    this.tasks = new TaskService(rt, {
      engineId: () => this.manager.engineId,
      memberLive: (id) => this.manager.liveMembers().has(id),
      localTasks: options.localTasks,
      localHoldMs: options.localHoldMs,
      drainTimeoutMs: options.drainTimeoutMs,
      ackWaitMs,
      extensions: new Map(this.extensions.map((x) => [x.name, x])),
      extensionLive: (name) => [...this.manager.liveMembers().values()].some((m) => m.extensions.includes(name)),
      owns: (workflow, id) => this.manager.owns(workflow, partitionOf(workflow, id, rt.partitions)),
      versionLive: (workflow, version) => [...this.manager.liveMembers().values()].some((m) => m.workflows[workflow]?.includes(version) === true),
    });
    const signatureMaxAgeMs = Math.max(MIN_SIGNATURE_AGE_MS, rt.duplicateWindowMs - Math.min(10_000, rt.duplicateWindowMs / 10));
    this.manager = new PartitionManager(rt, {
      engineId: options.engineId,
      ttlMs: options.leaseTtlMs,
      drainTimeoutMs: options.drainTimeoutMs,
      workflows: () => this.served,
      extensions: this.extensions.map((x) => x.name),
      requiredExtensions: (workflow) => [
        ...new Set(rt.registry.versions(workflow).flatMap((v) => [...v.runner.activities.values()].flatMap((a) => a.options.requires))),
      ],
      beforeTrim: options.testHooks?.beforeTrim,
      beforeWorkerStart: options.testHooks?.beforeWorkerStart,
      dropWatchEntry: options.testHooks?.dropWatchEntry,
      // A newer version's secret paths, published while this engine runs, seal what it writes too.
      // (An engine without a key ring writes what it registers as its definitions say.)
      follow: rt.security.codec.ring ? { keys: [SECRETS_KEYS], entry: (e) => learnPublishedEntry(rt, e.key, e.operation, e.value) } : undefined,
      createWorker: (workflow, partition, checkpoint) => {
        // Another engine may have owned the partition since this one cached its instances.
        store.invalidateWhere((r) => r.workflow === workflow && partitionOf(workflow, r.id, rt.partitions) === partition);
        const ctx = {
          rt,
          store,
          committer,
          stream: rt.names.eventStream(workflow, partition),
          partition,
          signatureMaxAgeMs,
          tasks: options.localTasks > 0 ? this.tasks : undefined,
          keyLive: (keyId: string) => [...this.manager.liveMembers().values()].some((m) => m.keyIds.includes(keyId)),
        };
        return new PartitionWorker(rt, ctx, workflow, partition, checkpoint, {
          maxPending: options.maxPendingPerPartition,
          maxBatch: options.maxBatch,
          engineId: this.manager.engineId,
        });
      },
    });
  }

  static async create(options: EngineOptions): Promise<Engine> {
    const resolved = parseOptions(EngineOptionsSchema, 'createEngine', options);
    const started = Date.now();
    const openTimeoutMs = resolved.openTimeoutMs ?? ENGINE_OPEN_TIMEOUT_MS;
    // Once the namespace has opened, JetStream has answered: a request that then times out or finds
    // no responder (a stream without a leader yet) is an election still going on, and the engine
    // starts again from the beginning while time is left. Before that, openRuntime judges.
    let opened = false;
    return waitForJetStream(
      async () => {
        opened = false;
        const rt = await openRuntime({ ...resolved, openTimeoutMs: Math.max(0, openTimeoutMs - (Date.now() - started)) }, { engine: true });
        opened = true;
        return Engine.start(rt, resolved);
      },
      // A connection the caller gave, and closed, does not come back.
      (e) => opened && isTransient(e) && !resolved.connection?.isClosed(),
      { namespace: resolved.namespace, logger: resolved.logger, openTimeoutMs, started, doing: 'to start the engine' },
    );
  }

  private static async start(rt: Runtime, resolved: ResolvedEngineOptions): Promise<Engine> {
    const noRing = rt.registry.names().filter((n) => rt.security.codec.has(n) && !rt.security.codec.ring);
    if (noRing.length > 0) {
      if (rt.ownsConnection) await rt.nc.close().catch(() => {});
      fail(
        ErrorCode.InvalidOptions,
        `workflow${noRing.length > 1 ? 's' : ''} ${noRing.map((n) => `'${n}'`).join(', ')} declare${noRing.length > 1 ? '' : 's'} secrets; give createEngine the key ring: secrets: { keyRing: process.env.JETSTATE_KEYS } ('id:base64 of 32 random bytes')`,
      );
    }
    const engine = new Engine(rt, resolved);
    try {
      // The events streams of every workflow served here, then the partitions, timers and tasks.
      await Promise.all(rt.registry.names().map((w) => ensureWorkflowStreams(rt, w)));
      // All three settled before a failure closes the engine: one still starting would go on
      // (a reader made after the close) with nothing left to stop it.
      const failed = (await Promise.allSettled([engine.manager.start(), engine.timers.start(), engine.tasks.start()])).flatMap((s) =>
        s.status === 'rejected' ? [s.reason as unknown] : [],
      );
      // A lasting failure is what the caller must see (a transient one beside it would be retried).
      const first = failed.find((e) => !isTransient(e)) ?? failed[0];
      for (const e of failed) if (e !== first) rt.logger.warn(`engine start: ${(e as Error).message}`);
      if (failed.length > 0) throw first;
      const host = createExtensionHost(rt, {
        engineId: () => engine.manager.engineId,
        owns: (workflow, partition) => engine.manager.owns(workflow, partition),
        onTaskCancel: (l) => engine.tasks.onCancel(l),
        taskOver: (ref) => engine.tasks.taskOver(ref),
        replicas: rt.replicas,
      });
      for (const x of engine.extensions) {
        // Stopped with the others if its own start fails halfway.
        engine.startedExtensions.push(x);
        await x.start(host);
      }
    } catch (e) {
      await engine.close();
      throw e;
    }
    return engine;
  }

  get engineId(): string {
    return this.manager.engineId;
  }

  status(): EngineStatus {
    return {
      engineId: this.manager.engineId,
      partitions: this.rt.partitions,
      owned: this.manager.ownedPartitions(),
      blocked: this.manager.workers().flatMap((w) => w.blockedInstances()),
    };
  }

  /** Stops intake, drains in-flight events (up to `drainTimeoutMs`), releases partitions, closes. */
  protected override async shutdown(): Promise<void> {
    for (const x of this.startedExtensions.splice(0).reverse())
      await x.stop().catch((e: Error) => this.rt.logger.warn(`engine stop (extension ${x.name}): ${e.message}`));
    await this.timers.stop().catch((e: Error) => this.rt.logger.warn(`engine stop (timers): ${e.message}`));
    await this.tasks.stop().catch((e: Error) => this.rt.logger.warn(`engine stop (tasks): ${e.message}`));
    await this.manager.stop().catch((e: Error) => this.rt.logger.warn(`engine stop: ${e.message}`));
    // History published after the last writes, before the connection goes; what the stream has
    // not stored by the drain timeout stays in the records (the next owner's repair publishes it).
    await waitAtMost(this.committer.flush(), this.drainTimeoutMs);
    this.committer.close();
    await super.shutdown();
  }
}

/** Creates and starts an engine; see {@link Engine}. */
export function createEngine(options: EngineOptions): Promise<Engine> {
  return Engine.create(options);
}
