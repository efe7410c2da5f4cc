/**
 * The engine: a client that also applies events. It owns a fair share of the partitions (see
 * partitions.ts) and runs one {@link PartitionWorker} per owned partition.
 */
import { Client } from './client.js';
import { EngineOptionsSchema, parseOptions, type EngineOptions, type ResolvedEngineOptions } from './options.js';
import { PartitionManager } from './worker/leases.js';
import { PartitionWorker } from './worker/partition-worker.js';
import { openRuntime, type Runtime } from './store/runtime.js';
import { InstanceStore } from './store/records.js';
import { systemClock, TimerService } from './effects/timers.js';
import { ActionExecutor } from './effects/outbox.js';
import { TaskService } from './effects/tasks.js';
import { createExtensionHost, type EngineExtension } from './effects/extensions.js';
import { ErrorCode, fail } from './errors.js';

export interface EngineStatus {
  engineId: string;
  partitions: number;
  owned: number[];
  /** Instances whose events wait because their record cannot be processed. */
  blocked: Array<{ key: string; reason: string }>;
}

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

  private constructor(rt: Runtime, options: ResolvedEngineOptions) {
    super(rt);
    const store = new InstanceStore(rt.instances, rt.registry, rt.security.codec);
    const executor = new ActionExecutor(rt);
    this.timers = new TimerService(rt, options.clock ?? systemClock);
    this.extensions = options.extensions;
    const names = new Set<string>();
    for (const x of this.extensions) {
      if (names.has(x.name)) fail(ErrorCode.InvalidOptions, `createEngine: extension '${x.name}' is given twice; give each once`);
      names.add(x.name);
    }
    this.tasks = new TaskService(rt, options.drainTimeoutMs, new Map(this.extensions.map((x) => [x.name, x])));
    this.manager = new PartitionManager(rt, {
      engineId: options.engineId,
      ttlMs: options.leaseTtlMs,
      drainTimeoutMs: options.drainTimeoutMs,
      startWorker: async (partition, checkpoint) => {
        const worker = new PartitionWorker(rt, store, executor, partition, checkpoint, {
          maxPending: options.maxPendingPerPartition,
          maxBatch: options.maxBatch,
          afterStateWrite: options.testHooks?.afterStateWrite,
          beforeStateWrite: options.testHooks?.beforeStateWrite,
        });
        await worker.start();
        return worker;
      },
    });
  }

  static async create(options: EngineOptions): Promise<Engine> {
    const resolved = parseOptions(EngineOptionsSchema, 'createEngine', options);
    const rt = await openRuntime(resolved);
    const noRing = rt.registry.names().filter((n) => rt.security.codec.has(n) && !rt.security.codec.ring);
    if (noRing.length > 0) {
      if (rt.ownsConnection) await rt.nc.close().catch(() => {});
      fail(ErrorCode.InvalidOptions, `workflow${noRing.length > 1 ? 's' : ''} ${noRing.map((n) => `'${n}'`).join(', ')} declare${noRing.length > 1 ? '' : 's'} secrets; give createEngine the key ring: secrets: { keyRing: process.env.JETSTATE_KEYS } ('id:base64 of 32 random bytes')`);
    }
    const engine = new Engine(rt, resolved);
    try {
      // Independent: claiming partitions, and the shared timer and task consumers.
      await Promise.all([engine.manager.start(), engine.timers.start(), engine.tasks.start()]);
      const host = createExtensionHost(rt, {
        engineId: () => engine.manager.engineId,
        ownedPartitions: () => engine.manager.ownedPartitions(),
        onTaskCancel: (l) => engine.tasks.onCancel(l),
        replicas: resolved.replicas,
      });
      for (const x of engine.extensions) {
        await x.start(host);
        engine.startedExtensions.push(x);
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
    for (const x of this.startedExtensions.splice(0).reverse()) await x.stop().catch((e: Error) => this.rt.logger.warn(`engine stop (extension ${x.name}): ${e.message}`));
    await this.timers.stop().catch((e: Error) => this.rt.logger.warn(`engine stop (timers): ${e.message}`));
    await this.tasks.stop().catch((e: Error) => this.rt.logger.warn(`engine stop (tasks): ${e.message}`));
    await this.manager.stop().catch((e: Error) => this.rt.logger.warn(`engine stop: ${e.message}`));
    await super.shutdown();
  }
}

/** Creates and starts an engine; see {@link Engine}. */
export function createEngine(options: EngineOptions): Promise<Engine> {
  return Engine.create(options);
}
