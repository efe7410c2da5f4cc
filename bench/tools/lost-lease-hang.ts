/**
 * Regression check: a partition worker whose intake is parked on back-pressure (pending events >=
 * maxPendingPerPartition) must still finish stop(). Before commit 1214f00 it did not: stop()
 * awaited the intake loop, which waited for room that an aborted or stuck drain never made, so
 * engine.close() hung and, after a lost lease, the whole lease round (renew -> worker.stop) hung.
 * Prints "RESULT: closed (~drainTimeoutMs)" when fixed, "close() still pending" when not.
 *
 *   npx tsx bench/tools/lost-lease-hang.ts 1               # maxPending 1, lease stolen
 *   npx tsx bench/tools/lost-lease-hang.ts 1 --no-steal    # maxPending 1, plain close()
 *   npx tsx bench/tools/lost-lease-hang.ts 100             # control: close() returns after drainTimeoutMs
 *
 * The one instance's apply is made to retry forever by deleting the history stream (publishHistory
 * then fails), which stands for any stuck or slow instance. Exits by itself within ~30 s.
 */
import { rm } from 'node:fs/promises';
import { z } from 'zod';
import { assign, setup } from 'xstate';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { NatsServer } from '../../adapters/nats-server/launcher.js';
import { createEngine, defineWorkflow } from '../../engine/index.js';
const counter = defineWorkflow({
  name: 'counter',
  version: 1,
  input: z.object({}),
  events: { INC: z.object({}) },
  machine: setup({ types: { context: {} as { count: number } } }).createMachine({
    context: { count: 0 },
    initial: 'a',
    states: { a: { on: { INC: { actions: assign({ count: ({ context }) => context.count + 1 }) } } } },
  }),
});
const srv = await NatsServer.start();
const hard = setTimeout(() => {
  console.log('RESULT: hung (hard timeout)');
  void srv.stop().finally(() => process.exit(1));
}, 30_000);
const ns = 'll';
const logs: string[] = [];
const logger = { debug() {}, info() {}, warn: (m: string) => logs.push(`warn ${m}`), error: (m: string) => logs.push(`error ${m}`) };
const e = await createEngine({
  servers: srv.url,
  namespace: ns,
  workflows: [counter],
  partitions: 1,
  maxPendingPerPartition: Number(process.argv[2] ?? 1),
  leaseTtlMs: 600,
  drainTimeoutMs: 1_000,
  logger,
});
await e.start(counter, { id: 'a', input: {} });
const nc = await connect({ servers: srv.url, noAsyncTraces: true });
const jsm = await jetstreamManager(nc);
// Make every apply fail and retry: the history stream is gone, so publishHistory gets no responders.
await jsm.streams.delete(`${ns}_history`);
for (let i = 0; i < 5; i++) await e.send(counter, 'a', { type: 'INC' });
await new Promise((r) => setTimeout(r, 500)); // intake now holds 1 event (= maxPending) and waits for room
// Steal the lease: the engine's next renew fails with "wrong last sequence" and stops the worker with abort.
const control = await new Kvm(jetstream(nc)).open(`${ns}_control`);
if (!process.argv.includes('--no-steal')) await control.put('lease.0', new TextEncoder().encode(JSON.stringify({ owner: 'thief', checkpoint: 0 })));
await new Promise((r) => setTimeout(r, 1_500));
console.log('engine status:', JSON.stringify(e.status()));
const t = Date.now();
const closed = await Promise.race([e.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('close() still pending after 15 s'), 15_000))]);
console.log(`RESULT: ${closed} (${Date.now() - t} ms)`);
console.log(
  logs
    .filter((l) => /lease|stopping/.test(l))
    .slice(0, 5)
    .join('\n'),
);
clearTimeout(hard);
await nc.close();
await srv.stop();
await rm(srv.storeDir, { recursive: true, force: true });
process.exit(0);
