/**
 * Durable timers. A write that schedules a timer is followed by a due-time message in the timers
 * stream (published again by the redelivery path if a crash cut that short); every engine
 * consumes that stream through one shared durable consumer. A message that is not yet due is
 * NAKed with the remaining delay (nats-server 2.10 has no message schedules), so it comes back
 * when due, also after restarts; a due one becomes a signed fire event in its instance's inbox.
 * The instance applies a fire only while the timer is still pending in its record with the same
 * token, so a timer never fires twice and a timer whose state was exited changes nothing.
 *
 * The acknowledgement wait is short (about the lease TTL) and no engine holds many messages: a
 * timer whose message a dead engine had pulled comes back to another engine within it.
 */
import type { JsMsg } from '@nats-io/jetstream';
import { AckPolicy, DeliverPolicy } from '@nats-io/jetstream';
import { z } from 'zod';
import { systemClock, type Clock } from '../clock.js';
import { SpanKind, carrierFor, carrierFromHeaders, carrierOf, contextOf, failSpan, withTrace, type TraceSource } from '../telemetry/telemetry.js';
import { EngineEvent } from '../protocol/events.js';
import { BornSchema, bornOf, instanceTag, type InstanceRef } from '../protocol/record.js';
import { decodeJson, encodeJson } from '../protocol/json.js';
import type { Runtime } from '../store/runtime.js';
import { publishToInstance } from '../store/inbox.js';
import type { ScheduledTimer } from '../step/plan.js';
import { ensureDurable, readDurable, type DurableReader } from './durable-consumer.js';

const TimerMessageSchema = z.object({
  workflow: z.string(),
  id: z.string(),
  timerId: z.string(),
  token: z.number().int(),
  dueAtMs: z.number(),
  /** The instance's `born`, when its record has one. */
  born: BornSchema,
});

const CONSUMER = 'timers';
/** Longest wait per NAK with the system clock: long timers come back once an hour. */
const MAX_NAK_MS = 3_600_000;
/** With another clock, due times are checked this often, so moving the clock takes effect soon. */
const MAX_NAK_MS_CUSTOM_CLOCK = 100;
const MAX_IN_FLIGHT = 128;
const NS = 1_000_000;

/** Publishes the timers a write scheduled. Idempotent: each timer has a stable, keyed message id. */
export async function publishTimers(rt: Runtime, instance: InstanceRef, timers: readonly ScheduledTimer[], trace?: TraceSource): Promise<void> {
  const { workflow, id } = instance;
  const tag = instanceTag(instance);
  await Promise.all(
    timers.map((t) =>
      rt.js.publish(
        rt.names.timerSubject(workflow, id),
        encodeJson({ workflow, id, timerId: t.timerId, token: t.token, dueAtMs: t.dueAtMs, ...bornOf(instance) }),
        withTrace({ msgID: rt.security.signer.messageId(`timer.${workflow}.${tag}.${t.token}.${t.timerId}`) }, carrierFor(trace, t.token)),
      ),
    ),
  );
}

export class TimerService {
  private reader: DurableReader | undefined;
  private readonly inFlight = new Set<Promise<void>>();

  /** `ackWaitMs`: how long a pulled timer may stay unanswered before another engine gets it. */
  constructor(
    private readonly rt: Runtime,
    private readonly clock: Clock,
    private readonly ackWaitMs: number,
  ) {}

  async start(): Promise<void> {
    const { names } = this.rt;
    const config = {
      durable_name: CONSUMER,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: `${names.namespace}.tmr.>`,
      ack_wait: this.ackWaitMs * NS,
      max_deliver: -1,
      // Every pending timer is an unacknowledged message: do not cap them.
      max_ack_pending: -1,
    };
    await ensureDurable(this.rt, names.timersStream, config);
    this.reader = readDurable(this.rt, {
      stream: names.timersStream,
      config,
      maxMessages: MAX_IN_FLIGHT,
      label: 'timers',
      handle: (m) => {
        const p = this.handle(m).finally(() => this.inFlight.delete(p));
        this.inFlight.add(p);
      },
    });
  }

  async stop(): Promise<void> {
    await this.reader?.stop();
    await Promise.all(this.inFlight);
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
    const tel = this.rt.telemetry;
    const scheduledBy = carrierFromHeaders(m.headers);
    const span = tel.startSpan(
      `jetstate.timer ${timer.workflow}`,
      SpanKind.PRODUCER,
      { 'jetstate.workflow': timer.workflow, 'jetstate.instance.id': timer.id, 'jetstate.timer.id': timer.timerId, 'jetstate.timer.lateness_ms': -remaining },
      contextOf(scheduledBy),
    );
    try {
      await publishToInstance(this.rt, {
        workflow: timer.workflow,
        id: timer.id,
        event: { type: EngineEvent.Timer, timerId: timer.timerId, token: timer.token, ...bornOf(timer) },
        engine: { logicalId: `fire.${timer.workflow}.${instanceTag(timer)}.${timer.token}.${timer.timerId}` },
        trace: carrierOf(span) ?? scheduledBy,
      });
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
