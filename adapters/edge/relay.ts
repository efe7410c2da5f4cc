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
 * - Relayed events are purged from the hub only once older than the relay stream's duplicate
 *   window, so a sender's retry with the same idempotency key is still recognised by the hub.
 *
 * Client events only: the hub queues what `send()`/`start()` of a relaying client publish; they
 * carry no engine signature, so a changed subject breaks nothing (engine events are never relayed).
 */
import type { MsgHdrs } from '@nats-io/nats-core';
import { headers as natsHeaders, PermissionViolationError } from '@nats-io/nats-core';
import { jetstreamManager, type JetStreamManager, type StoredMsg } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { z } from 'zod';
import type { EngineExtension, ExtensionHost } from '../../engine/index.js';
import {
  decodeJson,
  encodeJson,
  ensureRelayStream,
  isCasConflict,
  isMessageNotFound,
  layout,
  parseOptions,
  partitionOf,
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

const LeaseSchema = z.object({ engineId: z.string() });
const CheckpointSchema = z.object({ seq: z.number().int().min(0) });

/** The stream headers a direct get adds; they describe the hub's copy, not the event. */
const STORED_HEADERS = new Set(['nats-stream', 'nats-sequence', 'nats-time-stamp', 'nats-subject', 'nats-last-sequence', 'nats-num-pending', 'nats-msg-id']);

class LostLease extends Error {}

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
  private cp = { seq: 0, rev: 0 };
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
          const denied = violationOf(e);
          // A missing right is a configuration to fix, not an outage to wait out: name it.
          this.lastError = denied
            ? `this NATS user may not ${denied.operation === 'subscription' ? 'subscribe to' : 'publish to'} '${denied.subject}', which the relay needs (docs/EDGE.md, "Permissions")`
            : (e as Error).message;
          // Logged once per outage, not per retry: a cut link is an expected state at the edge.
          if (failures++ === 0) {
            const what = `edge relay of '${this.host.namespace}': cannot relay from the hub (domain '${this.o.hubDomain}'): ${this.lastError}; retrying`;
            if (denied) this.host.logger.error(what);
            else this.host.logger.warn(what);
          }
        }
      }
      if (moved === 0 && !this.stopped) await this.sleep(this.o.idleMs);
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
    if (this.leaseRev > 0) {
      if (now - this.renewedAt < this.o.leaseTtlMs / 3) return true;
      try {
        this.leaseRev = await this.state.update(LEASE_KEY, encodeJson({ engineId: this.host.engineId }), this.leaseRev);
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
        this.leaseRev = entry
          ? await this.state.update(LEASE_KEY, encodeJson({ engineId: this.host.engineId }), entry.revision)
          : await this.state.create(LEASE_KEY, encodeJson({ engineId: this.host.engineId }));
      } else {
        const holder = LeaseSchema.safeParse(decodeJson(entry.value));
        const mine = holder.success && holder.data.engineId === this.host.engineId;
        if (!mine) {
          if (!this.seen || this.seen.rev !== entry.revision) this.seen = { rev: entry.revision, atMs: now };
          if (now - this.seen.atMs < this.o.leaseTtlMs) return false;
        }
        this.leaseRev = await this.state.update(LEASE_KEY, encodeJson({ engineId: this.host.engineId }), entry.revision);
      }
    } catch (e) {
      if (isCasConflict(e)) return false;
      throw e;
    }
    this.renewedAt = now;
    this.seen = undefined;
    await this.loadCheckpoint();
    return true;
  }

  private async loadCheckpoint(): Promise<void> {
    const entry = await this.state.get(CHECKPOINT_KEY);
    if (!entry || entry.operation !== 'PUT') {
      this.cp = { seq: 0, rev: entry?.revision ?? 0 };
      return;
    }
    const parsed = CheckpointSchema.safeParse(decodeJson(entry.value));
    if (!parsed.success) throw new Error(`edge relay: the checkpoint in '${this.host.namespace}_relaystate' is unreadable`);
    this.cp = { seq: parsed.data.seq, rev: entry.revision };
  }

  /** The relay stream exists in the hub once the link has been up (created here or by a hub client). */
  private async prepareHub(): Promise<void> {
    if (this.streamReady) return;
    this.hubJsm ??= await jetstreamManager(this.host.nc, { domain: this.o.hubDomain, timeout: this.o.hubTimeoutMs });
    await ensureRelayStream(this.hubJsm, this.names, this.host.replicas, 120_000);
    const info = await this.hubJsm.streams.info(this.names.relayStream);
    this.duplicateWindowMs = Math.max(0, (info.config.duplicate_window ?? 0) / NS_PER_MS);
    this.streamReady = true;
  }

  /**
   * Relays up to `batch` events in hub order; returns how many. Reads ahead (direct gets of the
   * next `readAhead` sequences at once: one round trip over the link for many events), publishes
   * one by one in sequence order, and writes the checkpoint once for the batch. A crash or a lost
   * lease before that write makes the next relay publish the batch again, under the same message
   * ids, which the site's events stream drops (duplicate window), in the same order.
   */
  private async relayBatch(): Promise<number> {
    let moved = 0;
    let last: StoredMsg | undefined;
    // One chain of publishes per instance subject: an instance's events go out one after another
    // (a failed one stops the ones after it, so none can overtake it), instances in parallel.
    const chains = new Map<string, Promise<void>>();
    while (moved < this.o.batch && !this.stopped) {
      const next = (last?.seq ?? this.cp.seq) + 1;
      const msgs = await this.readAhead(next, Math.min(this.o.readAhead, this.o.batch - moved));
      if (msgs.length === 0) break;
      for (const m of msgs)
        chains.set(
          m.subject,
          (chains.get(m.subject) ?? Promise.resolve()).then(() => this.publishOne(m)),
        );
      moved += msgs.length;
      last = msgs[msgs.length - 1];
    }
    const failed = (await Promise.allSettled(chains.values())).find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    if (last) {
      const value = encodeJson({ seq: last.seq });
      try {
        this.cp = {
          seq: last.seq,
          rev: this.cp.rev === 0 ? await this.state.create(CHECKPOINT_KEY, value) : await this.state.update(CHECKPOINT_KEY, value, this.cp.rev),
        };
      } catch (e) {
        if (isCasConflict(e)) throw new LostLease();
        throw e;
      }
      this.relayed += moved;
      // Purged only once the checkpoint covers them.
      this.toPurge.push({ seq: last.seq, timeMs: last.time.getTime() });
      if (!(await this.lead())) throw new LostLease();
    }
    if (this.toPurge.length > 0) await this.purge();
    return moved;
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

  private async publishOne(m: StoredMsg): Promise<void> {
    const parts = m.subject.split('.');
    const [workflow, id] = [parts[2], parts[3]];
    if (parts.length !== 4 || !workflow || !id) {
      // Not something a jetstate client publishes: skipped (and said), never a reason to stop.
      this.host.logger.error(`edge relay of '${this.host.namespace}': skipped hub message ${m.seq} on '${m.subject}', not a relayed event subject`);
      return;
    }
    const subject = this.names.eventSubject(partitionOf(workflow, id, this.partitions), workflow, id);
    const headers = copyHeaders(m.header);
    const msgID = m.header?.get('Nats-Msg-Id') || `relay.${this.o.hubDomain}.${m.seq}`;
    await this.host.js.publish(subject, m.data, { msgID, ...(headers ? { headers } : {}) });
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
        const denied = violationOf(e);
        if (!denied || this.purgeRefused) return;
        this.purgeRefused = true;
        this.host.logger.error(
          `edge relay of '${this.host.namespace}': relayed events stay in the hub's '${this.names.relayStream}': this NATS user may not publish to '${denied.subject}' (docs/EDGE.md, "Permissions")`,
        );
      });
  }
}

/** The permission violation behind `e`, if that is what it is. */
function violationOf(e: unknown): PermissionViolationError | undefined {
  for (let c = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) if (c instanceof PermissionViolationError) return c;
  return undefined;
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
