/**
 * Where a sequence runs in jetstate: an engine in this process (with a clock the test can hold),
 * or an engine process that is SIGKILLed and replaced. Both give a client, raw reads of the
 * instance records, and the engine's warnings.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kvm, type KV } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { createClient, createEngine, type Client, type Clock, type Engine, type WorkflowDefinition } from '../../engine/index.js';
import { InstanceRecordSchema, type InstanceRecord } from '../../engine/protocol/record.js';
import { decodeJson } from '../../engine/protocol/json.js';
import { nodeArgsFor, uniqueNamespace } from '../helpers.js';
import { engineCaughtUp } from './caught-up.js';
import { addEffect, recordEmit, recordLog, type EffectCall } from './effects.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Partitions of the namespaces of engine processes (few, so leases and checkpoints are few). */
const PARTITIONS = 4;

/** Engine processes alive, SIGKILLed if this process exits without closing them. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The engine's clock: real time, unless the test holds it (then no timer comes due). */
export class HoldableClock implements Clock {
  private heldAt: number | undefined;
  now(): number {
    return this.heldAt ?? Date.now();
  }
  hold(): number {
    this.heldAt = Date.now();
    return this.heldAt;
  }
  release(): number {
    this.heldAt = undefined;
    return Date.now();
  }
}

/** A time window in which no engine fired timers (a held clock, or no engine at all). */
export interface Frozen {
  from: number;
  to: number;
}

export interface Target {
  readonly client: Client;
  read(workflow: string, id: string): Promise<InstanceRecord | null>;
  /** Resolves while an engine runs (a killed one is being replaced). */
  up(): Promise<void>;
  /** Engine restarts so far. */
  readonly restarts: Frozen[];
  /**
   * Lets `ms` pass while no timer can fire (a held clock, or no engine running), doing `during`
   * (e.g. starting the instance) at its beginning; the window it made.
   */
  stall?(ms: number, during?: () => Promise<void>): Promise<Frozen>;
  /** Kills the engine right after its next state write of this instance key. */
  armCrash?(key: string): void;
  /**
   * True once the engine has finished every event of these instances that the stream holds:
   * after a restart (what a crash left undone, such as an outbox, is redone then) and between
   * instances (a child's start runs its actions on a kick), neither leaves a trace in the
   * records to wait for.
   */
  caughtUp?(instances: ReadonlyArray<{ workflow: string; id: string }>): Promise<boolean>;
  /** The engine's warnings and errors so far. */
  warnings(): string[];
  close(): Promise<void>;
}

