/**
 * The trigger: every message on a NATS subject starts one execution of a state machine, and the
 * sender may get its outcome as a reply.
 *
 * Idempotency comes from the execution name, which is the message id: the `Nats-Msg-Id` header,
 * or, for a message consumed from a JetStream stream without one, `<stream>-<tag>-<seq>`, where the
 * tag names the stream's creation (and domain), so a stream deleted and made again under the same
 * name, whose sequences start at 1 again, does not reuse the earlier stream's names. A redelivered
 * or duplicated message asks for the same name; Step Functions then returns the same execution or
 * `ExecutionAlreadyExists`, which the trigger treats as success when the existing execution has the
 * same input. A core NATS message without `Nats-Msg-Id` is refused: without an id nothing can tell
 * a retry from a new request.
 */
import { DescribeExecutionCommand, StartExecutionCommand, type DescribeExecutionCommandOutput, type SFNClient } from '@aws-sdk/client-sfn';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type Consumer, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { parseOptions, shortHash } from '../../engine/internal.js';
import { carrierFromHeaders, type TraceCarrier } from '../../engine/internal.js';
import { resolveStepFunctionsClient, type StepFunctionsClients, type StepFunctionsTarget } from './clients.js';
import { MAX_CAUSE_CHARS, checkPayloadSize, sameInputIgnoringTrace, truncateText } from './payload.js';
import { FailureRun, backoffDelayMs, sleep } from './task-answer.js';
import { JetStreamDomainSchema, inDomain } from './domain.js';
import { executionArnOf } from './execution-names.js';
import { consoleLogger, type Logger } from '../../engine/internal.js';

/** Where to reply when the message has no reply subject (always the case for JetStream messages). */
export const REPLY_TO_HEADER = 'Jetstate-Reply-To';
/** `false` asks for an immediate reply `{ executionArn, status: 'RUNNING' }` instead of the outcome. */
export const WAIT_HEADER = 'Jetstate-Wait';

const NS_PER_MS = 1_000_000;
const SAFE_NAME = /^[A-Za-z0-9_-]{1,80}$/;

/**
 * The execution name for a message id: the id itself when it is 1-80 of `A-Z a-z 0-9 _ -`
 * (the characters Step Functions and CloudWatch handle everywhere), else a readable prefix with
 * the other characters replaced, and a hash of the whole id, within 80 characters. Different ids
 * give different names.
 *
 * @example
 * ```ts
 * executionNameFor('order-17');            // 'order-17'
 * executionNameFor('orders/17 retry #2');  // 'orders_17_retry__2-<hash>'
 * ```
 */
export function executionNameFor(messageId: string): string {
  if (SAFE_NAME.test(messageId)) return messageId;
  const hash = createHash('sha256')
    .update(messageId)
    .digest('base64url')
    .replace(/[^A-Za-z0-9_-]/g, '_')
    .slice(0, 22);
  const prefix = messageId.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 80 - hash.length - 1);
  return prefix ? `${prefix}-${hash}` : hash;
}

/** What the reply carries. */
export interface TriggerReply {
  executionArn?: string;
  /** `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `ABORTED`; absent when no execution was started. */
  status?: string;
  output?: unknown;
  error?: string;
  cause?: string;
}

