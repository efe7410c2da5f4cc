/**
 * Reads a shared durable consumer (timers, tasks) until stopped, and recovers by itself: a
 * consumer that missed heartbeats, went missing or got no responders (its server died, a leader
 * moved) is read again through a fresh subscription at once, instead of waiting on nats.js's own
 * recovery, which a disconnect can hold up for as long as the server is down; one that no longer
 * exists is made again.
 */
import type { ConsumerMessages, JsMsg } from '@nats-io/jetstream';
import type { Runtime } from '../store/runtime.js';
import { isConsumerNotFound } from '../store/nats-errors.js';

export interface DurableReader {
  stop(): Promise<void>;
}

export interface DurableReaderOptions {
  stream: string;
  /** The consumer's configuration: it is made again with it when it goes missing. */
  config: DurableConfig;
  /** Most messages pulled and not yet handled. */
  maxMessages: number;
  label: string;
  handle(m: JsMsg): void;
}

export function readDurable(rt: Runtime, options: DurableReaderOptions): DurableReader {
  let stopping = false;
  let messages: ConsumerMessages | undefined;
  const loop = (async () => {
    let delay = 50;
    while (!stopping) {
      try {
        const consumer = await rt.js.consumers.get(options.stream, options.config.durable_name).catch(async (e: unknown) => {
          if (!isConsumerNotFound(e) || stopping) throw e;
          // Deleted by hand, or its stream restored without it: made again (ensureDurable at start).
          rt.logger.warn(`${options.label}: durable consumer '${options.config.durable_name}' of stream '${options.stream}' is missing; making it again`);
          await ensureDurable(rt, options.stream, options.config);
          return rt.js.consumers.get(options.stream, options.config.durable_name);
        });
        const m = (messages = await consumer.consume({ max_messages: options.maxMessages, expires: 5_000 }));
        if (stopping) m.stop();
        void (async () => {
          for await (const s of m.status()) {
            const broken =
              (s.type === 'heartbeats_missed' && s.count >= 2) ||
              s.type === 'consumer_not_found' ||
              s.type === 'consumer_deleted' ||
              s.type === 'stream_not_found' ||
              s.type === 'no_responders';
            if (broken) {
              rt.logger.debug(`${options.label}: reading again (${s.type})`);
              m.stop();
              return;
            }
          }
        })().catch(() => {});
        for await (const msg of m) {
          delay = 50;
          options.handle(msg);
        }
      } catch (e) {
        if (!stopping) rt.logger.warn(`${options.label}: reading failed (${(e as Error).message}); resuming`);
      }
      if (stopping) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 1_000);
    }
  })();
  return {
    async stop() {
      stopping = true;
      messages?.stop();
      await loop.catch(() => {});
    },
  };
}

/** A durable consumer's configuration as the engine makes it. */
export type DurableConfig = { durable_name: string; filter_subject: string; ack_wait: number; max_ack_pending: number } & Record<string, unknown>;

/**
 * Creates a durable consumer, or finds it and brings the settings an older engine gave it up to
 * date. Engines of one namespace share it, each with its own acknowledgement wait (from its
 * `leaseTtlMs`), and each keeps the messages it handles alive at a third of its own wait: the
 * consumer keeps the longest wait any engine asked for, since a shorter one set by another engine
 * would hand a message on while it is being handled. A consumer of that name that reads another
 * subject is an error (two kinds of messages would share one reader).
 */
export async function ensureDurable(rt: Runtime, stream: string, config: DurableConfig, retry = false): Promise<void> {
  try {
    const info = await rt.jsm.consumers.info(stream, config.durable_name);
    if (info.config.filter_subject !== config.filter_subject) {
      throw new Error(
        `durable consumer '${config.durable_name}' of stream '${stream}' reads '${info.config.filter_subject ?? '>'}', not '${config.filter_subject}': another kind of message has its name`,
      );
    }
    const ackWait = Math.max(info.config.ack_wait ?? 0, config.ack_wait);
    if (info.config.ack_wait !== ackWait || info.config.max_ack_pending !== config.max_ack_pending) {
      await rt.jsm.consumers.update(stream, config.durable_name, { ack_wait: ackWait, max_ack_pending: config.max_ack_pending });
    }
    if (ackWait > config.ack_wait) {
      rt.logger.info(
        `durable consumer '${config.durable_name}' keeps the acknowledgement wait of ${ackWait / 1e6} ms another engine asked for (this one: ${config.ack_wait / 1e6} ms, from its leaseTtlMs): messages of an engine that stops come back after the longer wait`,
      );
    }
    return;
  } catch (e) {
    if (!isConsumerNotFound(e)) throw e;
  }
  try {
    await rt.jsm.consumers.add(stream, config as never);
  } catch (e) {
    // Another engine created it first: checked as found (its filter, its wait).
    if (retry) throw e;
    await ensureDurable(rt, stream, config, true);
  }
}
