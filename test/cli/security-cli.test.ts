// The CLI and secrets: output redacted unless --reveal (with the key ring), a rejected event listed by
// `deadletters`, `reencrypt` moving an instance (record and history) to the newest key of the ring and
// exiting 1 with a list of what it could not move, and the key ring read from JETSTATE_KEYS or, when
// that is not set, JETSTATE_SECRET_KEYS.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { createEngine, type Engine } from '../../engine/index.js';
import { layout, partitionOf } from '../../engine/protocol/names.js';
import { payment } from '../../workflows/payment.js';
import { runCli, startNats, uniqueNamespace } from '../helpers.js';

const CARD = '4111111111111111';
const k1 = `k1:${randomBytes(32).toString('base64')}`;
const k2 = `k2:${randomBytes(32).toString('base64')}`;

// In an empty folder: the CLI falls back to a development key ring in ./.jetstate/dev-keys.
const run = (args: string[], keys?: string) => runCli(args, { env: { ...process.env, NATS_URL: '', JETSTATE_KEYS: keys ?? '' }, cwd: tmpdir() });

describe('the CLI with secrets', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let namespace: string;
  let common: string[];
  before(async () => {
    nats = await startNats();
    namespace = uniqueNamespace('clisec');
    engine = await createEngine({ servers: nats.url, namespace, workflows: [payment], secrets: { keyRing: k1 } });
    common = ['--server', nats.url, '--namespace', namespace];
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
  });

  it('redacts secrets unless --reveal is given with the key ring', async () => {
    const input = JSON.stringify({ paymentId: 'p-1', amount: 12, card: { number: CARD, expiry: '12/29' } });
    const start = await run(['start', 'payment', '--id', 'p-1', '--input', input, ...common], k1);
    assert.equal(start.code, 0, start.stderr);
    assert.ok(!start.stdout.includes(CARD), start.stdout);
    const noKey = await run(['start', 'payment', '--id', 'p-2', '--input', input, ...common]);
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /declares secrets.*keyRing/);
    assert.equal((await run(['send', 'payment', 'p-1', 'CONFIRM', '{"cvc":"123"}', ...common], k1)).code, 0);
    assert.equal((await run(['wait', 'payment', 'p-1', '--state', 'captured', ...common], k1)).code, 0);

    const shown = await run(['get', 'payment', 'p-1', ...common], k1);
    assert.equal(shown.code, 0, shown.stderr);
    assert.ok(!shown.stdout.includes(CARD), 'redacted by default');
    assert.match(shown.stdout, /\[encrypted:k1\]/);
    assert.match(shown.stdout, /"last4":"1111"/);
    const revealed = await run(['get', 'payment', 'p-1', '--reveal', ...common], k1);
    assert.ok(revealed.stdout.includes(CARD), revealed.stdout);
    const history = await run(['history', 'payment', 'p-1', '--json', ...common], k1);
    assert.ok(!history.stdout.includes(CARD) && !history.stdout.includes('"123"'), history.stdout);
    assert.match((await run(['get', 'payment', 'p-1', '--reveal', ...common])).stderr, /--reveal needs the key ring/);
  });

  it('lists rejected events with their reasons', async () => {
    const nc = await connect({ servers: nats.url });
    await jetstream(nc).publish(layout(namespace).eventSubject(partitionOf('payment', 'p-1', 16), 'payment', 'p-1'), '{"type":"CONFIRM","cvc":12}');
    await nc.close();
    let letters = '';
    for (let i = 0; i < 50 && !/p-1/.test(letters); i++) {
      letters = (await run(['deadletters', ...common])).stdout;
      if (!/p-1/.test(letters)) await new Promise((r) => setTimeout(r, 200));
    }
    assert.match(letters, /payment p-1 {2}seq \d+: .*CONFIRM/);
  });

  it('re-encrypts under the newest key, after which the old key can go', async () => {
    const r = await run(['reencrypt', 'payment', ...common], `${k1},${k2}`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^re-encrypted [1-9]\d* fields under the newest key: 1 payment records rewritten, history of 1 instances rewritten \(\d+ messages\)\nnothing left on an older key\n$/,
    );
    const onlyNew = await run(['get', 'payment', 'p-1', '--reveal', ...common], k2);
    assert.equal(onlyNew.code, 0, onlyNew.stderr);
    assert.ok(onlyNew.stdout.includes(CARD));
    const history = await run(['history', 'payment', 'p-1', '--reveal', '--json', ...common], k2);
    assert.equal(history.code, 0, history.stderr);
    assert.ok(history.stdout.includes(CARD), 'the history opens with the new key alone');
    assert.match(
      (await run(['reencrypt', 'payment', ...common], `${k1},${k2}`)).stdout,
      /re-encrypted 0 fields under the newest key: 0 payment records rewritten, history of 0 instances/,
    );
  });

  it('reencrypt lists what it cannot move and exits 1; the ring may come from JETSTATE_SECRET_KEYS', async () => {
    const k3 = `k3:${randomBytes(32).toString('base64')}`;
    const withSecretKeys = (args: string[], keys: string) =>
      runCli(args, { env: { ...process.env, NATS_URL: '', JETSTATE_KEYS: '', JETSTATE_SECRET_KEYS: keys }, cwd: tmpdir() });
    const revealed = await withSecretKeys(['get', 'payment', 'p-1', '--reveal', ...common], k2);
    assert.equal(revealed.code, 0, revealed.stderr);
    assert.ok(revealed.stdout.includes(CARD), 'JETSTATE_SECRET_KEYS is read when JETSTATE_KEYS is not set');
    // p-1 is sealed with k2, which this ring lacks.
    const r = await withSecretKeys(['reencrypt', 'payment', ...common], k3);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /2 could not be re-encrypted/);
    assert.match(r.stdout, /\n {2}payment\.p-1: .*sealed with key 'k2', which is not in the key ring/);
    assert.match(r.stdout, /\n {2}payment\.p-1: history: /);
    const json = await withSecretKeys(['reencrypt', 'payment', '--json', ...common], `${k2},${k3}`);
    assert.equal(json.code, 0, json.stderr);
    const report = JSON.parse(json.stdout) as { records: number; failed: unknown[]; history: { instances: number } };
    assert.deepEqual([report.records, report.failed, report.history.instances], [1, [], 1]);
  });
});
