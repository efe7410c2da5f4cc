// Every transition traced: the span tree of a workflow that takes an event, fires a timer, runs a
// task with one retry and completes; rejections as errors; metrics; no payload or secret in any
// span. The providers are passed as options: nothing is registered globally except a context
// manager, which a host application would have.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { context, trace, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { assign, setup } from 'xstate';
import { z } from 'zod';
import { activity, createClient, createEngine, defineWorkflow, type Client, type Engine } from '../../engine/index.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';
import { headers } from '@nats-io/nats-core';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { layout, partitionOf } from '../../engine/protocol/names.js';

const SECRET = 'SECRET-4111111111111111';
const attemptsSeen: number[] = [];

const flow = defineWorkflow({
  name: 'traced',
  version: 1,
  input: z.object({ card: z.string() }),
  events: { GO: z.object({ note: z.string() }) },
  machine: setup({
    types: { context: {} as { card: string; note?: string; result?: unknown }, input: {} as { card: string } },
    actors: {
      charge: activity<{ card: string }, { charged: boolean }>(
        async ({ attempt }) => {
          attemptsSeen.push(attempt);
          if (attempt === 1) throw new Error('gateway busy');
          return { charged: true };
        },
        { retry: { maxAttempts: 3, initialIntervalMs: 50, jitter: 0 } },
      ),
    },
  }).createMachine({
    context: ({ input }) => ({ card: input.card }),
    initial: 'idle',
    states: {
      idle: { on: { GO: { target: 'waiting', actions: assign({ note: ({ event }) => event.note }) } } },
      waiting: { after: { 100: 'charging' } },
      charging: {
        invoke: {
          src: 'charge',
          input: ({ context }) => ({ card: context.card }),
          onDone: { target: 'done', actions: assign({ result: ({ event }) => event.output }) },
        },
      },
      done: { type: 'final' },
    },
  }),
});

const byName = (spans: ReadableSpan[], name: string): ReadableSpan[] => spans.filter((s) => s.name === name);
const parentOf = (s: ReadableSpan): string | undefined => s.parentSpanContext?.spanId;

