import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createEngine, type Engine } from '../../engine/index.js';
import { order } from '../../workflows/order.js';
import { CLI as cli, runCli, startNats, uniqueNamespace } from '../helpers.js';

const run = (args: string[]) => runCli(args);

describe('the jetstate CLI (built, as a subprocess)', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let common: string[];
  before(async () => {
    nats = await startNats();
    const namespace = uniqueNamespace('cli');
    engine = await createEngine({ servers: nats.url, namespace, workflows: [order] });
    common = ['--server', nats.url, '--namespace', namespace];
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('starts, sends, gets, waits, shows history and verifies, in plain words', async () => {
    const start = await run(['start', 'order', '--id', 'c-1', '--input', '{"orderId":"c-1","customer":"ada","amount":5}', ...common]);
    assert.equal(start.code, 0, start.stderr);
    assert.match(start.stdout, /started order c-1 .*awaitingPayment/);
    assert.equal((await run(['send', 'order', 'c-1', 'PAY', '{"amount":5}', ...common])).code, 0);
    const wait = await run(['wait', 'order', 'c-1', '--state', 'paid', '--timeout-ms', '10000', ...common]);
    assert.equal(wait.code, 0, wait.stderr);
    const get = await run(['get', 'order', 'c-1', '--json', ...common]);
    assert.equal(get.code, 0);
    assert.equal(JSON.parse(get.stdout).value, 'paid');
    const history = await run(['history', 'order', 'c-1', ...common]);
    assert.match(history.stdout, /PAY\s+"awaitingPayment" -> "paid"/);
    const verify = await run(['verify', 'order', 'c-1', ...common]);
    assert.equal(verify.code, 0);
    assert.match(verify.stdout, /^ok: replaying 1 events/);
    assert.match((await run(['list', 'order', '--state', 'paid', ...common])).stdout, /c-1\s+running\s+"paid"/);
  });

  it('says what is wrong and sets the exit code', async () => {
    const missing = await run(['send', 'order', 'nope', 'PAY', '{"amount":1}', ...common]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /does not exist; start it first/);
    const badJson = await run(['send', 'order', 'c-1', 'PAY', '{amount:1}', ...common]);
    assert.equal(badJson.code, 2);
    assert.match(badJson.stderr, /not valid JSON/);
    const badEvent = await run(['send', 'order', 'c-1', 'REFUND', ...common]);
    assert.equal(badEvent.code, 1);
    assert.match(badEvent.stderr, /'REFUND' is not declared/);
    assert.equal((await run(['frobnicate'])).code, 2);
    const noServer = await run(['get', 'order', 'x', '--server', 'nats://127.0.0.1:1']);
    assert.equal(noServer.code, 1);
    assert.match(noServer.stderr, /cannot connect to NATS/);
  });

  it('refuses an empty --id or --idempotency-key instead of dropping it (a random id, a send without dedupe)', async () => {
    const count = async (): Promise<number> => {
      let n = 0;
      for await (const _ of engine.list(order)) n++;
      return n;
    };
    const before = await count();
    const emptyId = await run(['start', 'order', '--id', '', '--input', '{"orderId":"e-1","customer":"ada","amount":1}', ...common]);
    assert.notEqual(emptyId.code, 0, emptyId.stdout);
    assert.match(emptyId.stderr, /instance id "" is not valid/);
    assert.equal(await count(), before, 'nothing was started');
    const emptyKey = await run(['send', 'order', 'c-1', 'PAY', '{"amount":1}', '--idempotency-key', '', ...common]);
    assert.notEqual(emptyKey.code, 0, emptyKey.stdout);
    assert.match(emptyKey.stderr, /idempotencyKey/);
  });

  it('dev starts a nats-server with JetStream when none answers, runs the engine, and stops on SIGINT', async () => {
    const cwd = await mkdtemp(join(tmpdir(), 'jetstate-dev-'));
    const child = spawn(process.execPath, [cli, 'dev'], { cwd, env: { ...process.env, NATS_URL: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      const deadline = Date.now() + 20_000;
      while (!/Press Ctrl-C/.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.match(out, /(started nats-server .* at|using the NATS at) (nats:\/\/\S+)/, out);
      const url = /at (nats:\/\/\S+?)[,\s]/.exec(out)![1]!;
      assert.equal((await run(['start', 'order', '--id', 'd-1', '--input', '{"orderId":"d-1","customer":"bo","amount":1}', '--server', url])).code, 0);
      assert.equal((await run(['send', 'order', 'd-1', 'PAY', '{"amount":1}', '--server', url])).code, 0);
      assert.equal((await run(['wait', 'order', 'd-1', '--state', 'paid', '--server', url])).code, 0);
      child.kill('SIGINT');
      assert.equal(await exited, 0, out);
      if (/started nats-server/.test(out)) assert.match(out, /stopped nats-server/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await rm(cwd, { recursive: true, force: true });
    }
  });
});
