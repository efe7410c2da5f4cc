/**
 * The NATS permission sets of docs/SECURITY.md ("NATS permissions: only engines write the
 * engine's state"), built for one namespace, and the server config lines that give them to users.
 * Used by the permissions test of a single server and by the edge one (docs/EDGE.md), where a
 * client of another JetStream domain has the same sets with `$JS.<domain>.API` for `$JS.API`.
 */
import { PermissionViolationError } from '@nats-io/nats-core';
import { layout } from '../../engine/protocol/names.js';

export type Role = 'engine' | 'sender' | 'reader';

export interface Permissions {
  publish: string[];
  subscribe: string[];
}

/** Partitions and record buckets of the tests' namespaces (the defaults). */
export const PARTITIONS = 16;
export const SHARDS = 4;

/** The KV buckets the instance records are spread over. */
export const recordBuckets = (ns: string): string[] => Array.from({ length: SHARDS }, (_, s) => layout(ns).instancesShard(s));

/** What every client publishes when it opens an existing namespace: read-only JetStream API calls (*open*). */
export function connectSet(ns: string): string[] {
  return [
    '$JS.API.INFO',
    ...['history', 'timers', 'tasks', 'deadletter'].map((s) => `$JS.API.STREAM.INFO.${ns}_${s}`),
    ...recordBuckets(ns).map((b) => `$JS.API.STREAM.INFO.KV_${b}`),
    `$JS.API.STREAM.INFO.KV_${ns}_control`,
    `$JS.API.DIRECT.GET.KV_${ns}_control.$KV.${ns}_control.meta`,
  ];
}

/**
 * What get() reads about an instance that has no record yet: why it waits (the engine's note),
 * whether its start is still in its partition's events stream, and how far the partition went.
 */
export function pendingReads(ns: string, workflows: readonly string[]): string[] {
  const control = (key: string): string => `$JS.API.DIRECT.GET.KV_${ns}_control.$KV.${ns}_control.${key}.>`;
  return [
    control('parked'),
    control('lease'),
    control('checkpoint'),
    ...workflows.flatMap((wf) => Array.from({ length: PARTITIONS }, (_, p) => `$JS.API.STREAM.MSG.GET.${ns}_evt_${wf}_${p}`)),
  ];
}

/** The table of docs/SECURITY.md for namespace `ns` and the workflows its clients address. */
export function rolePermissions(ns: string, workflows: readonly string[]): Record<Role, Permissions> {
  const readRecords = recordBuckets(ns).map((b) => `$JS.API.DIRECT.GET.KV_${b}.>`);
  return {
    engine: {
      publish: [
        `${ns}.>`,
        '$JS.API.>',
        `$JS.ACK.${ns}_timers.>`,
        `$JS.ACK.${ns}_tasks.>`,
        ...recordBuckets(ns).map((b) => `$KV.${b}.>`),
        `$KV.${ns}_control.>`,
        '_INBOX.>',
      ],
      subscribe: [`${ns}.taskcancel.>`, '_INBOX.engine.>'],
    },
    // Starts and sends: both go through the instance's inbox.
    sender: {
      publish: [
        ...connectSet(ns),
        ...workflows.map((wf) => `${ns}.evt.*.${wf}.*`),
        ...readRecords,
        // Whether a live engine owns the partition (else start() does not wait): optional.
        `$JS.API.DIRECT.GET.KV_${ns}_control.$KV.${ns}_control.lease.>`,
        // The secret paths the namespace publishes for a workflow (else its events are sealed with the
        // definition's paths only, warned): optional.
        `$JS.API.DIRECT.GET.KV_${ns}_control.$KV.${ns}_control.secrets.>`,
      ],
      subscribe: ['_INBOX.sender.>'],
    },
    reader: {
      publish: [
        ...connectSet(ns),
        ...readRecords,
        `$JS.API.STREAM.MSG.GET.${ns}_history`,
        `$JS.API.CONSUMER.CREATE.${ns}_history.>`,
        `$JS.API.CONSUMER.MSG.NEXT.${ns}_history.>`,
        // Not on the usual path (optional).
        `$JS.API.CONSUMER.DELETE.${ns}_history.>`,
        `$JS.API.CONSUMER.INFO.${ns}_history.>`,
        ...pendingReads(ns, workflows),
      ],
      subscribe: ['_INBOX.reader.>'],
    },
  };
}

/** The same set for a client of another JetStream domain: `$JS.API` becomes `$JS.<domain>.API`. */
export function inDomain(p: Permissions, domain: string): Permissions {
  const move = (s: string): string => (s === '$JS.API' || s.startsWith('$JS.API.') ? `$JS.${domain}.API${s.slice('$JS.API'.length)}` : s);
  return { publish: p.publish.map(move), subscribe: p.subscribe.map(move) };
}

const quote = (list: string[]): string => `[${list.map((s) => JSON.stringify(s)).join(', ')}]`;

/** One entry of a server's `authorization { users: [...] }`. */
export const userConf = (user: string, pass: string, p: Permissions): string =>
  `{ user: ${JSON.stringify(user)}, password: ${JSON.stringify(pass)}, permissions: { publish: { allow: ${quote(p.publish)} }, subscribe: { allow: ${quote(p.subscribe)} } } }`;

/** A server's `authorization` block for these users. */
export const authorizationConf = (users: Array<{ user: string; pass: string; permissions: Permissions }>): string =>
  `authorization { users: [\n${users.map((u) => userConf(u.user, u.pass, u.permissions)).join(',\n')}\n] }`;

/** The permission violation behind `e`, if that is what it is. */
export function violationOf(e: unknown): PermissionViolationError | undefined {
  for (let c = e; c instanceof Error; c = c.cause) if (c instanceof PermissionViolationError) return c;
  return undefined;
}

/** The refusals in a server's log: who was refused what. */
export const refusalsIn = (log: string): Array<{ op: string; user: string; subject: string }> =>
  [...log.matchAll(/(Publish|Subscription) Violation - User "([^"]+)", Subject "([^"]+)"/g)].map((m) => ({ op: m[1]!, user: m[2]!, subject: m[3]! }));
