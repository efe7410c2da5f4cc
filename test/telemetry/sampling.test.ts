// Parent-based sampling keeps whole traces: a send the sampler left out still carries its context
// (sampled flag off), so the transition it causes, the timer and task that transition schedules,
// the child workflow it starts and everything after are left out too, instead of each hop
// deciding afresh (which, at a 10 % ratio, traced about 19 % of transitions, as fragments without
// their cause). And no span links to a transition that was never recorded.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import { setup } from 'xstate';
import { z } from 'zod';
import { activity, childWorkflow, createEngine, defineWorkflow, type Engine } from '../../engine/index.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';

const child = defineWorkflow({
  name: 'sampledchild',
  version: 1,
  input: z.object({}),
  events: { NOOP: z.object({}) },
  // Not shorter: a timer of a new instance that fires before the instance's record is created is
  // rejected ("instance does not exist"), which a loaded machine showed with 10 ms.
  machine: setup({}).createMachine({ initial: 'waiting', states: { waiting: { after: { 300: 'over' }, on: { NOOP: {} } }, over: { type: 'final' } } }),
});

const flow = defineWorkflow({
  name: 'sampled',
  version: 1,
  input: z.object({}),
  events: { GO: z.object({}) },
  machine: setup({ actors: { work: activity(async () => ({ ok: true }), { retry: { maxAttempts: 1 } }), sub: childWorkflow(child) } }).createMachine({
    initial: 'idle',
    states: {
      idle: { on: { GO: 'waiting' } },
      waiting: { after: { 20: 'working' } },
      working: { invoke: { src: 'work', onDone: 'delegating' } },
      delegating: { invoke: { id: 'sub', src: 'sub', onDone: 'done' } },
      done: { type: 'final' },
    },
  }),
});

const INSTANCES = 40;

describe('parent-based sampling', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(0.5) }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });

  before(async () => {
    nats = await startNats();
    engine = await createEngine({ servers: nats.url, namespace: uniqueNamespace('sampling'), workflows: [flow, child], telemetry: { tracerProvider } });
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
    await tracerProvider.shutdown();
  });

  it('samples each send with everything it causes, or none of it', async () => {
    const ids = Array.from({ length: INSTANCES }, (_, i) => `s-${i}`);
    for (const id of ids) await engine.start(flow, { id, input: {} });
    // Each send is a root (no active span), so the ratio sampler decides it alone.
    for (const id of ids) await engine.send(flow, id, { type: 'GO' });
    for (const id of ids) await engine.waitFor(flow, id, (i) => i.status === 'done', { timeoutMs: 15_000 });

    const spans = exporter.getFinishedSpans();
    // The instance's spans and its child's, except the instance's own start (a root of its own).
    const of = (id: string): ReadableSpan[] =>
      spans.filter((s) => {
        const instance = String(s.attributes['jetstate.instance.id']);
        if (instance === id) return s.attributes['jetstate.event.type'] !== 'xstate.init' && !s.name.startsWith('jetstate.start');
        return instance.startsWith(`${id}_`);
      });
    const caused = (id: string): string[] =>
      of(id)
        .map((s) => `${s.name} ${String(s.attributes['jetstate.event.type'] ?? '')}`.trim())
        .sort();
    const whole = [
      'jetstate.send sampled GO',
      'jetstate.task sampled.work',
      'jetstate.timer sampled',
      'jetstate.timer sampledchild',
      'jetstate.transition sampled GO',
      'jetstate.transition sampled jetstate.child',
      'jetstate.transition sampled jetstate.task',
      'jetstate.transition sampled jetstate.timer',
      'jetstate.transition sampledchild jetstate.timer',
      'jetstate.transition sampledchild xstate.init',
    ];
    // A task's outcome and a timer's fire reach the instance as engine events; their spans may
    // still be on their way to the exporter when the instance is done.
    await eventually(() => {
      for (const id of ids) {
        const seen = caused(id);
        assert.ok(seen.length === 0 || seen.length === whole.length, `instance ${id}: ${seen.join(', ')}`);
      }
    });
    let sampled = 0;
    for (const id of ids) {
      const seen = caused(id);
      if (seen.length === 0) continue;
      sampled++;
      assert.deepEqual(seen, whole, `instance ${id}: a partial trace`);
      const traceIds = new Set(of(id).map((s) => s.spanContext().traceId));
      assert.equal(traceIds.size, 1, `instance ${id}: one trace`);
    }
    assert.ok(sampled > 0 && sampled < INSTANCES, `a 50 % ratio sampled ${sampled} of ${INSTANCES} sends`);

    // Links point only at spans that exist.
    const recorded = new Set(spans.map((s) => s.spanContext().spanId));
    for (const s of spans) for (const l of s.links) assert.ok(recorded.has(l.context.spanId), `${s.name} links to a span that was never recorded`);
  });
});
