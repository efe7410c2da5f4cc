/**
 * Durable timers. A step that schedules a timer publishes a due-time message to the timers
 * stream before its state write; every engine consumes that stream through one shared durable
 * consumer. A message that is not yet due is NAKed with the remaining delay (nats-server 2.10 has
 * no message schedules), so it comes back when due, also after restarts; a due one is turned into
 * a fire event on its instance's event subject. The instance applies a fire only while the timer
 * is still pending in its record with the same token, so a timer never fires twice and a timer
 * whose state was exited changes nothing.
 */
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import { z } from 'zod';
import { SpanKind, carrierFor, carrierFromHeaders, carrierOf, contextOf, failSpan, withTrace, type TraceSource } from '../telemetry/telemetry.js';
import { partitionOf } from '../protocol/names.js';
import { decodeJson, encodeJson, shortHash } from '../protocol/record.js';
import type { Runtime } from '../store/runtime.js';
import { TIMER_EVENT, type ScheduledTimer, type TimerFireEvent } from '../step/step.js';

/** A source of the current time in ms; tests pass a controllable one. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

const TimerMessageSchema = z.object({
  workflow: z.string(),
  id: z.string(),
  timerId: z.string(),
  token: z.number().int(),
  dueAtMs: z.number(),
});

const CONSUMER = 'timers';
/** Longest wait per NAK with the system clock: long timers come back once an hour. */
const MAX_NAK_MS = 3_600_000;
/** With another clock, due times are checked this often, so moving the clock takes effect soon. */
const MAX_NAK_MS_CUSTOM_CLOCK = 100;
const MAX_IN_FLIGHT = 256;


/** Publishes the timers a step scheduled. Idempotent: each timer has a stable message id. */
export async function publishTimers(rt: Runtime, workflow: string, id: string, timers: readonly ScheduledTimer[], trace?: TraceSource): Promise<void> {
  await Promise.all(
    timers.map((t) =>
      rt.js.publish(
        rt.names.timerSubject(workflow, id),
        encodeJson({ workflow, id, timerId: t.timerId, token: t.token, dueAtMs: t.dueAtMs }),
        withTrace({ msgID: `${workflow}.${id}.${t.token}.${shortHash(t.timerId)}` }, carrierFor(trace, t.token)),
      ),
    ),
  );
}

export class TimerService {
  private messages: ConsumerMessages | undefined;
  private loop: Promise<void> | undefined;
  private stopping = false;
  private inFlight = new Set<Promise<void>>();

  constructor(
    private readonly rt: Runtime,
    private readonly clock: Clock,
  ) {}

  async start(): Promise<void> {
    const { jsm, names } = this.rt;
    const config = {
      durable_name: CONSUMER,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: `${names.namespace}.tmr.>`,
      ack_wait: 30_000_000_000,
      max_deliver: -1,
      // Every pending timer is an unacknowledged message: do not cap them.
      max_ack_pending: -1,
    };
    try {
      await jsm.consumers.info(names.timersStream, CONSUMER);
    } catch {
      await jsm.consumers.add(names.timersStream, config).catch((e: Error) => {
        if (!/already in use|exists/i.test(e.message)) throw e;
      });
    }
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.messages?.stop();
    await this.loop?.catch(() => {});
    await Promise.all(this.inFlight);
  }

  private async run(): Promise<void> {
    let delay = 50;
    while (!this.stopping) {
      try {
        const consumer = await this.rt.js.consumers.get(this.rt.names.timersStream, CONSUMER);
        this.messages = await consumer.consume({ max_messages: 1_000, expires: 5_000 });
        if (this.stopping) this.messages.stop();
        for await (const m of this.messages) {
          delay = 50;
          const p = this.handle(m).finally(() => this.inFlight.delete(p));
          this.inFlight.add(p);
          if (this.inFlight.size >= MAX_IN_FLIGHT) await Promise.race(this.inFlight);
        }
      } catch (e) {
        this.rt.logger.warn(`timers: reading due times failed (${(e as Error).message}); resuming`);
      }
      if (this.stopping) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2_000);
    }
  }

  private async handle(m: JsMsg): Promise<void> {
    let timer: z.infer<typeof TimerMessageSchema>;
    try {
      timer = TimerMessageSchema.parse(decodeJson(m.data));
    } catch {
      this.rt.logger.warn(`timers: message ${m.seq} is not a timer; dropped`);
      m.term();
      return;
    }
    const remaining = timer.dueAtMs - this.clock.now();
    if (remaining > 0) {
      m.nak(Math.ceil(Math.min(remaining, this.clock === systemClock ? MAX_NAK_MS : MAX_NAK_MS_CUSTOM_CLOCK)));
      return;
    }
    const fire: TimerFireEvent = { type: TIMER_EVENT, timerId: timer.timerId, token: timer.token };
    const subject = this.rt.names.eventSubject(partitionOf(timer.workflow, timer.id, this.rt.partitions), timer.workflow, timer.id);
    const tel = this.rt.telemetry;
    const scheduledBy = carrierFromHeaders(m.headers);
    const span = tel.startSpan(
      `jetstate.timer ${timer.workflow}`,
      SpanKind.PRODUCER,
      { 'jetstate.workflow': timer.workflow, 'jetstate.instance.id': timer.id, 'jetstate.timer.id': timer.timerId, 'jetstate.timer.lateness_ms': -remaining },
      contextOf(scheduledBy),
    );
    try {
      const data = encodeJson(fire);
      await this.rt.js.publish(subject, data, this.rt.security.signer.options(subject, data, { msgID: `fire.${timer.workflow}.${timer.id}.${timer.token}.${shortHash(timer.timerId)}` }, carrierOf(span) ?? scheduledBy));
      m.ack();
      tel.timerLateness.record(-remaining, { 'jetstate.workflow': timer.workflow });
      this.rt.logger.debug('timer fired', { workflow: timer.workflow, id: timer.id, timerId: timer.timerId, latenessMs: -remaining });
    } catch (e) {
      failSpan(span, e);
      this.rt.logger.warn(`timers: could not fire '${timer.timerId}' of ${timer.workflow} ${timer.id} (${(e as Error).message}); retrying`);
      m.nak(250);
    } finally {
      span.end();
    }
  }
}
