/**
 * Where the tests find a namespace's streams, buckets and subjects beneath the public API: the one
 * place to change when the layout changes. Subjects are part of the wire contract (senders
 * outside jetstate publish to them); stream and bucket names are not, so tests that need one ask
 * here, and tests that must find every events stream list them with {@link isEventsStream}.
 *
 * Today the events of a namespace live in one stream `<ns>_events`. The layout that follows puts
 * them in one stream per workflow and partition, `<ns>_evt_<workflow>_<partition>`, with the
 * same subjects; {@link isEventsStream} already recognises both, {@link eventsStream} names
 * today's.
 */
import type { JetStreamManager } from '@nats-io/jetstream';

/** The subject of an event for an instance: `<ns>.evt.<partition>.<workflow>.<id>`. */
export function eventSubject(namespace: string, partition: number, workflow: string, id: string): string {
  return `${namespace}.evt.${partition}.${workflow}.${id}`;
}

/** The stream that holds the events of one workflow's partition. */
export function eventsStream(namespace: string, _workflow: string, _partition: number): string {
  return `${namespace}_events`;
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

/** The KV bucket of instance records; key `<workflow>.<id>`. */
export function instancesBucket(namespace: string): string {
  return `${namespace}_instances`;
}

/** The key of an instance's record in {@link instancesBucket}. */
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
