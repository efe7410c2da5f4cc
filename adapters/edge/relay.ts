/**
 * The edge relay: an engine extension for the engines of an edge site. Events that hub-side
 * clients (`relayDomain`) queued for this site's instances wait in the namespace's relay stream in
 * the hub's JetStream domain; whenever the link to the hub is up, one engine of the site moves
 * them, in the order the hub stored them, into the instances' inboxes here, each once.
 *
 * Order and once, and why they hold:
 * - One relay at a time: a lease in the site's `<ns>_relaystate` bucket (taken over after
 *   `leaseTtlMs` of silence, observed with the local clock).
 * - Events are read in hub stream order (direct gets of the sequences after the checkpoint),
 *   published here (one after another per instance, instances in parallel) under the message id the sender gave (the site's events
 *   stream deduplicates a re-publish), and only then is the checkpoint (the last relayed hub
 *   sequence) written with compare-and-set, once per batch. A relay that lost its lease fails
 *   that write and stops; a crash before it re-publishes the batch in the same order per instance under the
 *   same message ids, which the site's events stream drops while within its duplicate window.
 * - An event the site refuses for good (workflow not served here, too large, its message id taken
 *   by another event) is dead-lettered here and passed; one it cannot store for now holds the
 *   checkpoint below it and its instance's later events behind it, while the other instances'
 *   events relayed above it are written down with the checkpoint and not published again.
 * - The checkpoint names the relay stream it belongs to; a stream made anew is relayed from 1.
 * - Relayed events are purged from the hub only once older than the relay stream's duplicate
 *   window, so a sender's retry with the same idempotency key is still recognised by the hub.
 *
 * Client events only: the hub queues what `send()`/`start()` of a relaying client publish; they
 * carry no engine signature, so a changed subject breaks nothing (engine events are never relayed).
 */
import { randomUUID } from 'node:crypto';
import type { MsgHdrs } from '@nats-io/nats-core';
import { errors as coreErrors, headers as natsHeaders } from '@nats-io/nats-core';
import { JetStreamApiError, jetstreamManager, type JetStreamManager, type PubAck, type StoredMsg } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { z } from 'zod';
import type { EngineExtension, ExtensionHost } from '../../engine/index.js';
import {
  decodeJson,
  encodeJson,
  ensureRelayStream,
  isCasConflict,
  isMessageNotFound,
  isNoResponders,
  isStreamNotFound,
  layout,
  parseOptions,
  partitionOf,
  permissionViolation,
  type Layout,
} from '../../engine/internal.js';

export const EdgeRelayOptionsSchema = z
  .object({
    /** JetStream domain of the hub that holds the relay stream (`jetstream { domain }` of the hub). */
    hubDomain: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "hubDomain: a JetStream domain name such as 'hub'"),
    /** A relay lease not renewed for this long is taken over by another engine of the site. */
    leaseTtlMs: z.number().int().min(300).max(600_000).default(5_000),
    /** How long the relay waits before looking again when nothing waits or the hub is unreachable. */
    idleMs: z.number().int().min(10).max(60_000).default(250),
    /** Most events relayed per checkpoint write (and between two looks at the lease). */
    batch: z.number().int().min(1).max(10_000).default(256),
    /** Events read from the hub at once (direct gets in flight together). */
    readAhead: z.number().int().min(1).max(1_024).default(64),
    /** Timeout of one request to the hub; a cut link is noticed after this. */
    hubTimeoutMs: z.number().int().min(100).max(60_000).default(2_000),
  })
  .strict();
export type EdgeRelayOptions = z.input<typeof EdgeRelayOptionsSchema>;
type Resolved = z.output<typeof EdgeRelayOptionsSchema>;

/** Counters of a relay, for tests and operators. */
export interface EdgeRelayStatus {
  /** True while this engine holds the site's relay lease. */
  leading: boolean;
  /** Events this engine relayed since it started. */
  relayed: number;
  /** The last hub stream sequence relayed (by any engine of the site), as this one last saw it. */
  checkpoint: number;
  /** The last error talking to the hub, if the last attempt failed (the link is down, typically). */
  lastError?: string;
}

/** An extension with its status. */
export interface EdgeRelay extends EngineExtension {
  status(): EdgeRelayStatus;
}