const TriggerOptionsSchema = z
  .object({
    connection: z.custom<NatsConnection>(
      (v) => typeof v === 'object' && v !== null && typeof (v as NatsConnection).subscribe === 'function',
      'connection must be a NatsConnection',
    ),
    /** Subject of the start requests (wildcards allowed). */
    subject: z.string().min(1),
    /** Queue group, so several triggers share the messages of a core subject. */
    queue: z.string().min(1).optional(),
    /** Consume from this JetStream stream with `durable` (at-least-once) instead of subscribing. */
    stream: z.string().min(1).optional(),
    durable: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,128}$/)
      .optional(),
    /** JetStream domain of `stream` (e.g. an edge site's `edge`); the connection's own JetStream when absent. */
    domain: JetStreamDomainSchema.optional(),
    stateMachineArn: z
      .string()
      .regex(/^arn:[a-z-]+:states:[^:]*:[0-9]*:stateMachine:.+$/, "stateMachineArn must look like 'arn:aws:states:eu-west-1:123456789012:stateMachine:name'"),
    client: z.custom<SFNClient>((v) => typeof v === 'object' && v !== null && typeof (v as SFNClient).send === 'function').optional(),
    clients: z.custom<StepFunctionsClients>((v) => typeof v === 'object' && v !== null && typeof (v as StepFunctionsClients).get === 'function').optional(),
    target: z.custom<StepFunctionsTarget>((v) => typeof v === 'object' && v !== null).optional(),
    /** Reply to senders that ask for one (a reply subject or `Jetstate-Reply-To`). */
    replies: z.boolean().default(true),
    /** Reply with the outcome once the execution ends (default); false: at once with `RUNNING`. */
    waitForEnd: z.boolean().default(true),
    /** Longest wait for the outcome; then the reply says `RUNNING`. */
    maxWaitMs: z
      .number()
      .int()
      .min(0)
      .default(15 * 60_000),
    /** Most messages of a stream being started at once. */
    concurrency: z.number().int().min(1).max(1_000).default(16),
    logger: z.custom<Logger>((v) => typeof v === 'object' && v !== null && typeof (v as Logger).warn === 'function').default(consoleLogger),
  })
  .strict()
  .refine((o) => (o.stream === undefined) === (o.durable === undefined), {
    message: "give 'stream' and 'durable' together (JetStream), or neither (core NATS)",
  })
  .refine((o) => o.stream !== undefined || o.domain === undefined, {
    message: "'domain' is the JetStream domain of 'stream'; a core NATS subject has none",
  })
  .refine((o) => o.stream === undefined || o.queue === undefined, {
    message: "'queue' is for core NATS; with 'stream', triggers share the 'durable' consumer",
  });

export type TriggerOptions = z.input<typeof TriggerOptionsSchema>;

export interface TriggerStats {
  /** Executions started (or found already started with the same input). */
  started: number;
  /** Messages refused (no id, not JSON, too large, name taken by another input). */
  rejected: number;
}

export interface Trigger {
  readonly stats: TriggerStats;
  /** Stops taking messages; replies to senders still waiting with `RUNNING`. Idempotent. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

class Rejected extends Error {
  constructor(
    readonly error: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Starts the trigger.
 *
 * @example
 * ```ts
 * const trigger = await startTrigger({ connection: nc, subject: 'orders.fulfil', queue: 'fulfil', stateMachineArn, clients });
 * // a sender: the message id makes a retried request land on the same execution
 * const h = headers();
 * h.set('Nats-Msg-Id', 'fulfil-o-17');
 * const reply = await nc.request('orders.fulfil', JSON.stringify({ orderId: 'o-17' }), { timeout: 60_000, headers: h });
 * const { executionArn, status, output } = reply.json<TriggerReply>();
 * ```
 */
export async function startTrigger(options: TriggerOptions): Promise<Trigger> {
  const o = parseOptions(TriggerOptionsSchema, 'startTrigger', options);
  const client = resolveStepFunctionsClient(o, 'startTrigger');
  const { logger, connection: nc } = o;
  const stats: TriggerStats = { started: 0, rejected: 0 };
  const stopping = new AbortController();
  const inFlight = new Set<Promise<void>>();
  const encode = (r: TriggerReply): string => JSON.stringify(r);

  const reply = (to: string | undefined, r: TriggerReply): void => {
    if (!o.replies || !to) return;
    try {
      nc.publish(to, encode(r));
    } catch (e) {
      logger.warn(`trigger '${o.subject}': replying to '${to}' failed (${(e as Error).message})`);
    }
  };

  /** Reads the input and starts (or finds) the execution; throws Rejected for bad messages. */
  const start = async (
    messageId: string,
    data: Uint8Array,
    trace: TraceCarrier | undefined,
    earlier?: EarlierName,
  ): Promise<{ executionArn: string; name: string }> => {
    let input: string;
    try {
      input = new TextDecoder('utf-8', { fatal: true }).decode(data).trim() || '{}';
      const parsed = JSON.parse(input) as unknown;
      // The sender's trace continues in the execution, as for a delegated stage (`_jetstate`).
      if (trace && typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) && !('_jetstate' in parsed))
        input = JSON.stringify({ ...parsed, _jetstate: trace });
    } catch (e) {
      throw new Rejected('jetstate.InvalidInput', `message '${messageId}' is not JSON (${(e as Error).message}); send the execution input as a JSON document`);
    }
    try {
      checkPayloadSize(input, `message '${messageId}'`);
    } catch (e) {
      throw new Rejected('jetstate.InputTooLarge', (e as Error).message);
    }
    if (earlier) {
      const found = await startedUnder(earlier, input);
      if (found) return found;
    }
    const name = executionNameFor(messageId);
    try {
      const started = await client.send(new StartExecutionCommand({ stateMachineArn: o.stateMachineArn, name, input }));
      return { executionArn: started.executionArn!, name };
    } catch (e) {
      if ((e as Error).name !== 'ExecutionAlreadyExists') throw e;
      const executionArn = executionArnOf(o.stateMachineArn, name);
      const existing = await client.send(new DescribeExecutionCommand({ executionArn }));
      // A retry may carry another trace context: compare without it.
      if (!sameInputIgnoringTrace(existing.input ?? '{}', input)) {
        throw new Rejected(
          'ExecutionAlreadyExists',
          `execution '${name}' (message id '${messageId}') exists with a different input; give each request its own Nats-Msg-Id`,
        );
      }
      return { executionArn, name };
    }
  };

