/**
 * The NATS layout of one namespace: bucket, stream, subject and key names, and the partition of
 * an instance. Everything jetstate creates lives under the namespace prefix, so several
 * applications can share one NATS account.
 *
 * Events live in one stream per workflow and partition (`<ns>_evt_<workflow>_<p>`, subjects
 * `<ns>.evt.<p>.<workflow>.*`): each partition has its own sequence, so its reader notices any
 * gap at once, its owner trims it alone, and different partitions fsync in parallel.
 */
import { ErrorCode, fail } from '../errors.js';
import { shortHash } from './json.js';

/** Workflow names, instance ids and namespaces: safe as a NATS subject token and a KV key part. */
export const NAME_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

/** The layout version this code writes and reads (recorded in the namespace's `meta` key). */
export const LAYOUT_VERSION = 2;

/** NATS refuses stream names longer than this. */
const MAX_STREAM_NAME = 255;

export function checkName(kind: string, value: unknown, code: ErrorCode = ErrorCode.InvalidId): string {
  if (typeof value !== 'string' || !NAME_PATTERN.test(value)) {
    fail(
      code,
      `${kind} ${JSON.stringify(value)} is not valid: use 1-128 characters from A-Z, a-z, 0-9, '_' and '-' ` + `(it becomes a NATS subject token and a KV key)`,
    );
  }
  return value;
}

export interface Layout {
  readonly namespace: string;
  /** The records of the first shard (see {@link Layout.instancesShard}). */
  readonly instancesBucket: string;
  /** The KV bucket of one shard of the instance records (records are spread over `shards` buckets: more streams fsync in parallel). */
  instancesShard(shard: number): string;
  readonly controlBucket: string;
  readonly historyStream: string;
  readonly timersStream: string;
  readonly tasksStream: string;
  /** Copies of rejected events, with the reason, for operators. */
  readonly deadLetterStream: string;
  /** The events stream of one workflow partition. */
  eventStream(workflow: string, partition: number): string;
  /** The subjects that stream takes: `<ns>.evt.<p>.<workflow>.*`. */
  eventStreamSubject(workflow: string, partition: number): string;
  /** Where an instance's events are published. */
  eventSubject(partition: number, workflow: string, id: string): string;
  deadLetterSubject(workflow: string, id: string): string;
  historySubject(workflow: string, id: string): string;
  timerSubject(workflow: string, id: string): string;
  taskSubject(workflow: string, activity: string): string;
  taskCancelSubject(workflow: string, id: string): string;
  doneSubject(workflow: string, id: string): string;
  /** Where an instance's XState `emit` events are published (core NATS, best effort). */
  emitSubject(workflow: string, id: string): string;
  instanceKey(workflow: string, id: string): string;
  leaseKey(workflow: string, partition: number): string;
  /** Where a released partition leaves its checkpoint for the next owner. */
  checkpointKey(workflow: string, partition: number): string;
  memberKey(engineId: string): string;
  /** Why an instance's events wait (written by the engine that found it blocked). */
  parkedKey(workflow: string, id: string): string;
  /**
   * The secret paths a workflow declares (in any version registered anywhere in the namespace),
   * so that an engine that does not serve it seals them in what it sends to its instances.
   */
  secretsKey(workflow: string): string;
  /**
   * Events for the namespace's instances queued in another JetStream domain (a hub) until the
   * site's engines relay them into their inboxes (docs/EDGE.md).
   */
  readonly relayStream: string;
  /** Where such an event waits: `<ns>.relay.<workflow>.<id>` (no partition: the site computes it). */
  relaySubject(workflow: string, id: string): string;
}

export function layout(namespace: string): Layout {
  checkName('namespace', namespace, ErrorCode.InvalidOptions);
  const ns = namespace;
  return {
    namespace,
    instancesBucket: `${ns}_instances`,
    instancesShard: (shard) => (shard === 0 ? `${ns}_instances` : `${ns}_instances_${shard}`),
    controlBucket: `${ns}_control`,
    historyStream: `${ns}_history`,
    timersStream: `${ns}_timers`,
    tasksStream: `${ns}_tasks`,
    deadLetterStream: `${ns}_deadletter`,
    eventStream: (wf, p) => {
      const name = `${ns}_evt_${wf}_${p}`;
      return name.length <= MAX_STREAM_NAME ? name : `${ns.slice(0, 200)}_evt_${shortHash(`${ns}/${wf}`)}_${p}`;
    },
    eventStreamSubject: (wf, p) => `${ns}.evt.${p}.${wf}.*`,
    eventSubject: (p, wf, id) => `${ns}.evt.${p}.${wf}.${id}`,
    deadLetterSubject: (wf, id) => `${ns}.dlq.${wf}.${id}`,
    historySubject: (wf, id) => `${ns}.hist.${wf}.${id}`,
    timerSubject: (wf, id) => `${ns}.tmr.${wf}.${id}`,
    taskSubject: (wf, activity) => `${ns}.task.${wf}.${activity}`,
    taskCancelSubject: (wf, id) => `${ns}.taskcancel.${wf}.${id}`,
    doneSubject: (wf, id) => `${ns}.done.${wf}.${id}`,
    emitSubject: (wf, id) => `${ns}.emit.${wf}.${id}`,
    instanceKey: (wf, id) => `${wf}.${id}`,
    leaseKey: (wf, p) => `lease.${wf}.${p}`,
    checkpointKey: (wf, p) => `checkpoint.${wf}.${p}`,
    memberKey: (engineId) => `member.${engineId}`,
    parkedKey: (wf, id) => `parked.${wf}.${id}`,
    secretsKey: (wf) => `secrets.${wf}`,
    relayStream: `${ns}_relay`,
    relaySubject: (wf, id) => `${ns}.relay.${wf}.${id}`,
  };
}

/** Splits `<ns>.evt.<p>.<workflow>.<id>` into its parts, or null when it is not one. */
export function parseEventSubject(subject: string): { partition: number; workflow: string; id: string } | null {
  const parts = subject.split('.');
  if (parts.length !== 5 || parts[1] !== 'evt') return null;
  const partition = Number(parts[2]);
  if (!Number.isSafeInteger(partition) || partition < 0 || String(partition) !== parts[2]) return null;
  return { partition, workflow: parts[3]!, id: parts[4]! };
}

/** FNV-1a over `<workflow>.<id>`: stable across processes and releases, so never change it. */
export function partitionOf(workflow: string, id: string, partitions: number): number {
  let h = 0x811c9dc5;
  const s = `${workflow}.${id}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % partitions;
}

/** The shard of an instance's record: its partition's, spread evenly. */
export function shardOf(workflow: string, id: string, partitions: number, shards: number): number {
  return partitionOf(workflow, id, partitions) % shards;
}
