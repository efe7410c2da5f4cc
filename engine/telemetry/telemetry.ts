/**
 * Tracing and metrics through `@opentelemetry/api` only. The engine uses the providers the host
 * gave (`telemetry` option) or registered globally; it never registers one itself. With no
 * provider the API hands out non-recording spans and no-op instruments, which cost next to nothing.
 *
 * Trace context crosses durable boundaries as W3C `traceparent`/`tracestate`: in the NATS headers
 * of events, timer and task messages, and in the instance record (the last transition, which the
 * next one links to). It is written and read here directly rather than through the global
 * propagator, so it works whatever propagator the host configured (or none).
 */
import {
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  createTraceState,
  isSpanContextValid,
  metrics,
  trace,
  type Attributes,
  type Context,
  type Counter,
  type Histogram,
  type Link,
  type MeterProvider,
  type Span,
  type SpanContext,
  type Tracer,
  type TracerProvider,
  type UpDownCounter,
} from '@opentelemetry/api';
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/nats-core';

export { SpanKind, SpanStatusCode, type Span, type Context };

const SCOPE = 'jetstate';
/** The API's no-op provider: what a fresh proxy delegates to. */
const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate();
const SCOPE_VERSION = '0.1.0';

export interface TelemetryOptions {
  tracerProvider?: TracerProvider | undefined;
  meterProvider?: MeterProvider | undefined;
}

/** W3C trace context as carried in headers and records. */
export interface TraceCarrier {
  traceparent: string;
  tracestate?: string | undefined;
}

export class Telemetry {
  readonly tracer: Tracer;
  readonly transitions: Counter;
  readonly transitionDuration: Histogram;
  readonly conflicts: Counter;
  readonly redeliveries: Counter;
  readonly rejected: Counter;
  readonly timerLateness: Histogram;
  readonly taskAttempts: Counter;
  readonly taskFailures: Counter;
  readonly instances: UpDownCounter;
  readonly stepFunctionsCalls: Counter;

  private readonly provider: TracerProvider;

  constructor(options: TelemetryOptions = {}) {
    this.provider = options.tracerProvider ?? trace.getTracerProvider();
    this.tracer = this.provider.getTracer(SCOPE, SCOPE_VERSION);
    const meter = (options.meterProvider ?? metrics.getMeterProvider()).getMeter(SCOPE, SCOPE_VERSION);
    this.transitions = meter.createCounter('jetstate.transitions', { description: 'Events applied to instances (one per transition)' });
    this.transitionDuration = meter.createHistogram('jetstate.transition.duration', {
      description: 'From reading an event to its state write and history publish',
      unit: 'ms',
    });
    this.conflicts = meter.createCounter('jetstate.cas.conflicts', { description: 'State writes that lost a compare-and-set race and were recomputed' });
    this.redeliveries = meter.createCounter('jetstate.redeliveries', {
      description: 'Events read again after they were applied (skipped) or whose processing was retried',
    });
    this.rejected = meter.createCounter('jetstate.events.rejected', { description: 'Events recorded as rejections, by reason' });
    this.timerLateness = meter.createHistogram('jetstate.timer.lateness', { description: 'How long after its due time a timer fired', unit: 'ms' });
    this.taskAttempts = meter.createCounter('jetstate.task.attempts', { description: 'Task attempts, by outcome' });
    this.taskFailures = meter.createCounter('jetstate.task.failures', { description: 'Failed task attempts (retried or final)' });
    this.instances = meter.createUpDownCounter('jetstate.instances', {
      description: 'Instances by status: +1 on entering a status, -1 on leaving it (sum across engines)',
    });
    this.stepFunctionsCalls = meter.createCounter('jetstate.stepfunctions.calls', { description: 'Step Functions API calls, by action and outcome' });
  }

  /**
   * False while no tracer provider is there (the API's proxy still delegates to its no-op one):
   * then the hot path skips making spans. Two property reads, so it is asked per batch, and a
   * provider registered later is picked up at once.
   */
  tracingActive(): boolean {
    return !(this.provider instanceof ProxyTracerProvider && this.provider.getDelegate() === NOOP_PROVIDER);
  }

  /** Starts a span under `parent` (the root context when none). */
  startSpan(name: string, kind: SpanKind, attributes: Attributes, parent: Context = ROOT_CONTEXT, links?: Link[], startTime?: number): Span {
    return this.tracer.startSpan(
      name,
      { kind, attributes, ...(links && links.length > 0 ? { links } : {}), ...(startTime !== undefined ? { startTime } : {}) },
      parent,
    );
  }
}

/**
 * The trace context of a span, to pass on to what it causes; undefined when it has none (a no-op
 * root span). A span the sampler left out is carried too, with its sampled flag off, so that
 * parent-based sampling downstream leaves out the rest of that trace instead of deciding afresh
 * at every hop (which would trace a 10 % ratio's transitions about twice as often, as fragments).
 */
export function carrierOf(span: Span | undefined): TraceCarrier | undefined {
  return span ? carrierOfContext(span.spanContext()) : undefined;
}