  /**
   * The execution a redelivered stream message started under the name earlier versions gave it
   * (`<stream>-<seq>`, without the tag): there, started after its stream was made, with its input.
   */
  const startedUnder = async (earlier: EarlierName, input: string): Promise<{ executionArn: string; name: string } | undefined> => {
    const name = executionNameFor(earlier.messageId);
    const executionArn = executionArnOf(o.stateMachineArn, name);
    let existing: DescribeExecutionCommandOutput;
    try {
      existing = await client.send(new DescribeExecutionCommand({ executionArn }));
    } catch (e) {
      // Best effort (this looks only for what an upgrade may have left): not found, or not readable, starts as usual.
      if ((e as Error).name !== 'ExecutionDoesNotExist')
        logger.debug(`trigger '${o.subject}': DescribeExecution of ${executionArn} failed (${(e as Error).name}); starting under the new name`);
      return undefined;
    }
    const startedAt = existing.startDate?.getTime() ?? 0;
    return startedAt >= earlier.since && sameInputIgnoringTrace(existing.input ?? '{}', input) ? { executionArn, name } : undefined;
  };

  /** Polls DescribeExecution with backoff until the execution ends, `maxWaitMs` passes or the trigger stops. */
  const outcome = async (executionArn: string): Promise<TriggerReply> => {
    const deadline = Date.now() + o.maxWaitMs;
    const failures = new FailureRun();
    for (let attempt = 1; ; attempt++) {
      let d: DescribeExecutionCommandOutput | undefined;
      try {
        d = await client.send(new DescribeExecutionCommand({ executionArn }));
        const ended = failures.succeeded();
        if (ended > 0) logger.info(`trigger '${o.subject}': DescribeExecution of ${executionArn} answers again after ${ended} failures`);
      } catch (e) {
        const line = `trigger '${o.subject}': DescribeExecution of ${executionArn} failed (${(e as Error).name}: ${(e as Error).message})`;
        if (failures.failed(e))
          logger.warn(
            `${line}; ${failures.failures} in a row, trying again: the sender gets no outcome until it can be read ` +
              `(check that this caller may call states:DescribeExecution and can reach AWS)`,
          );
        else logger.debug(`${line}; trying again`);
      }
      if (d && d.status !== 'RUNNING' && d.status !== 'PENDING_REDRIVE') {
        const r: TriggerReply = { executionArn, status: d.status };
        if (d.output !== undefined) r.output = JSON.parse(d.output);
        if (d.error !== undefined) r.error = d.error;
        if (d.cause !== undefined) r.cause = d.cause;
        return r;
      }
      const wait = Math.min(backoffDelayMs(attempt, 200, 5_000), deadline - Date.now());
      if (wait <= 0 || (await sleep(wait, stopping.signal)) === 'aborted') return { executionArn, status: 'RUNNING' };
    }
  };