const LEASE_KEY = 'lease';
const CHECKPOINT_KEY = 'checkpoint';
const NS_PER_MS = 1_000_000;

/**
 * The relay lease: the engine that holds it, its process (an engineId may be given to two by
 * mistake, or to a restarted one), and the TTL it is judged by (relays may run with different ones).
 */
const LeaseSchema = z.object({ engineId: z.string(), run: z.string().optional(), ttlMs: z.number().optional() });
/**
 * The last hub sequence with every event up to it relayed (or dead-lettered), the ones above it
 * already relayed (an event that failed holds the checkpoint, not the other instances' events),
 * and the creation time of the relay stream the sequences belong to.
 */
const CheckpointSchema = z.object({ seq: z.number().int().min(0), done: z.array(z.number().int().positive()).optional(), stream: z.string().optional() });
/** How often an idle relay looks whether the hub's relay stream was made anew. */
const STREAM_CHECK_MS = 5_000;
/** The longest wait between tries while relaying keeps failing. */
const FAILING_WAIT_MS = 2_000;
/** "message size exceeds maximum allowed" (nats-server's JSStreamMessageExceedsMaximumErr). */
const MESSAGE_TOO_LARGE = 10054;

/** The stream headers a direct get adds; they describe the hub's copy, not the event. */
const STORED_HEADERS = new Set(['nats-stream', 'nats-sequence', 'nats-time-stamp', 'nats-subject', 'nats-last-sequence', 'nats-num-pending', 'nats-msg-id']);

class LostLease extends Error {}
/** A failure to store a hub event at the site (tried again), told apart from the hub's. */
class AtTheSite extends Error {}

/**
 * The edge relay extension: give it to every engine of an edge site.
 *
 * @example
 * ```ts
 * import { edgeRelay } from 'jetstate/adapters/edge';
 * const engine = await createEngine({ servers: 'nats://127.0.0.1:4222', namespace: 'shop_store7', workflows, extensions: [edgeRelay({ hubDomain: 'hub' })] });
 * ```
 */
export function edgeRelay(options: EdgeRelayOptions): EdgeRelay {
  const o = parseOptions(EdgeRelayOptionsSchema, 'edgeRelay', options) as Resolved;
  let relay: Relay | undefined;
  return {
    name: 'edge-relay',
    async start(host) {
      relay = new Relay(host, o);
      await relay.open();
      relay.run();
    },
    async stop() {
      await relay?.stop();
    },
    status: () => relay?.status() ?? { leading: false, relayed: 0, checkpoint: 0 },
  };
}

class Relay {
  /** This process, in the lease (see LeaseSchema). */
  private readonly process = randomUUID();
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private state!: KV;
  private partitions = 0;
  private readonly names: Layout;
  private hubJsm: JetStreamManager | undefined;
  private streamReady = false;
  private duplicateWindowMs = 120_000;
  // Lease: the revision this engine holds, or the one another holds and when it was first seen.
  private leaseRev = 0;
  private renewedAt = 0;
  private seen: { rev: number; atMs: number } | undefined;
  private cp: { seq: number; rev: number; done: ReadonlySet<number>; stream?: string | undefined } = { seq: 0, rev: 0, done: new Set() };
  /** The hub's relay stream as last looked at: its creation time, and when it was looked at. */
  private stream = { created: '', checkedAt: 0 };
  private relayed = 0;
  private lastError: string | undefined;
  /** Relayed hub sequences with their hub times, purged once out of the duplicate window. */
  private toPurge: Array<{ seq: number; timeMs: number }> = [];
  /** A purge was refused by NATS permissions (said once). */
  private purgeRefused = false;

  constructor(
    private readonly host: ExtensionHost,
    private readonly o: Resolved,
  ) {
    this.names = layout(host.namespace);
  }

  async open(): Promise<void> {
    this.state = await this.host.bucket('relaystate');
    const control = await this.host.bucket('control');
    const meta = await control.get('meta');
    const parsed = meta && meta.operation === 'PUT' ? z.object({ partitions: z.number().int().positive() }).safeParse(decodeJson(meta.value)) : undefined;
    if (!parsed?.success) throw new Error(`edge relay: namespace '${this.host.namespace}' has no readable meta record`);
    this.partitions = parsed.data.partitions;
  }

