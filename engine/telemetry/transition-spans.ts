/**
 * The spans of one batch of transitions: one `jetstate.transition <workflow>` span per history
 * entry, the child of the context its event carried and linked to the instance's previous
 * transition. They are opened before the state write, so that the timers and tasks the write
 * schedules carry the span of the transition that scheduled them, and ended after the history
 * publish (or failed, when the batch is retried).
 */
import { isSpanContextValid } from '@opentelemetry/api';
import type { HistoryEntry, InstanceRecord } from '../protocol/record.js';
import {
  SpanKind,
  SpanStatusCode,
  carrierOf,
  contextOf,
  failSpan,
  linkTo,
  transitionAttributes,
  type Span,
  type Telemetry,
  type TraceCarrier,
} from './telemetry.js';

export class TransitionSpans {
  private readonly spans: Array<{ span: Span; entry: HistoryEntry; carrier: TraceCarrier | undefined }> = [];
  private readonly entries: readonly HistoryEntry[];
  /** The context of the last applied transition's own span (recorded or sampled out). */
  private lastOwn: TraceCarrier | undefined;

  constructor(
    private readonly tel: Telemetry,
    private readonly record: InstanceRecord,
    entries: readonly HistoryEntry[],
    traceBySeq: ReadonlyMap<number, TraceCarrier | undefined>,
    redeliveries: number,
    partition: number,
    private readonly startedAt: number,
    traced = true,
  ) {
    this.entries = entries;
    // Without a provider and without a sender's context to pass on there is nothing to trace:
    // only the metrics are kept.
    if (!traced) return;
    const name = `jetstate.transition ${record.workflow}`;
    // Each transition links to the one before it: the stored one for the first of the batch, then
    // the span just made (its context as is, rather than formatted and parsed again).
    let previous = linkTo(record.trace);
    for (const entry of entries) {
      const sent = traceBySeq.get(entry.seq);
      // The sampler sees the workflow and instance; the rest is built only for a recording span.
      const span = tel.startSpan(
        name,
        SpanKind.CONSUMER,
        { 'jetstate.workflow': record.workflow, 'jetstate.instance.id': record.id },
        contextOf(sent),
        previous,
        startedAt,
      );
      if (span.isRecording()) span.setAttributes(transitionAttributes(record, entry, redeliveries, partition));
      if (entry.kind === 'rejected') span.setStatus({ code: SpanStatusCode.ERROR, message: `event rejected: ${entry.reason ?? ''}` });
      else if (entry.status === 'failed' && entry.reason) span.setStatus({ code: SpanStatusCode.ERROR, message: `step failed: ${entry.reason}` });
      // Without a span of its own (no provider), the sender's context is passed on unchanged.
      const carrier = carrierOf(span) ?? sent;
      this.spans.push({ span, entry, carrier });
      if (entry.kind === 'rejected') continue;
      // A no-op span only wraps the sender's (remote) context; an SDK's span has its own, local
      // one, sampled or not.
      const own = span.spanContext();
      if (!own.isRemote && isSpanContextValid(own)) this.lastOwn = carrier;
      if (span.isRecording()) previous = [{ context: own }];
    }
  }

  /** The trace context of the transition that produced `revision`, for the effects it scheduled. */
  readonly byRevision = (revision: number): TraceCarrier | undefined =>
    this.spans.find((s) => s.entry.kind !== 'rejected' && s.entry.revision === revision)?.carrier;

  /**
   * The context of the last applied transition, stored in the record: the next transition links to
   * it (if it was sampled), and the write's outbox (child starts, sends to other instances) carries
   * it, so a transition the sampler left out leaves out what it causes too. Undefined without a
   * provider.
   */
  last(): TraceCarrier | undefined {
    return this.lastOwn;
  }

  end(): void {
    const now = performance.timeOrigin + performance.now();
    const workflow = { 'jetstate.workflow': this.record.workflow };
    for (const { span } of this.spans) span.end(now);
    let applied = 0;
    let rejected = 0;
    for (const entry of this.entries) {
      if (entry.kind === 'rejected') {
        rejected++;
        this.tel.rejected.add(1, { ...workflow, 'jetstate.reason': rejectionCategory(entry.reason) });
      } else {
        applied++;
      }
    }
    // One record and one add per batch and outcome: a metrics SDK hashes the attributes on every call.
    if (applied > 0) {
      this.tel.transitionDuration.record(now - this.startedAt, workflow);
      this.tel.transitions.add(applied, { ...workflow, 'jetstate.outcome': 'applied' });
    }
    if (rejected > 0) this.tel.transitions.add(rejected, { ...workflow, 'jetstate.outcome': 'rejected' });
  }

  /** The batch failed and will be retried: its spans end as errors. */
  fail(error: unknown): void {
    for (const { span } of this.spans) {
      failSpan(span, error);
      span.end();
    }
  }
}

/** A short, bounded category for the rejection metric (the full reason is in the history). */
export function rejectionCategory(reason: string | undefined): string {
  if (!reason) return 'other';
  if (reason.startsWith('the event is not UTF-8 JSON')) return 'unreadable';
  const m = /^\[([a-z_.]+)\]/.exec(reason);
  if (m) return m[1]!;
  return 'invalid_event';
}
