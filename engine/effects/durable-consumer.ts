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

/**
 * Creates a durable consumer, or updates the settings a running namespace may have with other
 * values (an older engine's acknowledgement wait).
 */
/** A durable consumer's configuration as the engine makes it. */
export type DurableConfig = { durable_name: string } & Record<string, unknown>;

export async function ensureDurable(rt: Runtime, stream: string, config: DurableConfig): Promise<void> {
  try {
    const info = await rt.jsm.consumers.info(stream, config.durable_name);
    if (info.config.ack_wait !== config['ack_wait'] || info.config.max_ack_pending !== config['max_ack_pending']) {
      await rt.jsm.consumers.update(stream, config.durable_name, {
        ack_wait: config['ack_wait'] as number,
        max_ack_pending: config['max_ack_pending'] as number,
      });
    }
    return;
  } catch (e) {
    if (!isConsumerNotFound(e)) throw e;
  }
  await rt.jsm.consumers.add(stream, config as never).catch(async (e: Error) => {
    // Another engine created it first.
    await rt.jsm.consumers.info(stream, config.durable_name).catch(() => {
      throw e;
    });
  });
}