  run(): void {
    this.loop = this.cycle();
  }

  status(): EdgeRelayStatus {
    return { leading: this.leaseRev > 0, relayed: this.relayed, checkpoint: this.cp.seq, ...(this.lastError ? { lastError: this.lastError } : {}) };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    // Hand the lease on at once rather than after its TTL.
    if (this.leaseRev > 0) await this.state.delete(LEASE_KEY, { previousSeq: this.leaseRev }).catch(() => {});
    this.leaseRev = 0;
  }

  private async cycle(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      let moved = 0;
      try {
        if (await this.lead()) {
          await this.prepareHub();
          moved = await this.relayBatch();
        }
        if (this.lastError && failures > 0)
          this.host.logger.info(`edge relay of '${this.host.namespace}': the hub (domain '${this.o.hubDomain}') answers again`);
        this.lastError = undefined;
        failures = 0;
      } catch (e) {
        if (e instanceof LostLease) {
          this.leaseRev = 0;
        } else {
          // Looked at again after a failure: the stream may have been made anew meanwhile.
          this.streamReady = false;
          const denied = permissionViolation(e);
          // A missing right is a configuration to fix, not an outage to wait out: name it.
          this.lastError = denied
            ? `this NATS user may not ${denied.operation === 'subscription' ? 'subscribe to' : 'publish to'} '${denied.subject}', which the relay needs (docs/EDGE.md, "Permissions")`
            : !(e instanceof AtTheSite) && isNoResponders(e)
              ? `no responders: the hub's JetStream ('$JS.${this.o.hubDomain}.API') does not answer: the hub is down, or the leaf node link does not carry the relay's calls (docs/EDGE.md, "NATS configuration")`
              : (e as Error).message;
          // Logged once per outage, not per retry: a cut link is an expected state at the edge.
          if (failures++ === 0) {
            const what = `edge relay of '${this.host.namespace}': cannot relay from the hub (domain '${this.o.hubDomain}'): ${this.lastError}; retrying`;
            if (denied) this.host.logger.error(what);
            else this.host.logger.warn(what);
          }
        }
      }
      // While it keeps failing (the hub away, an event the site cannot store yet), each try re-reads
      // the batch over the link: the wait doubles from idleMs, up to FAILING_WAIT_MS.
      if (moved === 0 && !this.stopped) await this.sleep(Math.max(this.o.idleMs, Math.min(this.o.idleMs * 2 ** Math.max(0, failures - 1), FAILING_WAIT_MS)));
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      const t = setTimeout(r, ms);
      this.wake = () => {
        clearTimeout(t);
        r();
      };
    });
  }

  /** Holds, renews or takes the relay lease; true while this engine may relay. */
  private async lead(): Promise<boolean> {
    const now = performance.now();
    const lease = (): Uint8Array => encodeJson({ engineId: this.host.engineId, run: this.process, ttlMs: this.o.leaseTtlMs });
    if (this.leaseRev > 0) {
      if (now - this.renewedAt < this.o.leaseTtlMs / 3) return true;
      try {
        this.leaseRev = await this.state.update(LEASE_KEY, lease(), this.leaseRev);
        this.renewedAt = now;
        return true;
      } catch (e) {
        if (!isCasConflict(e)) throw e;
        this.leaseRev = 0;
        return false;
      }
    }
    const entry = await this.state.get(LEASE_KEY);
    try {
      if (!entry || entry.operation !== 'PUT') {
        this.leaseRev = entry ? await this.state.update(LEASE_KEY, lease(), entry.revision) : await this.state.create(LEASE_KEY, lease());
      } else {
        const holder = LeaseSchema.safeParse(decodeJson(entry.value));
        // This process's own (its renewal's reply lost): another process with the same engineId is not.
        const mine = holder.success && holder.data.engineId === this.host.engineId && holder.data.run === this.process;
        if (!mine) {
          if (!this.seen || this.seen.rev !== entry.revision) this.seen = { rev: entry.revision, atMs: now };
          // Silent for longer than the TTL its holder declares (an older relay's: this one's).
          if (now - this.seen.atMs < ((holder.success ? holder.data.ttlMs : undefined) ?? this.o.leaseTtlMs)) return false;
        }
        this.leaseRev = await this.state.update(LEASE_KEY, lease(), entry.revision);
      }
    } catch (e) {
      if (isCasConflict(e)) return false;
      throw e;
    }
    this.renewedAt = now;
    this.seen = undefined;
    await this.loadCheckpoint();
    // The stream as it is now, not as this engine saw it when it last led (another may have
    // relayed a stream made anew since).
    this.streamReady = false;
    return true;
  }

  private async loadCheckpoint(): Promise<void> {
    const entry = await this.state.get(CHECKPOINT_KEY);
    if (!entry || entry.operation !== 'PUT') {
      this.cp = { seq: 0, rev: entry?.revision ?? 0, done: new Set() };
      return;
    }
    const parsed = CheckpointSchema.safeParse(decodeJson(entry.value));
    if (!parsed.success) throw new Error(`edge relay: the checkpoint in '${this.host.namespace}_relaystate' is unreadable`);
    this.cp = { seq: parsed.data.seq, rev: entry.revision, done: new Set(parsed.data.done), stream: parsed.data.stream };
  }

  /** The relay stream exists in the hub once the link has been up (created here or by a hub client). */
  private async prepareHub(): Promise<void> {
    if (this.streamReady) return;
    this.hubJsm ??= await jetstreamManager(this.host.nc, { domain: this.o.hubDomain, timeout: this.o.hubTimeoutMs });
    await ensureRelayStream(this.hubJsm, this.names, this.host.replicas, 120_000);
    await this.lookAtStream();
    this.streamReady = true;
  }

  /**
   * Reads the relay stream's settings, and notices a stream made anew (deleted and created again
   * in the hub): its sequences start again at 1, so a checkpoint from the old one would skip its
   * events for ever. The relay then starts from the new stream's beginning, and says so.
   */
  private async lookAtStream(): Promise<void> {
    const info = await this.hubJsm!.streams.info(this.names.relayStream);
    this.duplicateWindowMs = Math.max(0, (info.config.duplicate_window ?? 0) / NS_PER_MS);
    this.stream = { created: info.created, checkedAt: performance.now() };
    const from = this.cp.stream;
    if (from === undefined || from === info.created) return;
    this.host.logger.warn(
      `edge relay of '${this.host.namespace}': the hub's '${this.names.relayStream}' was made anew (created ${info.created}; the checkpoint at sequence ${this.cp.seq} is from the one created ${from}): relaying the new stream from its start`,
    );
    this.cp = { seq: 0, rev: this.cp.rev, done: new Set() };
    this.toPurge = [];
  }

  /**
   * Relays up to `batch` events in hub order; returns how many it read. Reads ahead (direct gets
   * of the next `readAhead` sequences at once: one round trip over the link for many events),
   * publishes one after another per instance, instances in parallel, and writes the checkpoint
   * once for the batch. A crash or a lost lease before that write makes the next relay publish
   * the batch again, under the same message ids, which the site's events stream drops (duplicate
   * window), in the same order. An event that fails holds the checkpoint below it, and its
   * instance's later events wait behind it; the other instances' events relayed above it are
   * written down with the checkpoint (`done`) and not published again however long it fails.
   */
  private async relayBatch(): Promise<number> {
    const done = this.cp.done;
    const read: StoredMsg[] = [];
    const relayed = new Set<number>();
    // One chain of publishes per instance subject: a failed one stops the ones after it, so none
    // can overtake it. Each link is awaited below, after the reads.
    const chains = new Map<string, Promise<void>>();
    let failure: unknown;
    try {
      while (read.length < this.o.batch && !this.stopped) {
        const next = (read.at(-1)?.seq ?? this.cp.seq) + 1;
        const msgs = await this.readAhead(next, Math.min(this.o.readAhead, this.o.batch - read.length));
        if (msgs.length === 0) break;
        for (const m of msgs) {
          read.push(m);
          if (done.has(m.seq)) continue;
          const link = (chains.get(m.subject) ?? Promise.resolve()).then(async () => {
            await this.publishOne(m);
            relayed.add(m.seq);
          });
          link.catch(() => {});
          chains.set(m.subject, link);
        }
      }
    } catch (e) {
      failure = e; // the link went down mid-batch: what was published is still written down
    }
    const settled = await Promise.allSettled(chains.values());
    failure ??= (settled.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined)?.reason;
    if (read.length === 0) {
      if (failure !== undefined) throw failure;
      if (performance.now() - this.stream.checkedAt > STREAM_CHECK_MS) await this.lookAtStream();
      if (this.toPurge.length > 0) await this.purge();
      return 0;
    }
    const held = read.find((m) => !done.has(m.seq) && !relayed.has(m.seq));
    let seq = held ? held.seq - 1 : read.at(-1)!.seq;
    // Everything relayed above the checkpoint stays written down, also what this batch did not
    // read (an engine reading less at a time took over); the checkpoint moves over what follows it.
    const doneNow = new Set([...done, ...relayed].filter((n) => n > seq));
    while (!held && doneNow.delete(seq + 1)) seq++;
    const above = [...doneNow].sort((a, b) => a - b);
    if (seq > this.cp.seq || relayed.size > 0) {
      const value = encodeJson({ seq, ...(above.length > 0 ? { done: above } : {}), stream: this.stream.created });
      try {
        const rev = this.cp.rev === 0 ? await this.state.create(CHECKPOINT_KEY, value) : await this.state.update(CHECKPOINT_KEY, value, this.cp.rev);
        const advanced = seq > this.cp.seq;
        this.cp = { seq, rev, done: new Set(above), stream: this.stream.created };
        // Purged only once the checkpoint covers them.
        const covered = advanced ? read.findLast((m) => m.seq <= seq) : undefined;
        if (covered) this.toPurge.push({ seq: covered.seq, timeMs: covered.time.getTime() });
      } catch (e) {
        if (isCasConflict(e)) throw new LostLease();
        throw e;
      }
      this.relayed += relayed.size;
    }
    if (failure !== undefined) throw failure;
    if (!(await this.lead())) throw new LostLease();
    if (this.toPurge.length > 0) await this.purge();
    return read.length;
  }

  /**
   * The events from hub sequence `from` on, in order, at most `max`: the sequences above the
   * checkpoint are contiguous (only the relay purges, below it), so they are asked for at once;
   * a hole (a message removed by hand) is stepped over with a "next by subject" get.
   */
  private async readAhead(from: number, max: number): Promise<StoredMsg[]> {
    const jsm = this.hubJsm!;
    const get = async (q: { seq: number } | { seq: number; next_by_subj: string }): Promise<StoredMsg | null> => {
      try {
        return await jsm.direct.getMessage(this.names.relayStream, q);
      } catch (e) {
        if (isMessageNotFound(e)) return null;
        throw e;
      }
    };
    const got = await Promise.all(Array.from({ length: max }, (_, i) => get({ seq: from + i })));
    const out: StoredMsg[] = [];
    for (const m of got) {
      if (!m) break;
      out.push(m);
    }
    if (out.length > 0) return out;
    const m = await get({ seq: from, next_by_subj: `${this.names.namespace}.relay.>` });
    return m ? [m] : [];
  }

  /**
   * Publishes one hub event into its instance's inbox here. An event the site refuses for good (a
   * workflow no engine of the site serves, an event larger than the site takes, a message id a
   * site sender took first for another event) is dead-lettered here with the reason, said, and
   * passed: it must not hold up the relay. Anything else (a timeout, a cut) is thrown and retried.
   */
  private async publishOne(m: StoredMsg): Promise<void> {
    const parts = m.subject.split('.');
    const [workflow, id] = [parts[2], parts[3]];
    if (parts.length !== 4 || !workflow || !id) {
      // Not something a jetstate client publishes.
      await this.refuse(
        m,
        '_',
        '_',
        m.subject,
        `[relay.malformed] hub message ${m.seq} on '${m.subject}' is not on a relayed event subject (<ns>.relay.<workflow>.<id>)`,
      );
      return;
    }
    const partition = partitionOf(workflow, id, this.partitions);
    const subject = this.names.eventSubject(partition, workflow, id);
    const headers = copyHeaders(m.header);
    const msgID = m.header?.get('Nats-Msg-Id') || `relay.${this.o.hubDomain}.${m.seq}`;
    let ack: PubAck;
    try {
      ack = await this.host.js.publish(subject, m.data, { msgID, ...(headers ? { headers } : {}) });
    } catch (e) {
      const why = await this.refusal(e, workflow, partition);
      if (!why)
        throw new AtTheSite(`hub event ${m.seq} for workflow '${workflow}' instance '${id}' is not stored at the site yet: ${(e as Error).message}`, {
          cause: e,
        });
      await this.refuse(m, workflow, id, subject, why);
      return;
    }
    if (ack.duplicate) await this.checkDuplicate(m, workflow, id, subject, msgID, ack);
  }

  /** Why the site refuses this event for good, or undefined when trying again may work. */
  private async refusal(e: unknown, workflow: string, partition: number): Promise<string | undefined> {
    if (e instanceof coreErrors.InvalidArgumentError || (e instanceof JetStreamApiError && e.code === MESSAGE_TOO_LARGE))
      return `[relay.too_large] the event is larger than the site's NATS takes (${(e as Error).message}); send a smaller one (large data belongs in a store, the event carries its key)`;
    if (!isNoResponders(e)) return undefined;
    try {
      await this.host.jsm.streams.info(this.names.eventStream(workflow, partition));
      return undefined; // the stream is there: nobody answered for now (an election)
    } catch (err) {
      if (!isStreamNotFound(err)) return undefined;
    }
    return `[relay.not_served] workflow '${workflow}' is not served at this site (namespace '${this.host.namespace}'): no engine here has registered it; start the site's engines with it, then send the event again`;
  }

  /**
   * A duplicate is this event published before (a batch relayed again) when the stored message is
   * the same bytes on the same subject; otherwise a site sender took the message id (an
   * idempotency key) first for another event, and the hub's event was not stored.
   */
  private async checkDuplicate(m: StoredMsg, workflow: string, id: string, subject: string, msgID: string, ack: PubAck): Promise<void> {
    let stored: StoredMsg | null;
    try {
      stored = await this.host.jsm.streams.getMessage(ack.stream, { seq: ack.seq });
    } catch (e) {
      // Already removed: it was applied, and it was ours or the window would have let this through.
      if (isMessageNotFound(e)) return;
      throw e;
    }
    if (!stored || (stored.subject === subject && Buffer.compare(stored.data, m.data) === 0)) return;
    await this.refuse(
      m,
      workflow,
      id,
      subject,
      `[relay.duplicate_conflict] the hub's event for workflow '${workflow}' instance '${id}' has idempotency key '${msgID}', which a sender at the site took first for another event (site sequence ${ack.seq}); it was not applied: send it again with a new key`,
    );
  }

  private async refuse(m: StoredMsg, workflow: string, id: string, subject: string, reason: string): Promise<void> {
    this.host.logger.error(`edge relay of '${this.host.namespace}': hub event ${m.seq} goes to the dead letters: ${reason}`);
    await this.host.deadLetter({ workflow, id, stream: this.names.relayStream, subject, seq: m.seq, data: m.data, reason });
  }

  /** Removes relayed events from the hub once they are older than its duplicate window. */
  private async purge(): Promise<void> {
    const cutoff = Date.now() - this.duplicateWindowMs;
    let upTo = 0;
    while (this.toPurge.length > 0 && this.toPurge[0]!.timeMs < cutoff) upTo = this.toPurge.shift()!.seq;
    if (upTo > 0)
      await this.hubJsm!.streams.purge(this.names.relayStream, { seq: upTo + 1 }).catch((e: unknown) => {
        // Relayed events left in the hub only take room (a later purge removes them too); a cut
        // link is expected, but a refused purge never goes away by itself: said once.
        const denied = permissionViolation(e);
        if (!denied || this.purgeRefused) return;
        this.purgeRefused = true;
        this.host.logger.error(
          `edge relay of '${this.host.namespace}': relayed events stay in the hub's '${this.names.relayStream}': this NATS user may not publish to '${denied.subject}' (docs/EDGE.md, "Permissions")`,
        );
      });
  }
}

function copyHeaders(h: MsgHdrs | undefined): MsgHdrs | undefined {
  if (!h) return undefined;
  let out: MsgHdrs | undefined;
  for (const k of h.keys()) {
    if (STORED_HEADERS.has(k.toLowerCase())) continue;
    out ??= natsHeaders();
    for (const v of h.values(k)) out.append(k, v);
  }
  return out;
}