  const track = (p: Promise<void>): void => {
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  };

  /**
   * Handles one message; resolves once the execution is started (its outcome is awaited apart).
   * 'retry' when AWS failed: a stream message comes back (so no error reply), a core one is answered.
   */
  const handle = async (
    id: string | undefined,
    data: Uint8Array,
    replyTo: string | undefined,
    wait: boolean,
    fromStream: boolean,
    trace?: TraceCarrier,
    earlier?: EarlierName,
  ): Promise<'started' | 'rejected' | 'retry'> => {
    if (!id) {
      stats.rejected++;
      reply(replyTo, {
        error: 'jetstate.MissingMessageId',
        cause: 'the message has no Nats-Msg-Id header; set one (a stable id of the request) so that a retry never starts a second execution',
      });
      return 'rejected';
    }
    let executionArn: string;
    try {
      ({ executionArn } = await start(id, data, trace, earlier));
    } catch (e) {
      if (e instanceof Rejected) {
        stats.rejected++;
        reply(replyTo, { error: e.error, cause: e.message });
        return 'rejected';
      }
      logger.warn(
        `trigger '${o.subject}': starting an execution for message '${id}' failed (${(e as Error).name}: ${(e as Error).message})${fromStream ? '; it is tried again' : ''}`,
      );
      if (!fromStream) reply(replyTo, { error: (e as Error).name, cause: truncateText((e as Error).message, MAX_CAUSE_CHARS) });
      return 'retry';
    }
    stats.started++;
    if (!wait || !o.replies || !replyTo) {
      reply(replyTo, { executionArn, status: 'RUNNING' });
    } else {
      track(
        outcome(executionArn).then(
          (r) => reply(replyTo, r),
          (e: unknown) => reply(replyTo, { executionArn, error: 'jetstate.OutcomeUnreadable', cause: (e as Error).message }),
        ),
      );
    }
    return 'started';
  };

  const wantsWait = (h: Msg['headers']): boolean => {
    const v = h?.get(WAIT_HEADER)?.trim().toLowerCase();
    return v ? !['false', '0', 'no'].includes(v) : o.waitForEnd;
  };

