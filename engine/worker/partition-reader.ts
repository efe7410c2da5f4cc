/**
 * Reads one partition's events stream in order, from a given sequence, and notices when it cannot.
 *
 * Each partition has its own stream, so its events have consecutive sequences: the reader knows
 * the next one it must see and treats anything else as a gap. A gap is never skipped silently:
 * the reader asks the stream leader whether the missing events still exist. If they do, its
 * consumer sits on a replica that is behind or lost data, so it is dropped and made again on the
 * leader; if they were trimmed (only possible by hand, or by a server fault), the loss is
 * reported as an error with the range, then reading goes on.
 *
 * The consumer is an ephemeral pull consumer without acks (the checkpoint is the
 * acknowledgement), placed on the stream leader when the stream is replicated. The pull loop is
 * the reader's own, so that it sees every status the server sends: a consumer that is gone,
 * a 503 (no responders) on a fresh or moved consumer (on a replicated one, 503s for a few
 * seconds: its group may still be electing a leader), or plain silence (no message and no
 * heartbeat for a few seconds, as when its server died) each make the consumer anew at once,
 * rather than after nats.js's own recovery, which waits on heartbeats a disconnect cancels.
 */
import { createInbox, type Msg, type MsgHdrs, type Subscription } from '@nats-io/nats-core';
import { AckPolicy, DeliverPolicy, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { Runtime } from '../store/runtime.js';
import { encodeJson } from '../protocol/json.js';
import { isStreamNotFound, isTransient } from '../store/nats-errors.js';

/** An event as read from the stream. */
export interface ReadEvent {
  seq: number;
  subject: string;
  data: Uint8Array;
  headers: MsgHdrs | undefined;
  /** When the stream accepted it (the server's clock). */
  timeMs: number;
}

export interface ReaderOptions {
  stream: string;
  /** For log lines: `workflow 'x' partition 3`. */
  label: string;
  /** Most events requested at once. */
  batch: number;
  /** Called in stream order, once per sequence. */
  onEvent(e: ReadEvent): void;
  /** Events that no longer exist in the stream were never read (reported; reading goes on). */
  onLost?(fromSeq: number, toSeq: number): void;
  /** Unique among this engine's readers, for consumer names. */
  consumerPrefix: string;
}

const HEARTBEAT_MS = 1_000;
const EXPIRES_MS = 5_000;
/** No message and no heartbeat for this long, with a pull outstanding: the consumer is gone. */
const SILENCE_MS = 3_500;
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 1_000;
/** Tries to get a consumer placed on the stream leader before accepting another replica. */
const PLACEMENT_TRIES = 6;
const NS = 1_000_000;
/**
 * How long a consumer create may take. The meta leader places an R1 consumer on any of the
 * stream's peers, also on one that was SIGKILLed and not yet seen as gone; that create is never
 * answered (until the server is back), so waiting the API's usual 5 s per attempt kept a
 * partition unread for most of a node's loss. A timed-out attempt is made again: an R1 consumer
 * under a new name (which lands on a live peer two times in three), a replicated one under the
 * same name (see {@link PartitionReader.addReplicated}).
 */
const CREATE_TIMEOUT_MS = 1_500;
/** How long a replicated consumer that answered 503 is left before it is asked again. */
const NO_RESPONDERS_RETRY_MS = 250;
/** How long {@link PartitionReader.start} waits for its first consumer. */
const START_WAIT_MS = 1_500;

let readers = 0;

export class PartitionReader {
  private nextSeq = 1;
  private generation = 0;
  private consumer: string | undefined;
  private hostedOn: string | undefined;
  private sub: Subscription | undefined;
  private inbox = '';
  private outstanding = 0;
  private lastActivity = 0;
  private paused = false;
  private stopped = false;
  private restarting: Promise<void> | undefined;
  /** Since when the consumer in use has answered only 503 (no responders), if it has. */
  private noRespondersSince: number | undefined;
  /** The stream leader the last placement move was for (see {@link checkPlacement}). */
  private movedFor: string | undefined;
  /** A placement move under way (see {@link move}). */
  private moving: Promise<void> | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private counter = 0;
  /**
   * Tells this reader's consumers from those of an earlier reader of the same partition in this
   * engine, which may still be dropping its own (a create of an existing name would adopt it).
   */
  private readonly serial = (++readers).toString(36);
  private createJsm: JetStreamManager | undefined;
  /** A replicated consumer whose create got no answer yet: the next attempt uses its name (see {@link addReplicated}). */
  private pendingName: string | undefined;
  private streamReplicas: number | undefined;
  /** Consumer creates that failed since the last one was accepted. */
  private failedCreates = 0;
  /** Restarts, for tests and metrics. */
  restarts = 0;
  /** The last sequence of a stream found below what was read, once reported (see checkSequence). */
  private wentBackTo: number | undefined;

  constructor(
    private readonly rt: Runtime,
    private readonly options: ReaderOptions,
  ) {}

  /** The next sequence this reader expects (everything below it was delivered). */
  get position(): number {
    return this.nextSeq;
  }

  /**
   * Starts reading at `fromSeq`; resolves once the first consumer exists, or after
   * {@link START_WAIT_MS} while it is still being made or retried. The lease round that starts
   * a partition waits for this, and must not wait out a cluster that answers creates slowly
   * (while a server is down they take seconds): it would take over no other partition meanwhile.
   */
  async start(fromSeq: number): Promise<void> {
    if (this.stopped) return; // stopped before it started (its partition was lost meanwhile)
    this.nextSeq = Math.max(1, fromSeq);
    this.watchdog = setInterval(() => this.checkSilence(), 500);
    this.watchdog.unref?.();
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((r) => (timer = setTimeout(r, START_WAIT_MS)));
    await Promise.race([this.restart('start', false), waited]).finally(() => clearTimeout(timer));
  }

  /** Stops pulling more (the worker is full); what is already requested still arrives. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.pull();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.generation++;
    clearInterval(this.watchdog);
    this.sub?.unsubscribe();
    // A create under way is not waited for (a replicated one may take seconds): it drops what it
    // makes once answered; one never answered expires on the server (`inactive_threshold`).
    const pending = this.pendingName;
    this.pendingName = undefined;
    if (pending) void this.forget(pending);
    await this.dropConsumer();
  }

  /**
   * Called every lease round: when the stream is replicated and its leader moved away from the
   * consumer's server, the consumer is made again on the new leader (a follower that falls behind
   * or is restored from a snapshot must not be read). Not waited for by the round.
   */
  async checkPlacement(): Promise<void> {
    if (this.stopped) return;
    // What was read before asking: events delivered while the answer is on its way are past it.
    const read = this.nextSeq - 1;
    const info = await this.rt.jsm.streams.info(this.options.stream).catch(() => null);
    if (info) this.checkSequence(info.state.last_seq, read);
    if (this.restarting || this.moving || !this.consumer) return;
    const leader = info?.cluster?.leader;
    if (!info || !info.cluster?.replicas?.length || !leader || !this.hostedOn) return;
    if (leader === this.hostedOn) return void (this.movedFor = undefined);
    // A replicated consumer's leader is elected, not placed: the successor may land elsewhere
    // again. One try per stream leader, or every lease round would make another consumer.
    if (this.stopped || this.restarting || this.moving || !this.consumer || this.movedFor === leader) return;
    this.movedFor = leader;
    this.rt.logger.info(`${this.options.label}: stream leader moved to ${leader}; reading from it`, { from: this.hostedOn });
    this.moving = this.move().finally(() => (this.moving = undefined));
  }

  /**
   * A stream whose last sequence is below what this reader has read went back: deleted and made
   * again, or a server that lost its newest writes. What it takes from then on gets sequences this
   * partition has passed (and that instances' records name as applied): said once per such state,
   * as an error, since nothing here can tell those events apart from applied ones.
   */
  private checkSequence(last: number, read: number): void {
    if (last >= read || this.wentBackTo === last) return;
    this.wentBackTo = last;
    this.rt.logger.error(
      `${this.options.label}: stream '${this.options.stream}' holds events up to ${last}, below ${read}, what this partition has read: its sequence went back ` +
        `(the stream deleted and made again, or a server that lost its newest writes). Events it takes now get sequences already passed and are not applied; ` +
        `restore the stream (and its sequence) from a backup, or start the instances again in a new namespace`,
    );
  }

  /**
   * Make before break: the consumer in use keeps delivering while its successor is made (which
   * takes seconds while the cluster is degraded), then the reader switches to it. The successor
   * starts at the sequence expected when it was asked for; what both deliver is told apart by
   * sequence (`receive` skips what is below `nextSeq`). A failed attempt is tried again next round.
   */
  private async move(): Promise<void> {
    const old = this.consumer;
    this.restarts++;
    let placed: { name: string; host: string | undefined };
    try {
      placed = await this.add(false);
    } catch {
      return;
    }
    if (this.stopped || this.restarting || this.consumer !== old) {
      // Replaced meanwhile (a restart, a stop): the successor is not needed.
      return this.forget(placed.name);
    }
    this.generation++;
    this.sub?.unsubscribe();
    this.outstanding = 0;
    this.use(placed);
    if (old) void this.forget(old);
  }

  private checkSilence(): void {
    if (this.stopped || this.restarting) return;
    if (this.outstanding > 0 && performance.now() - this.lastActivity > SILENCE_MS) {
      void this.restart(`no message or heartbeat for ${SILENCE_MS} ms`, true);
    }
  }

  /** Drops the consumer and makes a new one at `nextSeq`, retrying until it works or the reader stops. */
  private restart(reason: string, log: boolean): Promise<void> {
    if (this.restarting) return this.restarting;
    if (log) this.rt.logger.warn(`${this.options.label}: reading again from sequence ${this.nextSeq} (${reason})`);
    this.restarts++;
    this.generation++;
    this.movedFor = undefined;
    this.sub?.unsubscribe();
    this.sub = undefined;
    this.outstanding = 0;
    const old = this.consumer;
    this.consumer = undefined;
    if (old) void this.forget(old);
    this.restarting = this.open().finally(() => (this.restarting = undefined));
    return this.restarting;
  }

  private async open(): Promise<void> {
    let delay = RETRY_MIN_MS;
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        await this.create();
        return;
      } catch (e) {
        if (this.stopped) return;
        this.failedCreates++;
        if (attempt === 0 || attempt % 20 === 0) this.rt.logger.warn(`${this.options.label}: cannot open its consumer (${(e as Error).message}); retrying`);
        await sleep(delay);
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    }
  }

  private async create(): Promise<void> {
    const placed = await this.add(true);
    this.failedCreates = 0;
    if (this.stopped) return this.forget(placed.name);
    this.use(placed);
  }

  /**
   * Makes a consumer at `nextSeq`. On a replicated stream the consumer is replicated too: its
   * leader is elected among the servers that are up, where one placed on a single server may land
   * on a server that just died (the cluster takes seconds to notice) and wait for it to return.
   * `retried`: the reader's own (re)start, whose unanswered replicated create is adopted by its next attempt.
   */
  private async add(retried: boolean): Promise<{ name: string; host: string | undefined }> {
    this.streamReplicas ??= (await this.rt.jsm.streams.info(this.options.stream)).config.num_replicas ?? 1;
    return this.streamReplicas > 1 ? this.addReplicated(this.streamReplicas, retried) : this.addNearLeader();
  }

  /** Reads from `placed` from now on (the generation is the caller's to advance). */
  private use(placed: { name: string; host: string | undefined }): void {
    this.consumer = placed.name;
    this.hostedOn = placed.host;
    this.noRespondersSince = undefined;
    const gen = this.generation;
    this.inbox = createInbox(this.rt.inboxPrefix);
    this.sub = this.rt.nc.subscribe(this.inbox, { callback: (err, msg) => (err ? undefined : this.receive(gen, msg)) });
    this.lastActivity = performance.now();
    this.pull();
  }

  private consumerConfig(name: string, replicas: number) {
    return {
      name,
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: this.nextSeq,
      mem_storage: true,
      num_replicas: replicas,
      inactive_threshold: 30_000 * NS,
    };
  }

  /**
   * A replicated consumer. While a server is down its create can take 4-8 s (the meta leader and
   * the new consumer's group elect among the live ones) or get no answer at all; an attempt that
   * timed out keeps its name for the next, which adopts the consumer if the cluster made it
   * meanwhile (a create of the same name and settings is answered at once). Abandoning each under
   * a new name, and deleting it, kept a partition unread for 27 s of a 45 s loss: every attempt
   * timed out, and each one and its delete gave the meta leader more to do.
   */
  private async addReplicated(replicas: number, retried: boolean): Promise<{ name: string; host: string | undefined }> {
    const name = retried ? (this.pendingName ??= this.nextName()) : this.nextName();
    const ci = await (await this.createApi()).consumers.add(this.options.stream, this.consumerConfig(name, replicas)).catch((e: unknown) => {
      if (!retried || !isTransient(e)) {
        // Refused (not merely unanswered), or not to be retried: the next attempt starts over under a new name.
        if (retried) this.pendingName = undefined;
        void this.forget(name);
      }
      throw e;
    });
    if (retried) this.pendingName = undefined;
    return { name, host: ci.cluster?.leader };
  }

  /** A consumer on one server, placed on the stream leader when the stream is clustered (a few tries). */
  private async addNearLeader(): Promise<{ name: string; host: string | undefined }> {
    const { jsm } = this.rt;
    const stream = this.options.stream;
    let leader: string | undefined;
    let clustered = false;
    for (let i = 0; ; i++) {
      const name = this.nextName();
      const ci = await (await this.createApi()).consumers.add(stream, this.consumerConfig(name, 1)).catch((e: unknown) => {
        // Perhaps made on a server that is down: it must not deliver when that server returns.
        void this.forget(name);
        throw e;
      });
      const host = ci.cluster?.leader;
      if (i === 0) {
        const si = await jsm.streams.info(stream);
        clustered = (si.cluster?.replicas?.length ?? 0) > 0;
        leader = si.cluster?.leader;
      }
      // Tries that timed out count too: while a node is down, waiting for the leader costs more.
      if (!clustered || !leader || host === leader || i + 1 + this.failedCreates >= PLACEMENT_TRIES) {
        if (clustered && host !== leader)
          this.rt.logger.warn(`${this.options.label}: its consumer is on ${host}, not on the stream leader ${leader}; gaps are still detected`);
        return { name, host };
      }
      await this.forget(name);
    }
  }

  /** Deletes a consumer, best effort (one left behind expires on the server: `inactive_threshold`). */
  private async forget(name: string): Promise<void> {
    await this.rt.jsm.consumers.delete(this.options.stream, name).catch(() => {});
  }

  private nextName(): string {
    return `${this.options.consumerPrefix}_${this.serial}_${++this.counter}`;
  }

  /** The JetStream API with the short timeout of consumer creates ({@link CREATE_TIMEOUT_MS}). */
  private async createApi(): Promise<JetStreamManager> {
    return (this.createJsm ??= await jetstreamManager(this.rt.nc, {
      timeout: CREATE_TIMEOUT_MS,
      checkAPI: false,
      ...(this.rt.jsDomain ? { domain: this.rt.jsDomain } : {}),
    }));
  }

  private async dropConsumer(): Promise<void> {
    const name = this.consumer;
    this.consumer = undefined;
    if (name) await this.forget(name);
  }

  /** Keeps up to `batch` events requested; a new request once half of them arrived. */
  private pull(): void {
    if (this.stopped || this.paused || !this.consumer || !this.sub) return;
    const want = this.options.batch - this.outstanding;
    if (want < Math.max(1, this.options.batch / 2)) return;
    this.outstanding += want;
    try {
      this.rt.nc.publish(
        `${this.rt.jsApiPrefix}.CONSUMER.MSG.NEXT.${this.options.stream}.${this.consumer}`,
        encodeJson({ batch: want, expires: EXPIRES_MS * NS, idle_heartbeat: HEARTBEAT_MS * NS }),
        { reply: this.inbox },
      );
    } catch {
      // Closed or draining: the silence check makes it again once possible.
      this.outstanding -= want;
    }
  }

  private receive(gen: number, msg: Msg): void {
    if (gen !== this.generation || this.stopped) return;
    this.lastActivity = performance.now();
    const h = msg.headers;
    const code = h?.code ?? 0;
    if (code !== 0 && msg.data.length === 0) return this.status(code, h!);
    this.noRespondersSince = undefined;
    const info = parseReply(msg.reply);
    if (!info) return;
    this.outstanding = Math.max(0, this.outstanding - 1);
    if (info.seq < this.nextSeq) {
      this.pull();
      return; // read before this consumer was made
    }
    if (info.seq > this.nextSeq) {
      void this.gap(info.seq).catch((e: Error) => {
        this.rt.logger.error(`${this.options.label}: ${e.message}; reading again`);
        void this.restart(`gap before ${info.seq}`, false);
      });
      return;
    }
    this.nextSeq = info.seq + 1;
    this.options.onEvent({ seq: info.seq, subject: msg.subject, data: msg.data, headers: h, timeMs: info.timeMs });
    this.pull();
  }

  private status(code: number, h: MsgHdrs): void {
    switch (code) {
      case 100: // idle heartbeat (or flow control): the consumer has a leader
        this.noRespondersSince = undefined;
        return;
      case 404: // no messages
      case 408: {
        // The request ended; the header says how many of it were not delivered.
        const left = Number(h.get('Nats-Pending-Messages') || 0);
        this.outstanding = Math.max(0, this.outstanding - (Number.isFinite(left) && left > 0 ? left : this.outstanding));
        this.pull();
        return;
      }
      case 409: {
        const d = h.description.toLowerCase();
        if (d.includes('max waiting') || d.includes('exceeds maxbytes') || d.includes('batch completed')) {
          this.outstanding = 0;
          this.pull();
          return;
        }
        void this.restart(`consumer answered 409 ${h.description}`, true);
        return;
      }
      case 503: {
        // A replicated consumer answers 503 until its group has elected a leader, which takes
        // seconds while a server is down: it is asked again for a while before it is made anew
        // (each remake is another group to elect, and was answered 503 in turn).
        const since = (this.noRespondersSince ??= performance.now());
        if ((this.streamReplicas ?? 1) > 1 && performance.now() - since < SILENCE_MS) {
          this.outstanding = 0;
          const gen = this.generation;
          setTimeout(() => gen === this.generation && this.pull(), NO_RESPONDERS_RETRY_MS).unref?.();
          return;
        }
        void this.restart('no responders for its consumer', true);
        return;
      }
      default:
        this.rt.logger.debug(`${this.options.label}: status ${code} ${h.description}`);
    }
  }

  /**
   * `seq` arrived where `nextSeq` was expected. Ask the stream leader for the first event it holds
   * from `nextSeq` on: events it no longer has (purged, deleted one by one, a damaged block) are
   * reported and passed; when it has the expected one, the consumer's replica was behind and the
   * stream is read again through a new consumer.
   */
  private async gap(seq: number): Promise<void> {
    const expected = this.nextSeq;
    this.generation++; // ignore the rest of this consumer's deliveries
    let next: number | undefined;
    try {
      // A "next by subject" read: the stream's first message at or after `expected`.
      const held = await this.rt.jsm.streams.getMessage(this.options.stream, { seq: expected, next_by_subj: '>' } as never);
      next = held?.seq ?? seq;
    } catch (e) {
      if (isStreamNotFound(e)) {
        this.rt.logger.error(`${this.options.label}: its stream '${this.options.stream}' is gone; events from ${expected} on cannot be read`);
        return;
      }
      this.rt.logger.debug(`${this.options.label}: reading what the stream holds from ${expected} failed (${(e as Error).message})`);
    }
    if (next !== undefined && next > expected) {
      const to = Math.min(next, seq) - 1;
      this.rt.logger.error(
        `${this.options.label}: events ${expected}..${to} were removed from stream '${this.options.stream}' before this engine applied them; they are lost`,
      );
      this.options.onLost?.(expected, to);
      this.nextSeq = to + 1;
    } else {
      this.rt.logger.warn(
        `${this.options.label}: expected event ${expected}, got ${seq}: its consumer's replica is behind; reading again from the stream leader`,
      );
      // Not at once: a replica catching up takes a moment, and each new consumer is another to place.
      await sleep(GAP_RETRY_MS);
    }
    await this.restart(`gap before ${seq}`, false);
  }
}

/** Stream sequence and time from a JetStream delivery's reply subject (`$JS.ACK...`). */
function parseReply(reply: string | undefined): { seq: number; timeMs: number } | null {
  if (!reply) return null;
  const t = reply.split('.');
  // v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
  // v2: $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>.<token>
  const off = t.length === 9 ? 0 : 2;
  if (t[0] !== '$JS' || t[1] !== 'ACK' || t.length < 9) return null;
  const seq = Number(t[5 + off]);
  const ts = t[7 + off]!;
  return { seq, timeMs: Number(BigInt(ts) / 1_000_000n) };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How long a reader whose consumer's replica is behind waits before reading again. */
const GAP_RETRY_MS = 250;
