/**
 * Where the tests find a namespace's streams, buckets and subjects beneath the public API: the one
 * place to change when the layout changes. Subjects are part of the wire contract (senders
 * outside jetstate publish to them); stream and bucket names are not, so tests that need one ask
 * here, and tests that must find every events stream list them with {@link isEventsStream}.
 *
 * The events of a namespace live in one stream per workflow and partition,
 * `<ns>_evt_<workflow>_<partition>` ({@link isEventsStream} also recognises the older single
 * `<ns>_events`); instance records are spread over `shards` KV buckets (4 unless the namespace was
 * created with another `recordShards`).
 */
import type { JetStreamManager } from '@nats-io/jetstream';
import { shardOf } from '../../engine/protocol/names.js';
import { layout } from '../../engine/internal.js';

/** The engine's default number of record buckets. */
export const DEFAULT_RECORD_SHARDS = 4;

/** The subject of an event for an instance: `<ns>.evt.<partition>.<workflow>.<id>`. */
export function eventSubject(namespace: string, partition: number, workflow: string, id: string): string {
  return `${namespace}.evt.${partition}.${workflow}.${id}`;
}

/** The stream that holds the events of one workflow's partition. */
export function eventsStream(namespace: string, workflow: string, partition: number): string {
  return layout(namespace).eventStream(workflow, partition);
}

/** True for a stream that holds events of the namespace, in either layout. */
export function isEventsStream(namespace: string, name: string): boolean {
  return name === `${namespace}_events` || name.startsWith(`${namespace}_evt_`);
}

/** Every events stream of the namespace that exists now. */
export async function listEventsStreams(jsm: JetStreamManager, namespace: string): Promise<string[]> {
  const out: string[] = [];
  for await (const name of jsm.streams.names()) if (isEventsStream(namespace, name)) out.push(name);
  return out.sort();
}

/** Every KV bucket of instance records; key `<workflow>.<id>`. */
export function instancesBuckets(namespace: string, shards = DEFAULT_RECORD_SHARDS): string[] {
  const names = layout(namespace);
  return Array.from({ length: shards }, (_, s) => names.instancesShard(s));
}

/** The KV bucket that holds one instance's record. */
export function instancesBucketOf(namespace: string, workflow: string, id: string, partitions: number, shards = DEFAULT_RECORD_SHARDS): string {
  return layout(namespace).instancesShard(shardOf(workflow, id, partitions, shards));
}

/** The key of an instance's record in its bucket. */
export function instanceKey(workflow: string, id: string): string {
  return `${workflow}.${id}`;
}

/** The dead-letter stream: copies of refused events with the reason in their headers. */
export function deadLetterStream(namespace: string): string {
  return `${namespace}_deadletter`;
}

/** The subject of an instance's dead letters: `<ns>.dlq.<workflow>.<id>`. */
export function deadLetterSubject(namespace: string, workflow: string, id: string): string {
  return `${namespace}.dlq.${workflow}.${id}`;
}

/** Headers of a dead letter. */
export const DeadLetterHeader = {
  reason: 'Jetstate-Reason',
  seq: 'Jetstate-Seq',
  subject: 'Jetstate-Subject',
} as const;
