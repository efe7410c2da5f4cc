/**
 * The hub's read view of an edge site: mirrors, in the hub's JetStream, of the streams a client
 * reads (the record buckets, the namespace meta, history, dead letters), under the same names. A
 * client on the hub that opens the namespace without `jsDomain` then reads the mirrors: `get`,
 * `list`, `history` and `deadLetters` answer while the link is down, showing the site as of the
 * last moment it was reachable, and catch up by themselves when it is back. Sends from such a
 * client go through the relay (`relayDomain`), never to the mirrors.
 *
 * Nothing here lets the hub write the site's state: mirrors take no writes, and the timers and
 * tasks streams a client checks for exist in the hub only as empty placeholders whose subjects
 * nobody publishes to (a real stream there on `<ns>.tmr.>` would store the site's timers twice
 * while the link is up).
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { jetstream, jetstreamManager, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { z } from 'zod';
import { decodeJson, isAlreadyExists, isStreamNotFound, layout, parseOptions } from '../../engine/internal.js';
import { ErrorCode, JetstateError } from '../../engine/index.js';

export const HubReadViewOptionsSchema = z
  .object({
    /** A connection to the hub (or anywhere both domains are reachable from). */
    connection: z.custom<NatsConnection>((v) => typeof (v as { request?: unknown } | null)?.request === 'function', 'connection must be a NatsConnection'),
    /** The site's namespace. */
    namespace: z.string().regex(/^[A-Za-z0-9_-]{1,128}$/),
    /** JetStream domain of the site. */
    siteDomain: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
    /** JetStream domain that holds the view (the hub's); default: the connection's own JetStream. */
    hubDomain: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/)
      .optional(),
    replicas: z.number().int().min(1).max(5).default(1),
    /** How long to wait for the first copy of the namespace meta record. */
    readyTimeoutMs: z.number().int().min(0).default(15_000),
  })
  .strict();
export type HubReadViewOptions = z.input<typeof HubReadViewOptionsSchema>;

/** What {@link ensureHubReadView} made or found. */
export interface HubReadView {
  /** Streams mirrored from the site, by name (the same in both domains). */
  mirrors: string[];
  /** Empty placeholder streams (timers, tasks), so opening the namespace on the hub creates nothing. */
  placeholders: string[];
}

const NS_PER_MS = 1_000_000;

/**
 * Creates (or finds) the hub's read view of an edge site's namespace. Needs the link up once, to
 * read the site's layout (how many record buckets); afterwards the mirrors follow by themselves.
 *
 * @example
 * ```ts
 * await ensureHubReadView({ connection: hubConnection, namespace: 'shop_store7', siteDomain: 'store7' });
 * const cloud = await createClient({ connection: hubConnection, namespace: 'shop_store7', relayDomain: 'hub' });
 * await cloud.get(order, 'o-17');   // from the mirror, also while store7 is cut off
 * ```
 */
