/**
 * A jetstate engine in its own process, for the recovery tests: they SIGKILL it, restart it and
 * let it crash at exact points.
 *
 *   node --import tsx test/recovery/engine-process.ts --nats nats://127.0.0.1:4222 \
 *     --namespace ns [--lease-ttl 1000] [--partitions 16] [--crash-after-writes N] [--engine-id id]
 *     [--max-pending N] [--crash-before-writes N] [--workflows a.ts,b.ts] [--duplicate-window ms]
 *     [--replicas N]
 *
 * Every option may also come from the environment: NATS_URL, JETSTATE_NAMESPACE, LEASE_TTL_MS,
 * PARTITIONS, CRASH_AFTER_WRITES, ENGINE_ID, MAX_PENDING (maxPendingPerPartition).
 * `--nats` may list several servers of a cluster, comma-separated. `--workflows` names modules
 * whose exported workflow definitions are all registered (default: the counter workflow).
 *
 * Lines on stdout (one JSON object after a word):
 *   READY {"engineId","pid"}      the engine is created and has taken its first partitions
 *   CRASH {"key","revision","writes"}  printed synchronously right before SIGKILLing itself in
 *                                 the window after a state write and before its history publish
 *   CLOSED {"engineId"}           after a clean close on SIGTERM/SIGINT (exit code 0)
 *   WROTE {"key","revision"}      with --report-writes: after every state write (durable)
 */
import { writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { createEngine, isWorkflowDefinition, type WorkflowDefinition } from '../../engine/index.js';
import { counter } from './counter-workflow.js';

const { values } = parseArgs({
  options: {
    nats: { type: 'string' },
    namespace: { type: 'string' },
    'lease-ttl': { type: 'string' },
    partitions: { type: 'string' },
    'crash-after-writes': { type: 'string' },
    'crash-before-writes': { type: 'string' },
    'engine-id': { type: 'string' },
    'max-pending': { type: 'string' },
    workflows: { type: 'string' },
    'duplicate-window': { type: 'string' },
    replicas: { type: 'string' },
    'report-writes': { type: 'boolean' },
  },
  strict: true,
});

const env = process.env;
const url = values.nats ?? env['NATS_URL'];
const namespace = values.namespace ?? env['JETSTATE_NAMESPACE'];
const leaseTtlMs = Number(values['lease-ttl'] ?? env['LEASE_TTL_MS'] ?? 1_000);
const partitions = Number(values.partitions ?? env['PARTITIONS'] ?? 16);
const crashRaw = values['crash-after-writes'] ?? env['CRASH_AFTER_WRITES'];
const crashAfterWrites = crashRaw === undefined || crashRaw === '' ? 0 : Number(crashRaw);
const crashBeforeWrites = Number(values['crash-before-writes'] ?? 0);
const engineId = values['engine-id'] ?? env['ENGINE_ID'];
const maxPendingRaw = values['max-pending'] ?? env['MAX_PENDING'];
const duplicateWindowRaw = values['duplicate-window'];
const replicasRaw = values.replicas;

if (!url || !namespace) {
  console.error('engine-process: give --nats and --namespace (or NATS_URL and JETSTATE_NAMESPACE)');
  process.exit(2);
}

/** Synchronous, so that the line is out before a SIGKILL. */
const say = (word: string, fields: Record<string, unknown>): void => {
  writeSync(1, `${word} ${JSON.stringify(fields)}\n`);
};

let writes = 0;
let attempts = 0;
const beforeStateWrite = (key: string, revision: number): void => {
  if (revision === 1) return;
  attempts++;
  if (crashBeforeWrites > 0 && attempts === crashBeforeWrites) {
    say('CRASH', { key, revision, writes: attempts - 1 });
    // The event was read and applied in memory; nothing of it is written. Die exactly here.
    process.kill(process.pid, 'SIGKILL');
  }
};
const reportWrites = values['report-writes'] === true;
const afterStateWrite = (key: string, revision: number): void => {
  if (reportWrites) say('WROTE', { key, revision });
  // Writes of events: an instance's creation (revision 1, from its start) does not count.
  if (revision === 1) return;
  writes++;
  if (crashAfterWrites > 0 && writes === crashAfterWrites) {
    say('CRASH', { key, revision, writes });
    // The state write is durable; its history is not published yet. Die exactly here.
    process.kill(process.pid, 'SIGKILL');
  }
};

/** Every workflow definition the given modules export; the counter when none is given. */
async function loadWorkflows(list: string | undefined): Promise<WorkflowDefinition[]> {
  if (!list) return [counter];
  const found: WorkflowDefinition[] = [];
  for (const path of list.split(',').filter(Boolean)) {
    const mod = (await import(pathToFileURL(isAbsolute(path) ? path : resolve(path)).href)) as Record<string, unknown>;
    for (const v of Object.values(mod)) if (isWorkflowDefinition(v) && !found.includes(v)) found.push(v);
  }
  return found;
}

/**
 * With $JETSTATE_RECOVERY_TRACE set, every log line (info included) goes to stderr with the wall
 * clock and pid, so that a scenario's engines can be laid next to its servers' events.
 */
const traced = Boolean(env['JETSTATE_RECOVERY_TRACE']);
const traceLine =
  (level: string) =>
  (m: string, f?: Record<string, unknown>): void => {
    writeSync(2, `${Date.now()} pid ${process.pid} ${level} ${m}${f ? ` ${JSON.stringify(f)}` : ''}\n`);
  };
const logger = traced ? { debug: () => {}, info: traceLine('info'), warn: traceLine('warn'), error: traceLine('error') } : undefined;
const startedAt = Date.now();
if (traced) traceLine('info')(`process up after ${Math.round(performance.now())} ms`);

/**
 * Traced, the engine gets a connection of ours whose requests (JetStream API calls, publishes)
 * are logged when they fail or take over a second: where a start or a worker waits.
 */
async function tracedConnection(): Promise<NatsConnection> {
  const nc = await connect({
    servers: url!.split(','),
    name: `recovery-engine-${process.pid}`,
    noAsyncTraces: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
  });
  const request = nc.request.bind(nc);
  nc.request = async (subject, payload, opts) => {
    const began = Date.now();
    try {
      const m = await request(subject, payload, opts);
      if (Date.now() - began > 1_000) traceLine('info')(`request ${subject} took ${Date.now() - began} ms`);
      return m;
    } catch (e) {
      traceLine('info')(`request ${subject} failed after ${Date.now() - began} ms: ${(e as Error).message}`);
      throw e;
    }
  };
  void (async () => {
    for await (const s of nc.status()) traceLine('info')(`connection ${s.type} ${JSON.stringify((s as { server?: unknown }).server ?? '')}`);
  })();
  return nc;
}

const engine = await createEngine({
  ...(logger ? { logger, connection: await tracedConnection() } : { servers: url.includes(',') ? url.split(',') : url }),
  namespace,
  partitions,
  workflows: await loadWorkflows(values.workflows),
  leaseTtlMs,
  ...(duplicateWindowRaw ? { duplicateWindowMs: Number(duplicateWindowRaw) } : {}),
  ...(replicasRaw ? { replicas: Number(replicasRaw) } : {}),
  drainTimeoutMs: 5_000,
  name: `recovery-engine-${process.pid}`,
  ...(engineId ? { engineId } : {}),
  ...(maxPendingRaw ? { maxPendingPerPartition: Number(maxPendingRaw) } : {}),
  testHooks: { afterStateWrite, beforeStateWrite },
});

let closing = false;
const shutdown = (): void => {
  if (closing) return;
  closing = true;
  // Bounded: a close that hangs must not keep the process alive forever.
  setTimeout(() => {
    console.error('engine-process: close did not finish in 15 s');
    process.exit(3);
  }, 15_000).unref();
  engine
    .close()
    .then(() => {
      say('CLOSED', { engineId: engine.engineId });
      process.exit(0);
    })
    .catch((e: Error) => {
      console.error(`engine-process: close failed: ${e.message}`);
      process.exit(1);
    });
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// Orphaned (the test runner died): stop on our own rather than linger.
process.on('disconnect', shutdown);

say('READY', { engineId: engine.engineId, pid: process.pid, owned: engine.status().owned });
if (traced) traceLine('info')(`ready after ${Date.now() - startedAt} ms`, { owned: engine.status().owned.length });
