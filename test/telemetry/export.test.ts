// The export path, end to end: the built CLI (`jetstate dev` and `jetstate send`, separate
// processes) sets up the OpenTelemetry SDK from OTEL_* variables and delivers spans and metrics to
// an OTLP/HTTP receiver on loopback; the engine's transition is the child of the CLI's send span
// across processes, and no payload reaches the receiver.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CLI as cli, eventually, runCli, startNats, uniqueNamespace } from '../helpers.js';

const SECRET = 'SECRET-CUSTOMER-9f3b';

interface Received {
  path: string;
  contentType: string;
  body: Buffer;
}

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes: Array<{ key: string; value: Record<string, unknown> }>;
}

function spansOf(received: Received[]): OtlpSpan[] {
  return received
    .filter((r) => r.path === '/v1/traces' && r.contentType.includes('json'))
    .flatMap((r) => (JSON.parse(r.body.toString()) as { resourceSpans: Array<{ scopeSpans: Array<{ spans: OtlpSpan[] }> }> }).resourceSpans)
    .flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans));
}

const attr = (s: OtlpSpan, key: string): unknown => {
  const v = s.attributes.find((a) => a.key === key)?.value;
  return v ? Object.values(v)[0] : undefined;
};

const run = (args: string[], env: NodeJS.ProcessEnv) => runCli(args, { env });

describe('OTLP/HTTP export from the CLI', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let receiver: Server;
  let dev: ChildProcess | undefined;
  const received: Received[] = [];
  let env: NodeJS.ProcessEnv;
  let common: string[];

  before(async () => {
    nats = await startNats();
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ path: req.url ?? '', contentType: String(req.headers['content-type'] ?? ''), body: Buffer.concat(chunks) });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const endpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    env = {
      ...process.env,
      NATS_URL: '',
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '100',
      OTEL_METRIC_EXPORT_INTERVAL: '500',
      OTEL_SERVICE_NAME: 'jetstate-test',
    };
    common = ['--server', nats.url, '--namespace', uniqueNamespace('otlp')];
  });
  after(async () => {
    if (dev && dev.exitCode === null) dev.kill('SIGKILL');
    receiver?.close();
    await nats?.dispose();
  });

  it('delivers the CLI send span and the engine transition, linked across processes', async () => {
    dev = spawn(process.execPath, [cli, 'dev', ...common], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let devOut = '';
    dev.stdout!.on('data', (d: Buffer) => (devOut += d.toString()));
    dev.stderr!.on('data', (d: Buffer) => (devOut += d.toString()));
    await eventually(() => assert.match(devOut, /Traces and metrics go over OTLP to http:\/\/127\.0\.0\.1/), 20_000);

    const start = await run(['start', 'order', '--id', 'x-1', '--input', JSON.stringify({ orderId: 'x-1', customer: SECRET, amount: 5 }), ...common], env);
    assert.equal(start.code, 0, start.stderr);
    const send = await run(['send', 'order', 'x-1', 'PAY', '{"amount":5}', ...common], env);
    assert.equal(send.code, 0, send.stderr);

    const { sendSpan, transition } = await eventually(() => {
      const spans = spansOf(received);
      const sendSpan = spans.find((s) => s.name === 'jetstate.send order');
      const transition = spans.find((s) => s.name === 'jetstate.transition order' && attr(s, 'jetstate.event.type') === 'PAY');
      assert.ok(sendSpan && transition, 'both spans arrived');
      return { sendSpan, transition };
    }, 20_000);
    assert.equal(transition.traceId, sendSpan.traceId);
    assert.equal(transition.parentSpanId, sendSpan.spanId);
    assert.equal(attr(transition, 'jetstate.state.after'), 'paid');
    assert.ok(
      spansOf(received).some((s) => s.name === 'jetstate.transition order' && attr(s, 'jetstate.event.type') === 'xstate.init'),
      'the start is traced too',
    );
    await eventually(
      () =>
        assert.ok(
          received.some((r) => r.path === '/v1/metrics' && r.body.includes('jetstate.transitions')),
          'metrics arrive',
        ),
      20_000,
    );

    dev.kill('SIGINT');
    await new Promise((r) => dev!.once('exit', r));
    for (const r of received)
      assert.ok(
        !r.body.includes(SECRET),
        `${r.path} carries the secret: ${r.body.toString().slice(Math.max(0, r.body.indexOf(SECRET) - 600), r.body.indexOf(SECRET) + 100)}`,
      );
  });

  it('speaks http/protobuf by default, and nothing is set up without an endpoint', async () => {
    const before = received.length;
    const { OTEL_EXPORTER_OTLP_PROTOCOL: _, ...protobufEnv } = env;
    const send = await run(['send', 'order', 'x-1', 'SHIP', '{"carrier":"dhl","trackingId":"T1"}', ...common], protobufEnv);
    assert.equal(send.code, 0, send.stderr);
    const traces = received.slice(before).filter((r) => r.path === '/v1/traces');
    assert.ok(traces.length >= 1, 'flushed before the command exited');
    assert.match(traces[0]!.contentType, /protobuf/);
    assert.ok(traces[0]!.body.includes('jetstate.send order'));

    const quiet = received.length;
    const { OTEL_EXPORTER_OTLP_ENDPOINT: __, ...offEnv } = env;
    assert.equal((await run(['get', 'order', 'x-1', ...common], offEnv)).code, 0);
    assert.equal(received.length, quiet);
  });
});
