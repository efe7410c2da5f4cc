/** Reading every message of one subject of a stream, in order, with an ordered consumer. */
import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';

/** One stored message: its stream sequence and body. */
export interface StoredMessage {
  seq: number;
  data: Uint8Array;
}

export async function readSubject(rt: { js: JetStreamClient; jsm: JetStreamManager }, stream: string, subject: string): Promise<Uint8Array[]> {
  return (await readSubjectMessages(rt, stream, subject)).map((m) => m.data);
}

/**
 * Every message of `subject` up to the last one stored when the read reached the end (the
 * consumer has nothing pending), with its sequence. Not up to the last sequence seen before the
 * read: messages published again and the old ones purged meanwhile (a history rewrite) would
 * then end the read at the first copy.
 */
export async function readSubjectMessages(rt: { js: JetStreamClient; jsm: JetStreamManager }, stream: string, subject: string): Promise<StoredMessage[]> {
  const last = await rt.jsm.streams.getMessage(stream, { last_by_subj: subject }).catch((e: Error) => {
    if (/no message found|not found/i.test(e.message)) return null;
    throw e;
  });
  if (!last) return [];
  const consumer = await rt.js.consumers.get(stream, { filter_subjects: subject, deliver_policy: DeliverPolicy.All });
  const out: StoredMessage[] = [];
  try {
    for (;;) {
      const batch = await consumer.fetch({ max_messages: 512, expires: 2_000 });
      let got = 0;
      for await (const m of batch) {
        got++;
        out.push({ seq: m.seq, data: m.data });
        if (m.info.pending === 0) return out;
      }
      if (got === 0) return out;
    }
  } finally {
    await consumer.delete().catch(() => {});
  }
}
