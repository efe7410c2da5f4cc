/**
 * The Restate side of the peer benchmark: a service process, as a Restate user runs one, written
 * with the Restate TypeScript SDK. bench/peers.ts spawns it with
 *
 *   RESTATE_SDK_ENTRY=<the SDK's dist/index.js in the benchmark's Restate install>
 *   node bench/peers/restate-service.mjs
 *
 * It listens with HTTP/2 on 127.0.0.1 (a free port) and prints `{"port":N}` once ready.
 *
 *  - `steps/run`: workload A, 10 sequential durable steps; step i returns sum + i (ctx.run journals
 *    each result before the next step starts). Returns { sum } (55).
 *  - `counter/<key>/add`: workload B, a virtual object; each call adds `i` to the key's state and
 *    counts it (calls to one key run one at a time, in the order Restate accepted them).
 *    Returns { sum, count } after the update.
 *
 * Plain JavaScript so that it needs nothing from the project: it imports only the SDK from the
 * benchmark's temporary install and Node's own modules.
 */
import http2 from 'node:http2';
import { pathToFileURL } from 'node:url';

const entry = process.env.RESTATE_SDK_ENTRY;
if (!entry) {
  console.error('restate-service: set RESTATE_SDK_ENTRY to the path of @restatedev/restate-sdk/dist/index.js');
  process.exit(2);
}
const restate = await import(pathToFileURL(entry).href);

const STEPS = 10;

const steps = restate.service({
  name: 'steps',
  handlers: {
    run: async (ctx) => {
      let sum = 0;
      for (let i = 1; i <= STEPS; i++) {
        const before = sum;
        sum = await ctx.run(`step ${i}`, () => before + i);
      }
      return { sum };
    },
  },
});

const counter = restate.object({
  name: 'counter',
  handlers: {
    add: async (ctx, input) => {
      const sum = ((await ctx.get('sum')) ?? 0) + input.i;
      const count = ((await ctx.get('count')) ?? 0) + 1;
      ctx.set('sum', sum);
      ctx.set('count', count);
      return { sum, count };
    },
  },
});

const server = http2.createServer(restate.createEndpointHandler({ services: [steps, counter] }));
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
// Nothing to drain: every result is in Restate's journal before it counts.
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
