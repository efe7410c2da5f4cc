// Trace context survives an engine SIGKILL: an engine process reads an event and dies right
// before writing its state; the engine that takes the partition over reads the event again, and
// its transition is still the child of the original sender's span (the context travels in the
// event's headers, stored in the stream).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { createClient, createEngine, type Client, type Engine } from '../../engine/index.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';
import { counter } from '../recovery/counter-workflow.js';
import { killAllEngines, spawnEngine, within } from '../recovery/harness.js';

describe('trace context across a SIGKILL and redelivery', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let client: Client;
  let engine: Engine | undefined;
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const contextManager = new AsyncLocalStorageContextManager().enable();

  before(async () => {
    context.setGlobalContextManager(contextManager);
    nats = await startNats();
  });
  after(async () => {
    await killAllEngines();
    await engine?.close();
    await client?.close();
    await nats?.dispose();
    await tracerProvider.shutdown();
    context.disable();
  });

  it('keeps the redelivered transition a child of the sender span', async () => {
    const namespace = uniqueNamespace('otelkill');
    const telemetry = { tracerProvider };
    client = await createClient({ servers: nats.url, namespace, workflows: [counter], telemetry });
    // The start is applied here, traced; then an engine in another process takes the partition.
    const first = await createEngine({ servers: nats.url, namespace, workflows: [counter], leaseTtlMs: 1_000, telemetry });
    await first.start(counter, { id: 'r-1', input: { label: 'r-1' } });
    await first.close();
    const doomed = spawnEngine({ url: nats.url, namespace, leaseTtlMs: 1_000, crashBeforeWrites: 1, label: 'doomed' });
    await within(doomed.ready, 20_000, 'the doomed engine to start');

    const request = tracerProvider.getTracer('app').startSpan('POST /count');
    await context.with(trace.setSpan(context.active(), request), () => client.send(counter, 'r-1', { type: 'ADD', k: 7 }));
    request.end();
    const crash = await within(doomed.crashed, 20_000, 'the engine to read the event and die before writing');
    assert.equal(crash.key, 'counter.r-1');
    await doomed.exited;
    assert.equal(exporter.getFinishedSpans().filter((s) => s.name.startsWith('jetstate.transition')).length, 1, 'only the start so far');

    engine = await createEngine({ servers: nats.url, namespace, workflows: [counter], leaseTtlMs: 1_000, telemetry });
    await client.waitFor(counter, 'r-1', (i) => (i.context as { n: number }).n === 7, { timeoutMs: 20_000 });
    const send = exporter.getFinishedSpans().find((s) => s.name === 'jetstate.send counter')!;
    const transition = await eventually(() => {
      const t = exporter.getFinishedSpans().find((s) => s.name === 'jetstate.transition counter' && s.attributes['jetstate.event.type'] === 'ADD');
      assert.ok(t, 'the taken-over engine traced the transition');
      return t;
    });
    assert.equal(transition.spanContext().traceId, request.spanContext().traceId);
    assert.equal(transition.parentSpanContext?.spanId, send.spanContext().spanId);
    assert.equal(send.parentSpanContext?.spanId, request.spanContext().spanId);
    // It links to the start, the previous transition the record remembers.
    const start = exporter.getFinishedSpans().find((s) => s.name === 'jetstate.transition counter' && s.attributes['jetstate.event.type'] === 'xstate.init')!;
    assert.deepEqual(
      transition.links.map((l) => l.context.spanId),
      [start.spanContext().spanId],
    );
    assert.equal((await client.history(counter, 'r-1')).filter((h) => h.kind === 'event').length, 1, 'applied once');
  });
});
