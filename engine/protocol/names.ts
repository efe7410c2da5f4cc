/**
 * The NATS layout of one namespace: bucket, stream and subject names, and the partition of an
 * instance. Everything jetstate creates lives under the namespace prefix, so several
 * applications can share one NATS account.
 */
import { ErrorCode, fail } from '../errors.js';

/** Workflow names, instance ids and namespaces: safe as a NATS subject token and a KV key part. */
export const NAME_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

export function checkName(kind: string, value: unknown, code: ErrorCode = ErrorCode.InvalidId): string {
  if (typeof value !== 'string' || !NAME_PATTERN.test(value)) {
    fail(
      code,
      `${kind} ${JSON.stringify(value)} is not valid: use 1-128 characters from A-Z, a-z, 0-9, '_' and '-' ` +
        `(it becomes a NATS subject token and a KV key)`,
    );
  }
  return value;
}

export interface Layout {
  readonly namespace: string;
  readonly instancesBucket: string;
  readonly controlBucket: string;
  readonly eventsStream: string;
  readonly historyStream: string;
  readonly timersStream: string;
  readonly tasksStream: string;
  /** Copies of rejected events, with the reason, for operators. */
  readonly deadLetterStream: string;
  deadLetterSubject(workflow: string, id: string): string;
  eventSubject(partition: number, workflow: string, id: string): string;
  partitionFilter(partition: number): string;
  historySubject(workflow: string, id: string): string;
  timerSubject(workflow: string, id: string): string;
  instanceKey(workflow: string, id: string): string;
}

export function layout(namespace: string): Layout {
  checkName('namespace', namespace, ErrorCode.InvalidOptions);
  return {
    namespace,
    instancesBucket: `${namespace}_instances`,
    controlBucket: `${namespace}_control`,
    eventsStream: `${namespace}_events`,
    historyStream: `${namespace}_history`,
    timersStream: `${namespace}_timers`,
    tasksStream: `${namespace}_tasks`,
    deadLetterStream: `${namespace}_deadletter`,
    deadLetterSubject: (wf, id) => `${namespace}.dlq.${wf}.${id}`,
    eventSubject: (p, wf, id) => `${namespace}.evt.${p}.${wf}.${id}`,
    partitionFilter: (p) => `${namespace}.evt.${p}.>`,
    historySubject: (wf, id) => `${namespace}.hist.${wf}.${id}`,
    timerSubject: (wf, id) => `${namespace}.tmr.${wf}.${id}`,
    instanceKey: (wf, id) => `${wf}.${id}`,
  };
}

/** Splits `<ns>.evt.<p>.<workflow>.<id>` into its workflow and id, or null when it is not one. */
export function parseEventSubject(subject: string): { workflow: string; id: string } | null {
  const parts = subject.split('.');
  if (parts.length !== 5) return null;
  return { workflow: parts[3]!, id: parts[4]! };
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