  let subscription: Subscription | undefined;
  let batch: ConsumerMessages | undefined;
  let loop: Promise<void> = Promise.resolve();
  if (!o.stream) {
    subscription = nc.subscribe(o.subject, {
      ...(o.queue ? { queue: o.queue } : {}),
      callback: (err, msg) => {
        if (err) return void logger.warn(`trigger '${o.subject}': subscription error (${err.message})`);
        const p = handle(
          msg.headers?.get('Nats-Msg-Id') || undefined,
          msg.data,
          msg.reply || msg.headers?.get(REPLY_TO_HEADER) || undefined,
          wantsWait(msg.headers),
          false,
          carrierFromHeaders(msg.headers),
        ).then(() => {});
        track(p);
      },
    });
  } else {
    const stream = o.stream;
    const durable = o.durable!;
    const jsm = await jetstreamManager(nc, inDomain(o.domain));
    const js = jetstream(nc, inDomain(o.domain));
    /** The durable consumer (made when missing) and the stream it reads: its tag and creation time. */
    const open = async (): Promise<Reader> => {
      for (;;) {
        const created = (await jsm.streams.info(stream)).created;
        try {
          await jsm.consumers.info(stream, durable);
        } catch (e) {
          if (!/not found/i.test((e as Error).message)) throw e;
          await jsm.consumers.add(stream, {
            durable_name: durable,
            ack_policy: AckPolicy.Explicit,
            deliver_policy: DeliverPolicy.All,
            filter_subject: o.subject,
            max_deliver: -1,
            ack_wait: 60_000 * NS_PER_MS,
          });
        }
        // The stream made anew meanwhile: the consumer may belong to the new one.
        if ((await jsm.streams.info(stream)).created !== created) continue;
        return { consumer: await js.consumers.get(stream, durable), tag: streamTag(o.domain, created), since: Date.parse(created) };
      }
    };
    let reader = await open();
    let running = 0;
    let freed: (() => void) | undefined;
    // Acknowledged once the execution is started: a crash before that redelivers the message, and
    // its id gives the same execution name.
    const onMessage = async (m: JsMsg, { tag, since }: Reader): Promise<void> => {
      running++;
      try {
        const given = m.headers?.get('Nats-Msg-Id');
        const id = given || `${stream}-${tag}-${m.seq}`;
        // A redelivery may have started its execution under the name an earlier version gave it.
        const earlier = !given && m.info.redelivered ? { messageId: `${stream}-${m.seq}`, since } : undefined;
        const r = await handle(id, m.data, m.headers?.get(REPLY_TO_HEADER) || undefined, wantsWait(m.headers), true, carrierFromHeaders(m.headers), earlier);
        if (r === 'retry') m.nak(backoffDelayMs(m.info.deliveryCount, 1_000, 60_000));
        else if (r === 'rejected') m.term();
        else m.ack();
      } finally {
        running--;
        freed?.();
      }
    };
    loop = (async () => {
      for (let failures = 0; !stopping.signal.aborted;) {
        if (running >= o.concurrency) {
          await new Promise<void>((r) => (freed = r));
          freed = undefined;
          continue;
        }
        try {
          const current = reader;
          batch = await current.consumer.fetch({ max_messages: o.concurrency - running, expires: 5_000 });
          if (stopping.signal.aborted) batch.stop();
          for await (const m of batch) track(onMessage(m, current));
          failures = 0;
        } catch (e) {
          if (stopping.signal.aborted) return;
          const wait = backoffDelayMs(++failures, 200, 5_000);
          logger.warn(`trigger '${o.subject}': reading ${stream} failed (${(e as Error).message}); retrying in ${wait} ms`);
          if ((await sleep(wait, stopping.signal)) === 'aborted') return;
          // The consumer (or its stream) may be gone: made again, on the stream as it is now.
          try {
            const next = await open();
            if (next.tag !== reader.tag)
              logger.warn(
                `trigger '${o.subject}': stream ${stream} was made anew (created ${new Date(next.since).toISOString()}); its messages start executions named ${stream}-${next.tag}-<seq>`,
              );
            reader = next;
          } catch (e2) {
            logger.warn(`trigger '${o.subject}': opening ${stream} for durable '${durable}' failed (${(e2 as Error).message})`);
          }
        }
      }
    })();
  }

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      stopping.abort();
      subscription?.unsubscribe();
      batch?.stop();
      await loop.catch((e: unknown) => logger.warn(`trigger '${o.subject}': ${(e as Error).message}`));
      while (inFlight.size > 0) await Promise.all([...inFlight]);
    })());

  return {
    get stats() {
      return { ...stats };
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** A stream's durable consumer as the trigger reads it, with the tag and creation time of that stream. */
interface Reader {
  consumer: Consumer;
  tag: string;
  since: number;
}

/** The id a stream message without `Nats-Msg-Id` had in earlier versions, and when its stream was made. */
interface EarlierName {
  messageId: string;
  since: number;
}

/** Eight name-safe characters for one stream's creation (in one domain): the stream named apart from one made again later. */
function streamTag(domain: string | undefined, created: string): string {
  return shortHash(`${domain ?? ''}\n${created}`)
    .slice(0, 8)
    .replace(/[^A-Za-z0-9_]/g, '_');
}