/** The raw connection of a target: records read as stored, and the instances' emitted events. */
async function openKv(url: string, namespace: string): Promise<{ nc: NatsConnection; kv: KV }> {
  const nc = await connect({ servers: url, name: 'fidelity-raw', maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  // XState's emit: the engine publishes each on <ns>.emit.<workflow>.<id>.
  nc.subscribe(`${namespace}.emit.>`, {
    callback: (err, m) => {
      if (err) return;
      const id = m.subject.split('.').pop() ?? '?';
      const type = (decodeJson(m.data) as { type?: unknown } | null)?.type;
      recordEmit(id, String(type));
    },
  });
  await nc.flush();
  return { nc, kv: await new Kvm(nc).open(`${namespace}_instances`) };
}

async function readRecord(kv: KV, workflow: string, id: string): Promise<InstanceRecord | null> {
  const e = await kv.get(`${workflow}.${id}`);
  if (!e || e.operation !== 'PUT') return null;
  return InstanceRecordSchema.parse(decodeJson(e.value));
}

/** An engine in this process with a holdable clock and a logger the test reads. */
export class InProcessTarget implements Target {
  readonly restarts: Frozen[] = [];
  private readonly lines: string[] = [];
  private constructor(
    readonly engine: Engine,
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly clock: HoldableClock,
    lines: string[],
  ) {
    this.lines = lines;
  }

  static async open(url: string, workflows: WorkflowDefinition[], label = 'fidelity'): Promise<InProcessTarget> {
    const namespace = uniqueNamespace(label);
    const clock = new HoldableClock();
    const lines: string[] = [];
    // XState's log: the engine's info line, recorded like the reference's logger call.
    const info = (_m: string, f?: Record<string, unknown>): void => {
      if (f?.['action'] === 'xstate.log') recordLog(String(f['id']), f['label'], f['value']);
    };
    const logger = { debug: () => {}, info, warn: (m: string) => lines.push(`warn: ${m}`), error: (m: string) => lines.push(`error: ${m}`) };
    const engine = await createEngine({ servers: url, namespace, workflows, clock, logger, partitions: 4, recordShards: 1, leaseTtlMs: 2_000 });
    const { nc, kv } = await openKv(url, namespace);
    return new InProcessTarget(engine, nc, kv, clock, lines);
  }

  /** From the engine's live partition workers: every event of these instances is finished. */
  caughtUp(instances: ReadonlyArray<{ workflow: string; id: string }>): Promise<boolean> {
    return engineCaughtUp(this.engine, instances);
  }

  get client(): Client {
    return this.engine;
  }
  read(workflow: string, id: string): Promise<InstanceRecord | null> {
    return readRecord(this.kv, workflow, id);
  }
  async up(): Promise<void> {}
  /** Holds the clock: only for a target that runs one sequence (the clock is the engine's). */
  async stall(ms: number, during?: () => Promise<void>): Promise<Frozen> {
    const from = this.clock.hold();
    try {
      await during?.();
      await sleep(Math.max(0, from + ms - Date.now()));
    } finally {
      this.clock.release();
    }
    return { from, to: Date.now() };
  }
  warnings(): string[] {
    return [...this.lines];
  }
  async close(): Promise<void> {
    await this.engine.close().catch(() => {});
    await this.nc.close().catch(() => {});
  }
}

/**
 * Engine processes (test/fidelity/engine-process.ts) on one namespace: when one dies (SIGKILL, or
 * its own crash after a state write), a new one is started at once; `up()` waits for it.
 */
export class ProcessTarget implements Target {
  readonly restarts: Frozen[] = [];
  private child: ChildProcess | undefined;
  private gate: Promise<void> = Promise.resolve();
  private readonly lines: string[] = [];
  private closing = false;
  private suspended = false;
  private generation = 0;
  private queries = 0;
  /** Questions to the engine process waiting for its answer. */
  private readonly pending = new Map<number, (ok: boolean) => void>();

  private constructor(
    readonly client: Client,
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly url: string,
    private readonly namespace: string,
  ) {}

  static async open(url: string, label = 'fidelitykill'): Promise<ProcessTarget> {
    const namespace = uniqueNamespace(label);
    const client = await createClient({ servers: url, namespace, partitions: PARTITIONS, recordShards: 1 });
    const { nc, kv } = await openKv(url, namespace);
    const t = new ProcessTarget(client, nc, kv, url, namespace);
    t.gate = t.spawn();
    await t.gate;
    return t;
  }

  /** Starts an engine process and resolves once it is READY. */
  private spawn(): Promise<void> {
    const generation = ++this.generation;
    const args = [...nodeArgsFor(join(here, 'engine-process.ts')), '--nats', this.url, '--namespace', this.namespace];
    const child = spawn(process.execPath, args, { cwd: join(here, '..', '..'), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    this.child = child;
    // A message to a process that just died fails with EPIPE: that death is handled on 'exit'.
    child.on('error', () => {});
    live.add(child);
    child.on('message', (m: { answer?: number; ok?: boolean }) => {
      if (typeof m?.answer === 'number') this.answer(m.answer, m.ok === true);
    });
    child.once('exit', () => {
      live.delete(child);
      // Its unanswered questions: no.
      for (const q of [...this.pending.keys()]) this.answer(q, false);
    });
    let crashAt: number | undefined;
    const ready = new Promise<void>((ok, ko) => {
      let buffered = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        buffered += d;
        for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
          const line = buffered.slice(0, i);
          buffered = buffered.slice(i + 1);
          if (line.startsWith('READY')) ok();
          else if (line.startsWith('EFFECT ')) addEffect(JSON.parse(line.slice(7)) as EffectCall);
          else if (line.startsWith('CRASH ')) crashAt = (JSON.parse(line.slice(6)) as { atMs: number }).atMs;
        }
      });
      let errBuffered = '';
      child.stderr!.setEncoding('utf8').on('data', (d: string) => {
        errBuffered += d;
        for (let i = errBuffered.indexOf('\n'); i >= 0; i = errBuffered.indexOf('\n')) {
          const line = errBuffered.slice(0, i).replace(/^jetstate /, '');
          errBuffered = errBuffered.slice(i + 1);
          if (this.lines.length < 2_000) this.lines.push(line);
        }
      });
      child.once('exit', (code, signal) => ko(new Error(`engine process exited (${code ?? signal}) before it was ready`)));
    });
    ready.catch(() => {});
    child.once('exit', () => {
      if (this.closing || this.suspended || generation !== this.generation) return;
      // Died: every run waits at up() until the next one is ready.
      const down = crashAt ?? Date.now();
      this.gate = this.spawn().then(() => {
        this.restarts.push({ from: down, to: Date.now() });
      });
    });
    return ready;
  }

  read(workflow: string, id: string): Promise<InstanceRecord | null> {
    return readRecord(this.kv, workflow, id);
  }

  async up(): Promise<void> {
    for (;;) {
      const g = this.gate;
      await g;
      if (g === this.gate) return;
    }
  }

  /** Asked of the running engine process (it reads its own workers); false while none runs. */
  caughtUp(instances: ReadonlyArray<{ workflow: string; id: string }>): Promise<boolean> {
    const child = this.child;
    if (!child?.connected) return Promise.resolve(false);
    const query = ++this.queries;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => this.answer(query, false), 2_000);
      this.pending.set(query, (ok) => {
        clearTimeout(timer);
        resolve(ok);
      });
      child.send({ query, instances }, (e) => e && this.answer(query, false));
    });
  }

  private answer(query: number, ok: boolean): void {
    const done = this.pending.get(query);
    this.pending.delete(query);
    done?.(ok);
  }

  armCrash(key: string): void {
    if (this.child?.connected) this.child.send({ crashAfterWriteOf: key }, () => {});
  }

  /** No engine at all for `ms`: the running one is SIGKILLed, a new one started after. */
  async stall(ms: number, during?: () => Promise<void>): Promise<Frozen> {
    await this.up();
    const child = this.child!;
    this.suspended = true;
    let reopen!: () => void;
    this.gate = new Promise<void>((r) => (reopen = r));
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
    const from = Date.now();
    try {
      await during?.();
      await sleep(Math.max(0, from + ms - Date.now()));
    } finally {
      this.suspended = false;
      await this.spawn();
      const window = { from, to: Date.now() };
      this.restarts.push(window);
      reopen();
    }
    return this.restarts[this.restarts.length - 1]!;
  }

  warnings(): string[] {
    return [...this.lines];
  }

  async close(): Promise<void> {
    this.closing = true;
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await Promise.race([gone, sleep(5_000)]);
    }
    await this.client.close().catch(() => {});
    await this.nc.close().catch(() => {});
  }
}
