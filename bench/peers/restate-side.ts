/**
 * The Restate side of the peer benchmark: the service process (bench/peers/restate-service.mjs,
 * one for the whole run) and, per measurement, a fresh restate-server it is registered with. The
 * load generator in this process calls the ingress over HTTP/1.1 with keep-alive (Node's `http`,
 * one connection per request in flight), as a plain client of Restate would.
 *
 *  - A: an invocation is one request-response call `POST /steps/run`, complete when Restate
 *    answers with the handler's result (after its 10 journaled `ctx.run` steps).
 *  - B: each lane owns one `counter` key; an invocation is 10 calls `POST /counter/<key>/add`
 *    sent at once, complete when all 10 have answered (each answers once it is applied).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { closedLoop, windowOptions, type Window } from './closed-loop.js';
import type { Measurement, Workload } from './jetstate-side.js';
import { STEPS } from './jetstate-workflows.js';
import { trackChild } from './cleanup.js';
import { cpuMeter, type CpuUse } from './machine.js';
import { startRestateServer } from './restate-server.js';

const INVOCATION_TIMEOUT_MS = 60_000;
const SUM_OF_STEPS = (STEPS * (STEPS + 1)) / 2;

export interface RestateService {
  pid: number;
  url: string;
  stop(): Promise<void>;
}

/** Spawns the service process and resolves once it listens. */
export async function startRestateService(sdkEntry: string): Promise<RestateService> {
  const script = fileURLToPath(new URL('./restate-service.mjs', import.meta.url));
  const child: ChildProcess = spawn(process.execPath, [script], {
    stdio: ['ignore', 'pipe', 'inherit'],
    // The SDK logs every invocation at INFO; a service in production logs less.
    env: { ...process.env, RESTATE_SDK_ENTRY: sdkEntry, PORT: '0', RESTATE_LOGGING: 'WARN', NODE_OPTIONS: '' },
  });
  const stop = trackChild(child, 5_000);
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the Restate service did not start listening within 20 s')), 20_000);
      child.once('exit', (code) => reject(new Error(`the Restate service exited (${code}) before it listened`)));
      createInterface({ input: child.stdout! }).once('line', (line) => {
        clearTimeout(timer);
        try {
          resolve((JSON.parse(line) as { port: number }).port);
        } catch {
          reject(new Error(`the Restate service printed '${line}' instead of its port`));
        }
      });
    });
    return { pid: child.pid!, url: `http://127.0.0.1:${port}`, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** POSTs JSON and resolves with the parsed JSON answer; rejects on anything but 2xx. */
function postJson(agent: http.Agent, url: URL, body: unknown): Promise<unknown> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          if ((res.statusCode ?? 0) >= 300) return reject(new Error(`POST ${url.pathname}: HTTP ${res.statusCode}: ${text.slice(0, 300)}`));
          try {
            resolve(JSON.parse(text));
          } catch {
            reject(new Error(`POST ${url.pathname}: not JSON: ${text.slice(0, 300)}`));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

export interface RestateRunOptions {
  serverBinary: string;
  service: RestateService;
  workload: Workload;
  concurrency: number;
  window: Window;
}

/** One measurement on a fresh restate-server; `describe` tells the configuration once. */
export async function runRestate(o: RestateRunOptions): Promise<Measurement & { describe: string }> {
  const server = await startRestateServer(o.serverBinary);
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 4_096 });
  try {
    await server.register(o.service.url);
    const ingress = server.ingressUrl;
    const stepsUrl = new URL('/steps/run', ingress);
    // The ingress may take a moment to learn the registered services: retry one call briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        await postJson(agent, stepsUrl, {});
        break;
      } catch (e) {
        if (attempt >= 50) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    let invoke: (lane: number, k: number) => Promise<void>;
    if (o.workload === 'A') {
      invoke = async () => {
        const r = (await postJson(agent, stepsUrl, {})) as { sum: number };
        if (r.sum !== SUM_OF_STEPS) throw new Error(`Restate A: sum ${r.sum}, expected ${SUM_OF_STEPS}`);
      };
    } else {
      const urls = Array.from({ length: o.concurrency }, (_, l) => new URL(`/counter/b${l}/add`, ingress));
      invoke = async (lane, k) => {
        const answers = (await Promise.all(Array.from({ length: STEPS }, (_, j) => postJson(agent, urls[lane]!, { i: j + 1 })))) as Array<{
          sum: number;
          count: number;
        }>;
        const last = answers.reduce((a, b) => (b.count > a.count ? b : a));
        if (last.count !== STEPS * (k + 1) || last.sum !== SUM_OF_STEPS * (k + 1)) {
          throw new Error(`Restate B: key b${lane} shows count ${last.count} sum ${last.sum}, expected ${STEPS * (k + 1)} and ${SUM_OF_STEPS * (k + 1)}`);
        }
      };
    }
    let meter: (() => CpuUse) | undefined;
    let cpu: CpuUse = {};
    const loop = await closedLoop({
      ...windowOptions(o.window, o.concurrency),
      invocationTimeoutMs: INVOCATION_TIMEOUT_MS,
      invoke,
      onWindow: {
        open: () => void (meter = cpuMeter({ 'restate-server': server.pid, service: o.service.pid })),
        close: () => void (cpu = meter?.() ?? {}),
      },
    });
    return { loop, cpu, retries: 0, describe: server.describe };
  } catch (e) {
    throw new Error(`${(e as Error).message}\nrestate-server log:\n${await server.logTail()}`, { cause: e });
  } finally {
    agent.destroy();
    await server.stop();
  }
}
