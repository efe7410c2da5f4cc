// Effects across a SIGKILL. A task whose engine is killed mid-attempt is taken over by another engine after its
// heartbeat lapses; the instance receives exactly one done event, and both attempts saw the same
// idempotency key.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createClient } from '../../engine/index.js';
import { eventually, nodeArgsFor, startNats, testModule, uniqueNamespace } from '../helpers.js';
import { relay } from './task-workflow.js';
import { checkout, payment } from '../fixtures/child-workflows.js';

const script = join(import.meta.dirname, 'task-engine-process.ts');

function spawnEngine(env: Record<string, string>): { child: ChildProcess; ready: Promise<void>; output: () => string } {
  const child = spawn(process.execPath, nodeArgsFor(script), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('READY')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`engine exited with ${code} before it was ready`)));
  });
  ready.catch(() => {});
  return { child, ready, output: () => out };
}

describe('effects after SIGKILL', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  const children: ChildProcess[] = [];
  let dir: string;
  before(async () => {
    nats = await startNats();
    dir = await mkdtemp(join(tmpdir(), 'jetstate-task-'));
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await nats?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('completes the task on another engine, applies one done event, keeps the idempotency key', { timeout: 60_000 }, async () => {
    const namespace = uniqueNamespace('takeover');
    const log = join(dir, 'attempts.jsonl');
    await writeFile(log, '');
    const env = { NATS_URL: nats.url, JETSTATE_NAMESPACE: namespace, TASK_LOG: log };
    const client = await createClient({ servers: nats.url, namespace });
    try {
      const a = spawnEngine(env);
      children.push(a.child);
      await a.ready;
      await client.start(relay, { id: 'p-1', input: { parcel: 'p-1' } });
      const lines = async () =>
        (await readFile(log, 'utf8'))
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as { pid: number; attempt: number; key: string });
      await eventually(async () => assert.equal((await lines()).length, 1), 10_000);
      a.child.kill('SIGKILL');
      const b = spawnEngine(env);
      children.push(b.child);
      await b.ready;
      const shipped = await client.waitFor(relay, 'p-1', (s) => s.matches('shipped'), { timeoutMs: 20_000 });
      const attempts = await lines();
      assert.equal(attempts.length, 2, JSON.stringify(attempts));
      assert.equal(attempts[0]!.pid, a.child.pid);
      assert.equal(attempts[1]!.pid, b.child.pid);
      assert.deepEqual(
        attempts.map((x) => x.attempt),
        [1, 2],
      );
      assert.equal(attempts[0]!.key, attempts[1]!.key);
      assert.equal((shipped.context as { shippedBy: number }).shippedBy, b.child.pid);
      assert.equal(shipped.revision, 2, 'exactly one done event applied');
      const history = await client.history(relay, 'p-1');
      assert.equal(history.filter((h) => (h.event as { type: string }).type === 'jetstate.task').length, 1);
      assert.equal((await client.verify(relay, 'p-1')).ok, true);
      b.child.kill('SIGTERM');
      await new Promise((r) => b.child.once('exit', r));
    } finally {
      await client.close();
    }
  });

  it("a child workflow's output reaches its parent after the child's engine was killed right after the child finished", { timeout: 60_000 }, async () => {
    const namespace = uniqueNamespace('childkill');
    const env = {
      NATS_URL: nats.url,
      JETSTATE_NAMESPACE: namespace,
      WORKFLOWS_MODULE: testModule(join(import.meta.dirname, '..', 'fixtures', 'child-workflows.ts')),
    };
    const client = await createClient({ servers: nats.url, namespace });
    try {
      const a = spawnEngine({ ...env, CRASH_AFTER_WRITE_OF: 'payment.c1_pay' });
      children.push(a.child);
      await a.ready;
      await client.start(checkout, { id: 'c1', input: { amount: 12 } });
      await client.waitFor(payment, 'c1_pay', (s) => s.matches('pending'), { timeoutMs: 10_000 });
      const exited = new Promise((r) => a.child.once('exit', (_code, signal) => r(signal)));
      await client.send(payment, 'c1_pay', { type: 'CONFIRM', receipt: 'r-9' });
      assert.equal(await exited, 'SIGKILL');
      assert.match(a.output(), /CRASH payment\.c1_pay/);
      // The child's state is written; the parent has not heard of it yet.
      assert.equal((await client.get(payment, 'c1_pay'))!.status, 'done');
      assert.equal((await client.get(checkout, 'c1'))!.value, 'paying');
      const b = spawnEngine(env);
      children.push(b.child);
      await b.ready;
      const paid = await client.waitFor(checkout, 'c1', (s) => s.matches('paid'), { timeoutMs: 20_000 });
      assert.deepEqual((paid.context as { receipt: unknown }).receipt, { receipt: 'r-9', amount: 12 });
      assert.equal(paid.revision, 2, 'the child outcome was applied once');
      assert.equal((await client.verify(checkout, 'c1')).ok, true);
      assert.equal((await client.verify(payment, 'c1_pay')).ok, true);
      b.child.kill('SIGTERM');
      await new Promise((r) => b.child.once('exit', r));
    } finally {
      await client.close();
    }
  });
});