export async function ensureHubReadView(options: HubReadViewOptions): Promise<HubReadView> {
  const o = parseOptions(HubReadViewOptionsSchema, 'ensureHubReadView', options) as z.output<typeof HubReadViewOptionsSchema>;
  const names = layout(o.namespace);
  const nc = o.connection;
  const version = nc.info?.version ?? '0.0.0';
  if (!atLeast(version, 2, 11)) {
    // Observed on 2.10.27: a mirror of a record bucket stalls at the first record it sees as an
    // update (the site's compare-and-set header names a sequence the mirror never had), so the
    // view would stay empty or stop at the first cut. 2.15.1 mirrors the same buckets correctly.
    throw new JetstateError(
      ErrorCode.InvalidOptions,
      `ensureHubReadView: the hub runs nats-server ${version}; its mirrors of record buckets stall on compare-and-set updates before 2.11 (seen on 2.10.27), so the read view needs nats-server 2.11 or newer on the hub (tested on 2.15.1); read through jsDomain meanwhile`,
    );
  }
  const siteJs = jetstream(nc, { domain: o.siteDomain });
  let shards: number;
  try {
    const meta = await (await new Kvm(siteJs).open(names.controlBucket)).get('meta');
    const parsed =
      meta && meta.operation === 'PUT' ? z.object({ shards: z.number().int().positive().default(1) }).safeParse(decodeJson(meta.value)) : undefined;
    if (!parsed?.success) throw new Error('no meta record');
    shards = parsed.data.shards;
  } catch (e) {
    throw new JetstateError(
      ErrorCode.NamespaceNotFound,
      `ensureHubReadView: cannot read namespace '${o.namespace}' in JetStream domain '${o.siteDomain}' (${(e as Error).message}); the site must be reachable and its namespace made by an engine`,
      { cause: e },
    );
  }
  const hub = await jetstreamManager(nc, o.hubDomain ? { domain: o.hubDomain } : {});
  const kvStreams = [...Array.from({ length: shards }, (_, s) => `KV_${names.instancesShard(s)}`)];
  const mirrors: string[] = [];
  const base = { storage: 'file' as never, num_replicas: o.replicas, allow_direct: true };
  for (const name of kvStreams) {
    // A record bucket keeps one value per key (history 1), as the site's does.
    await ensure(hub, { name, ...base, max_msgs_per_subject: 1, allow_rollup_hdrs: true, deny_delete: true, mirror: { name, domain: o.siteDomain } as never });
    mirrors.push(name);
  }
  // Only the meta record of the control bucket: the site's signing key stays at the site.
  const control = `KV_${names.controlBucket}`;
  await ensure(hub, {
    name: control,
    ...base,
    max_msgs_per_subject: 1,
    allow_rollup_hdrs: true,
    mirror: { name: control, domain: o.siteDomain, filter_subject: `$KV.${names.controlBucket}.meta` } as never,
  });
  mirrors.push(control);
  for (const name of [names.historyStream, names.deadLetterStream]) {
    await ensure(hub, { name, ...base, mirror: { name, domain: o.siteDomain } as never });
    mirrors.push(name);
  }
  // A client opening the namespace on the hub needs the meta record: wait until it is mirrored.
  const deadline = Date.now() + o.readyTimeoutMs;
  while ((await hub.streams.info(control)).state.messages === 0) {
    if (Date.now() > deadline) {
      throw new JetstateError(
        ErrorCode.Timeout,
        `ensureHubReadView: the meta record of '${o.namespace}' was not mirrored from domain '${o.siteDomain}' within ${o.readyTimeoutMs} ms; is the leaf node link up?`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const placeholders: string[] = [];
  for (const name of [names.timersStream, names.tasksStream]) {
    await ensure(hub, { name, storage: 'file' as never, num_replicas: o.replicas, subjects: [`${o.namespace}_readview.${name}`], max_age: 60_000 * NS_PER_MS });
    placeholders.push(name);
  }
  return { mirrors, placeholders };
}

async function ensure(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    const info = await jsm.streams.info(config.name);
    // A stream of that name that is not this view (the namespace itself lives in the hub) is never overwritten.
    const wantMirror = (config as { mirror?: { name: string } }).mirror;
    if (wantMirror && info.config.mirror?.name !== wantMirror.name) {
      throw new JetstateError(
        ErrorCode.InvalidOptions,
        `ensureHubReadView: stream '${config.name}' already exists in the hub and is not a mirror of the site; the namespace exists in both domains (give each site its own namespace, docs/EDGE.md)`,
      );
    }
    return;
  } catch (e) {
    if (!isStreamNotFound(e)) throw e;
  }
  try {
    await jsm.streams.add(config);
  } catch (e) {
    if (!isAlreadyExists(e)) throw e;
  }
}

function atLeast(version: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (!m) return false;
  return Number(m[1]) > major || (Number(m[1]) === major && Number(m[2]) >= minor);
}