describe('tracing and metrics', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let client: Client;
  let namespace: string;
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const contextManager = new AsyncLocalStorageContextManager().enable();

  before(async () => {
    context.setGlobalContextManager(contextManager);
    nats = await startNats();
    namespace = uniqueNamespace('otel');
    const telemetry = { tracerProvider, meterProvider };
    engine = await createEngine({ servers: nats.url, namespace, workflows: [flow], telemetry });
    client = await createClient({ servers: nats.url, namespace, workflows: [flow], telemetry });
  });
  after(async () => {
    await client?.close();
    await engine?.close();
    await nats?.dispose();
    await tracerProvider.shutdown();
    await meterProvider.shutdown();
    context.disable();
  });

  it('draws one trace: request -> start and send -> transitions -> timer -> task attempts -> completion', async () => {
    const tracer = tracerProvider.getTracer('app');
    const request = tracer.startSpan('POST /orders');
    await context.with(trace.setSpan(context.active(), request), async () => {
      await client.start(flow, { id: 't-1', input: { card: SECRET } });
      await client.send(flow, 't-1', { type: 'GO', note: SECRET });
    });
    request.end();
    await client.waitFor(flow, 't-1', (i) => i.status === 'done', { timeoutMs: 15_000 });
    const spans = await eventually(() => {
      const all = exporter.getFinishedSpans();
      assert.equal(byName(all, 'jetstate.transition traced').length, 4, 'start, GO, timer, task outcome');
      return all;
    });
    const traceId = request.spanContext().traceId;
    for (const s of spans.filter((x) => x.name.startsWith('jetstate.'))) assert.equal(s.spanContext().traceId, traceId, `${s.name} is in the request's trace`);

    const transitions = byName(spans, 'jetstate.transition traced').sort(
      (a, b) => Number(a.attributes['jetstate.revision']) - Number(b.attributes['jetstate.revision']),
    );
    const [init, go, fired, completed] = transitions as [ReadableSpan, ReadableSpan, ReadableSpan, ReadableSpan];
    const send = byName(spans, 'jetstate.send traced')[0]!;
    const timer = byName(spans, 'jetstate.timer traced')[0]!;
    const attempts = byName(spans, 'jetstate.task traced.charge').sort(
      (a, b) => Number(a.attributes['jetstate.task.attempt']) - Number(b.attributes['jetstate.task.attempt']),
    );

    // Parents: who caused what.
    const start = byName(spans, 'jetstate.start traced')[0]!;
    assert.equal(parentOf(start), request.spanContext().spanId, 'the start is a child of the request');
    assert.equal(start.kind, SpanKind.PRODUCER);
    assert.equal(parentOf(init), start.spanContext().spanId, 'the first transition is a child of the start');
    assert.equal(parentOf(send), request.spanContext().spanId);
    assert.equal(send.kind, SpanKind.PRODUCER);
    assert.equal(parentOf(go), send.spanContext().spanId, 'the transition is a child of the send');
    assert.equal(parentOf(timer), go.spanContext().spanId, 'the timer continues the transition that scheduled it');
    assert.equal(parentOf(fired), timer.spanContext().spanId);
    assert.equal(attempts.length, 2);
    for (const a of attempts) assert.equal(parentOf(a), fired.spanContext().spanId, 'task attempts continue the transition that started the task');
    assert.equal(parentOf(completed), attempts[1]!.spanContext().spanId, 'the outcome continues the successful attempt');

    // Links: each transition follows from the previous one of the instance.
    assert.deepEqual(
      go.links.map((l) => l.context.spanId),
      [init.spanContext().spanId],
    );
    assert.deepEqual(
      fired.links.map((l) => l.context.spanId),
      [go.spanContext().spanId],
    );
    assert.deepEqual(
      completed.links.map((l) => l.context.spanId),
      [fired.spanContext().spanId],
    );

    // Attributes and status.
    assert.deepEqual(
      { ...go.attributes, 'jetstate.partition': 0, 'jetstate.event.seq': 0 },
      {
        'jetstate.workflow': 'traced',
        'jetstate.workflow.version': 1,
        'jetstate.instance.id': 't-1',
        'jetstate.event.type': 'GO',
        'jetstate.event.seq': 0,
        'jetstate.state.before': 'idle',
        'jetstate.state.after': 'waiting',
        'jetstate.revision': 2,
        'jetstate.status': 'running',
        'jetstate.outcome': 'applied',
        'jetstate.redelivery_count': 0,
        'jetstate.partition': 0,
      },
    );
    assert.equal(typeof go.attributes['jetstate.partition'], 'number');
    assert.equal(init.attributes['jetstate.event.type'], 'xstate.init');
    assert.equal(completed.attributes['jetstate.state.after'], 'done');
    assert.equal(completed.attributes['jetstate.status'], 'done');
    assert.equal(typeof timer.attributes['jetstate.timer.lateness_ms'], 'number');
    assert.ok((timer.attributes['jetstate.timer.lateness_ms'] as number) >= 0, 'never early');
    assert.equal(attempts[0]!.status.code, SpanStatusCode.ERROR);
    assert.equal(attempts[0]!.status.message, 'gateway busy');
    assert.equal(attempts[0]!.attributes['jetstate.task.outcome'], 'retry');
    assert.equal(attempts[1]!.attributes['jetstate.task.attempt'], 2);
    assert.equal(attempts[1]!.attributes['jetstate.task.retry'], 1);
    assert.equal(attempts[1]!.status.code, SpanStatusCode.UNSET);
    for (const t of transitions) assert.equal(t.status.code, SpanStatusCode.UNSET);

    // The record carries the last transition's context (for the next link), and nothing secret is traced.
    assertNoSecret(spans);
  });

  it('marks a rejected event as an error span and counts it', async () => {
    await client.start(flow, { id: 't-2', input: { card: 'x' } });
    const before = exporter.getFinishedSpans().length;
    // Straight onto the stream, bypassing send(): the engine validates there too.
    const nc = await connect({ servers: nats.url });
    const h = headers();
    h.set('traceparent', `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`);
    const subject = layout(namespace).eventSubject(partitionOf(flow.name, 't-2', 16), flow.name, 't-2');
    await jetstream(nc).publish(subject, JSON.stringify({ type: 'GO', note: 42, card: SECRET }), { headers: h });
    await nc.close();
    const rejected = await eventually(() => {
      const s = exporter
        .getFinishedSpans()
        .slice(before)
        .find((x) => x.attributes['jetstate.outcome'] === 'rejected');
      assert.ok(s);
      return s;
    });
    assert.equal(rejected.status.code, SpanStatusCode.ERROR);
    assert.match(rejected.status.message ?? '', /event rejected/);
    assert.equal(rejected.spanContext().traceId, 'a'.repeat(32), "the raw publisher's context is still honoured");
    assert.equal(parentOf(rejected), 'b'.repeat(16));
    assertNoSecret(exporter.getFinishedSpans());
  });

  it('counts transitions, task attempts, timer lateness, rejections and instances by status', async () => {
    await reader.forceFlush();
    const resourceMetrics = metricExporter.getMetrics();
    const points = (name: string): Array<{ attributes: Record<string, unknown>; value: unknown }> => {
      const last: ResourceMetrics | undefined = resourceMetrics.at(-1);
      const metric = last?.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
      return (metric?.dataPoints ?? []) as Array<{ attributes: Record<string, unknown>; value: unknown }>;
    };
    const sum = (name: string, match: Record<string, unknown> = {}): number =>
      points(name)
        .filter((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v))
        .reduce((n, p) => n + (typeof p.value === 'number' ? p.value : (p.value as { count: number }).count), 0);
    assert.ok(sum('jetstate.transitions', { 'jetstate.outcome': 'applied' }) >= 3);
    assert.equal(sum('jetstate.transitions', { 'jetstate.outcome': 'rejected' }), 1);
    assert.equal(sum('jetstate.events.rejected', { 'jetstate.reason': 'invalid_event' }), 1);
    assert.equal(sum('jetstate.task.attempts', { 'jetstate.task.outcome': 'retry' }), 1);
    assert.equal(sum('jetstate.task.attempts', { 'jetstate.task.outcome': 'ok' }), 1);
    assert.equal(sum('jetstate.task.failures'), 1);
    assert.equal(sum('jetstate.timer.lateness'), 1, 'one timer fired');
    assert.ok(sum('jetstate.transition.duration') >= 3);
    // The engine saw t-1 go from running to done; the client's start counted it as running.
    assert.equal(sum('jetstate.instances', { 'jetstate.status': 'done' }), 1);
    assert.equal(sum('jetstate.instances', { 'jetstate.status': 'running' }), 1, 't-2 still runs');
  });
});

/** Searches every exported name, attribute, event, link and status of every span for the secret. */
function assertNoSecret(spans: ReadableSpan[]): void {
  assert.ok(spans.length > 0);
  for (const s of spans) {
    const text = JSON.stringify({
      name: s.name,
      attributes: s.attributes,
      events: s.events,
      links: s.links,
      status: s.status,
      resource: s.resource.attributes,
    });
    assert.ok(!text.includes(SECRET), `span ${s.name} leaks the secret: ${text}`);
  }
}
