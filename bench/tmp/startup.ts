import { performance } from 'node:perf_hooks';
import { rm } from 'node:fs/promises';
import { z } from 'zod';
import { assign, setup } from 'xstate';
import { NatsServer } from '../../adapters/nats-server/launcher.js';
import { createEngine, createClient, defineWorkflow } from '../../engine/index.js';
const counter = defineWorkflow({ name: 'counter', version: 1, input: z.object({}), events: { INC: z.object({}) },
  machine: setup({ types: { context: {} as { count: number } } }).createMachine({ context: { count: 0 }, initial: 'a', states: { a: { on: { INC: { actions: assign({ count: ({ context }) => context.count + 1 }) } } } } }) });
const srv = await NatsServer.start({ syncAlways: process.argv.includes('--always') });
for (let i = 0; i < 3; i++) {
  const ns = `s${i}`;
  const c = await createClient({ servers: srv.url, namespace: ns, workflows: [counter] }); await c.close();
  const t0 = performance.now();
  const e = await createEngine({ servers: srv.url, namespace: ns, workflows: [counter] });
  const t1 = performance.now();
  console.log('empty ns createEngine ms', (t1 - t0).toFixed(1), e.status().owned.length);
  const t2 = performance.now();
  await e.close();
  console.log('close ms', (performance.now() - t2).toFixed(1));
}
await srv.stop(); await rm(srv.storeDir, { recursive: true, force: true });
