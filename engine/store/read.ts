/** Reading every message of one subject of a stream, in order, with an ordered consumer. */
import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';

export async function readSubject(rt: { js: JetStreamClient; jsm: JetStreamManager }, stream: string, subject: string): Promise<Uint8Array[]> {
  const last = await rt.jsm.streams.getMessage(stream, { last_by_subj: subject }).catch((e: Error) => {
    if (/no message found|not found/i.test(e.message)) return null;
    throw e;
  });
  if (!last) return [];
  const consumer = await rt.js.consumers.get(stream, { filter_subjects: subject, deliver_policy: DeliverPolicy.All });
  const out: Uint8Array[] = [];
  try {
    for (;;) {
      const batch = await consumer.fetch({ max_messages: 512, expires: 2_000 });
      let got = 0;
      for await (const m of batch) {
        got++;
        out.push(m.data);
        if (m.seq >= last.seq) return out;
      }
      if (got === 0) return out;
    }
  } finally {
    await consumer.delete().catch(() => {});
  }
}