/** The trace context of the active span of `ctx`, if any. */
export function carrierOfActive(ctx: Context): TraceCarrier | undefined {
  const sc = trace.getSpanContext(ctx);
  return sc ? carrierOfContext(sc) : undefined;
}

function carrierOfContext(sc: SpanContext): TraceCarrier | undefined {
  if (!isSpanContextValid(sc)) return undefined;
  const traceparent = `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
  const tracestate = sc.traceState?.serialize();
  return tracestate ? { traceparent, tracestate } : { traceparent };
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Parses a W3C `traceparent` (and `tracestate`) into a remote span context; undefined if invalid. */
export function spanContextOf(carrier: TraceCarrier | undefined): SpanContext | undefined {
  if (!carrier) return undefined;
  const m = TRACEPARENT.exec(carrier.traceparent.trim());
  if (!m || m[1] === 'ff') return undefined;
  const sc: SpanContext = { traceId: m[2]!, spanId: m[3]!, traceFlags: parseInt(m[4]!, 16), isRemote: true };
  if (carrier.tracestate) {
    try {
      sc.traceState = createTraceState(carrier.tracestate);
    } catch {
      // an unparsable tracestate is dropped, as the W3C spec says
    }
  }
  return isSpanContextValid(sc) ? sc : undefined;
}

/** A context whose parent is the carried span (the root context when there is none). */
export function contextOf(carrier: TraceCarrier | undefined): Context {
  const sc = spanContextOf(carrier);
  return sc ? trace.setSpanContext(ROOT_CONTEXT, sc) : ROOT_CONTEXT;
}

/**
 * A link to the carried span, for "follows from" relations (the previous transition); none when
 * that span was not sampled, since it was never recorded.
 */
export function linkTo(carrier: TraceCarrier | undefined): Link[] {
  const sc = spanContextOf(carrier);
  return sc && (sc.traceFlags & TraceFlags.SAMPLED) !== 0 ? [{ context: sc }] : [];
}

/** NATS headers carrying the trace context, or undefined when there is none. */
export function traceHeaders(carrier: TraceCarrier | undefined): MsgHdrs | undefined {
  if (!carrier) return undefined;
  const h = natsHeaders();
  h.set('traceparent', carrier.traceparent);
  if (carrier.tracestate) h.set('tracestate', carrier.tracestate);
  return h;
}

/** The trace context in a message's headers, if any. */
export function carrierFromHeaders(h: MsgHdrs | undefined): TraceCarrier | undefined {
  const traceparent = h?.get('traceparent');
  if (!traceparent) return undefined;
  const tracestate = h!.get('tracestate');
  return tracestate ? { traceparent, tracestate } : { traceparent };
}

/** Ends a span with an error status and the error's name and message (never payloads). */
export function failSpan(span: Span, error: unknown): void {
  const e = error instanceof Error ? error : new Error(String(error));
  span.recordException({ name: e.name, message: e.message });
  span.setStatus({ code: SpanStatusCode.ERROR, message: e.message });
}

/** Publish options with the trace context in the headers (unchanged when there is none). */
export function withTrace<T extends object>(options: T, carrier: TraceCarrier | undefined): T & { headers?: MsgHdrs } {
  const headers = traceHeaders(carrier);
  return headers ? { ...options, headers } : options;
}

const stateText = (v: unknown): string => (typeof v === 'string' ? v : v === null || v === undefined ? '' : JSON.stringify(v));

/** The event type of a recorded event: its `type` when it has a string one (never the payload). */
export function eventTypeOf(event: unknown): string {
  const t = (event as { type?: unknown } | null)?.type;
  return typeof t === 'string' ? t : 'unknown';
}

/** Attributes of a transition span: names, states and positions, never payloads. */
export function transitionAttributes(
  record: { workflow: string; version: number; id: string },
  entry: { kind: string; revision: number; seq: number; event: unknown; from: unknown; to: unknown; status: string },
  redeliveries: number,
  partition?: number,
): Attributes {
  const a: Attributes = {
    'jetstate.workflow': record.workflow,
    'jetstate.workflow.version': record.version,
    'jetstate.instance.id': record.id,
    'jetstate.event.type': entry.kind === 'start' ? 'xstate.init' : eventTypeOf(entry.event),
    'jetstate.event.seq': entry.seq,
    'jetstate.state.before': stateText(entry.from),
    'jetstate.state.after': stateText(entry.to),
    'jetstate.revision': entry.revision,
    'jetstate.status': entry.status,
    'jetstate.outcome': entry.kind === 'rejected' ? 'rejected' : 'applied',
    'jetstate.redelivery_count': redeliveries,
  };
  if (partition !== undefined) a['jetstate.partition'] = partition;
  return a;
}

/** The trace context to carry for an effect scheduled at `token` (a revision). */
export type TraceSource = TraceCarrier | ((token: number) => TraceCarrier | undefined) | undefined;

export const carrierFor = (source: TraceSource, token: number): TraceCarrier | undefined => (typeof source === 'function' ? source(token) : source);
