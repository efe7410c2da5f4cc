/**
 * The NATS permissions of docs/EDGE.md ("NATS configuration", "Permissions") on a real hub and
 * leaf node with their own JetStream domains (`hub`, `store7`): every process is a NATS user with
 * exactly its documented set (its role's set of docs/SECURITY.md plus the table's additions), and
 * the leaf node connection logs in to the hub as a user whose permissions are what the link
 * carries. With these users the site's engine relays, a cloud client queues sends during a cut
 * that are applied after it in order and once, a cloud reader reads but cannot write, and nothing
 * else is refused (both servers' logs). Each right is then shown to be needed: taken away, the
 * call fails on that subject (a user without it, or the hub's config reloaded for the link). Two
 * of them wait out nats.js's 5 s JetStream timeout (see docs/EDGE.md on `$JS.API` in the hub).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { createClient, createEngine, partitionOf, type Client, type Engine } from '../../engine/index.js';
import { ensureRelayStream, layout } from '../../engine/internal.js';
import { edgeRelay, type EdgeRelay } from '../../adapters/edge/index.js';
import { startEdgeTopology, type EdgeTopology } from '../../adapters/nats-server/edge-topology.js';
import { freePort } from '../../adapters/nats-server/launcher.js';
import { eventually, memoryLogger, uniqueNamespace } from '../helpers.js';
import { authorizationConf, inDomain, PARTITIONS, recordBuckets, refusalsIn, rolePermissions, violationOf, type Permissions } from '../security/nats-roles.js';
import { site } from './site-workflow.js';

const SITE = 'store7';
/** The hub's relay stream forgets idempotency keys (and the relay purges) after this: short, so the purge runs here. */
const RELAY_WINDOW_MS = 2_000;
const ids = ['p-1', 'p-2', 'p-3'];

/** The relay's calls to the hub's JetStream, as the site's engine makes them (`$JS.hub.API`) or as the hub checks them. */
const relayCalls = (ns: string, api: string): string[] => [
  `${api}.INFO`,
  `${api}.STREAM.INFO.${ns}_relay`,
  `${api}.STREAM.CREATE.${ns}_relay`,
  `${api}.DIRECT.GET.${ns}_relay`,
  `${api}.STREAM.PURGE.${ns}_relay`,
];

/** The calls of a hub client that reads the site (get, list, history), in the site's domain: what the link lets through to it. */
const siteReads = (api: string): string[] => [
  `${api}.INFO`,
  `${api}.STREAM.INFO.>`,
  `${api}.STREAM.MSG.GET.>`,
  `${api}.DIRECT.GET.>`,
  `${api}.CONSUMER.CREATE.>`,
  `${api}.CONSUMER.INFO.>`,
  `${api}.CONSUMER.MSG.NEXT.>`,
  `${api}.CONSUMER.DELETE.>`,
];

/** The table of docs/EDGE.md for a site namespace. */
function edgePermissions(ns: string): { siteEngine: Permissions; cloudSender: Permissions; cloudReader: Permissions } {
  const roles = rolePermissions(ns, [site.name]);
  const sender = inDomain(roles.sender, SITE);
  const reader = inDomain(roles.reader, SITE);
  return {
    siteEngine: {
      publish: [...roles.engine.publish, `$KV.${ns}_relaystate.>`, ...relayCalls(ns, '$JS.hub.API')],
      subscribe: roles.engine.subscribe,
    },
    // Connected to the hub: the hub checks a call to its own domain ($JS.hub.API) as $JS.API.
    // It never publishes to the site's events subjects (the sender's `<ns>.evt.…` is left out).
    cloudSender: {
      publish: [
        ...sender.publish.filter((s) => !s.startsWith(`${ns}.evt.`)),
        `${ns}.relay.>`,
        '$JS.API.INFO',
        `$JS.API.STREAM.INFO.${ns}_relay`,
        `$JS.API.STREAM.CREATE.${ns}_relay`,
        `$JS.API.STREAM.MSG.GET.${ns}_relay`,
      ],
      subscribe: sender.subscribe,
    },
    // list() reads the record buckets through consumers.
    cloudReader: {
      publish: [
        ...reader.publish,
        ...recordBuckets(ns).flatMap((b) => [`$JS.${SITE}.API.CONSUMER.CREATE.KV_${b}.>`, `$JS.${SITE}.API.CONSUMER.INFO.KV_${b}.>`]),
      ],
      subscribe: reader.subscribe,
    },
  };
}

/** The hub user of the leaf node connection: publish is what the site sends to the hub, subscribe what the hub sends to the site. */
function leafNodePermissions(namespaces: string[]): Permissions {
  return {
    publish: [...new Set(namespaces.flatMap((ns) => relayCalls(ns, '$JS.hub.API'))), '_INBOX.sender.>', '_INBOX.reader.>'],
    subscribe: [...siteReads(`$JS.${SITE}.API`), '_INBOX.engine.>'],
  };
}

const without = (p: Permissions, drop: (s: string) => boolean): Permissions => ({
  publish: p.publish.filter((s) => !drop(s)),
  subscribe: p.subscribe.filter((s) => !drop(s)),
});
const everything: Permissions = { publish: ['>'], subscribe: ['>'] };

interface User {
  user: string;
  pass: string;
  permissions: Permissions;
  inboxPrefix: string;
}
const user = (name: string, permissions: Permissions, inboxPrefix: string): User => ({
  user: name,
  pass: randomBytes(9).toString('base64url'),
  permissions,
  inboxPrefix,
});
const as = (u: User): { auth: { user: string; pass: string }; inboxPrefix: string } => ({ auth: { user: u.user, pass: u.pass }, inboxPrefix: u.inboxPrefix });

describe('edge permissions: the documented sets on a hub and a site with narrowed users', () => {
  const ns = uniqueNamespace('edgeperm');
  /** A second site namespace, where the relay stream is made by the site's engine. */
  const ns2 = uniqueNamespace('edgeperm2');
  const sets = edgePermissions(ns);
  const sets2 = edgePermissions(ns2);
  const leafSet = leafNodePermissions([ns, ns2]);
  /** The site engine's additions, taken away one at a time (the stream creation apart, in a namespace whose relay stream is missing). */
  const sweptAdditions = [`$KV.${ns}_relaystate.>`, ...relayCalls(ns, '$JS.hub.API').filter((s) => !s.includes('.STREAM.CREATE.'))];
  const hubApiCall = (p: string): boolean => p.startsWith('$JS.API.');

  // At the site (leaf server).
  const engineUser = user('engine', sets.siteEngine, '_INBOX.engine');
  const engine2User = user('engine2', sets2.siteEngine, '_INBOX.engine');
  const engine2NoCreate = user(
    'engine2-no-create',
    without(sets2.siteEngine, (s) => s === `$JS.hub.API.STREAM.CREATE.${ns2}_relay`),
    '_INBOX.engine',
  );
  const engineSweep = sweptAdditions.map((entry, i) => ({
    entry,
    u: user(
      `engine-minus-${i}`,
      without(sets.siteEngine, (s) => s === entry),
      '_INBOX.engine',
    ),
  }));
  const siteAdmin = user('site-admin', everything, '_INBOX.engine');
  // In the hub.
  const senderUser = user('sender', sets.cloudSender, '_INBOX.sender');
  const readerUser = user('reader', sets.cloudReader, '_INBOX.reader');
  const leafUser = user('leaf', leafSet, '');
  const hubAdmin = user('hub-admin', everything, '_INBOX.reader');
  const senderNoRelay = user(
    'sender-no-relay',
    without(sets.cloudSender, (s) => s === `${ns}.relay.>`),
    '_INBOX.sender',
  );
  /** The relay client's additions as the table had them, `$JS.hub.API.…`: the hub checks the subject it maps them to, `$JS.API.…`. */
  const senderOldTable = user(
    'sender-hub-api',
    { ...sets.cloudSender, publish: sets.cloudSender.publish.map((s) => (hubApiCall(s) ? s.replace('$JS.API.', '$JS.hub.API.') : s)) },
    '_INBOX.sender',
  );
  const senderNoMsgGet = user(
    'sender-no-msg-get',
    without(sets.cloudSender, (s) => s === `$JS.API.STREAM.MSG.GET.${ns}_relay`),
    '_INBOX.sender',
  );
  const readerNoList = ['CREATE', 'INFO'].map((op) => ({
    op,
    u: user(
      `reader-no-consumer-${op.toLowerCase()}`,
      without(sets.cloudReader, (s) => s.startsWith(`$JS.${SITE}.API.CONSUMER.${op}.KV_`)),
      '_INBOX.reader',
    ),
  }));

  const hubUsers = (leaf: Permissions): User[] => [
    senderUser,
    readerUser,
    { ...leafUser, permissions: leaf },
    hubAdmin,
    senderNoRelay,
    senderOldTable,
    senderNoMsgGet,
    ...readerNoList.map((r) => r.u),
  ];
  const siteUsers = [engineUser, engine2User, engine2NoCreate, ...engineSweep.map((s) => s.u), siteAdmin];

  let http = 0;
  let topo: EdgeTopology;
  const hubConfig = (leaf: Permissions): string => `${authorizationConf(hubUsers(leaf))}\nhttp: 127.0.0.1:${http}`;
  const logger = memoryLogger();
  const relay: EdgeRelay = edgeRelay({ hubDomain: 'hub', idleMs: 50, hubTimeoutMs: 1_000 });
  let engine: Engine | undefined;
  let cloud: Client | undefined;
  let reader: Client | undefined;
  const raws: NatsConnection[] = [];
  /** The refusals this test provokes on purpose, by server and user: nothing else may show in the logs. */
  const provoked: Array<{ server: 'hub' | 'site'; user: string; subject: string }> = [];

  const rawAs = async (server: 'hub' | 'site', u: User): Promise<NatsConnection> => {
    const nc = await connect({ servers: (server === 'hub' ? topo.hub : topo.leaf).url, user: u.user, pass: u.pass, inboxPrefix: u.inboxPrefix });
    raws.push(nc);
    return nc;
  };
  /** The relay stream in the hub, as the cloud client sees it. */
  let hubJsm: JetStreamManager;
  const relayMessages = async (): Promise<number> => (await hubJsm.streams.info(layout(ns).relayStream)).state.messages;
  const inbox = (id: string): string => layout(ns).eventSubject(partitionOf(site.name, id, PARTITIONS), site.name, id);

  /** The subjects the leaf node connection subscribes to in the hub (the hub's monitoring). */
  const leafSubs = async (): Promise<{ port: number; subs: string[] } | undefined> => {
    const z = (await (await fetch(`http://127.0.0.1:${http}/leafz?subs=1`)).json()) as { leafs?: Array<{ port: number; subscriptions_list?: string[] }> };
    const l = z.leafs?.[0];
    // The port the hub sees changes with each connection of the link.
    return l ? { port: l.port, subs: l.subscriptions_list ?? [] } : undefined;
  };
  /** The hub takes `leaf` as the link's permissions; the link is cut and restored so the leaf logs in again with them. */
  const relink = async (leaf: Permissions): Promise<{ port: number; subs: string[] }> => {
    const before = await leafSubs();
    await topo.hub.reload(hubConfig(leaf));
    await topo.link.cut();
    await topo.link.restore();
    return eventually(async () => {
      const now = await leafSubs();
      assert.ok(now && now.port !== before?.port, 'the leaf node logged in again');
      // Its subscriptions follow once the connection is up: the engines' inboxes are among them when allowed.
      if (leaf.subscribe.includes('_INBOX.engine.>')) assert.ok(now.subs.some((s) => s.startsWith('_INBOX.engine.')));
      return now;
    }, 15_000);
  };

  before(async () => {
    http = await freePort();
    topo = await startEdgeTopology({
      leafJetStream: true,
      leafDomain: SITE,
      auth: {
        hubConfig: hubConfig(leafSet),
        leafConfig: authorizationConf(siteUsers),
        leafNode: { user: leafUser.user, pass: leafUser.pass },
        // linked() asks as the reader from the hub and as the engine from the site: the link carries both.
        probe: { hub: { ...readerUser, inboxPrefix: '_INBOX.reader' }, leaf: { ...engineUser, inboxPrefix: '_INBOX.engine' } },
      },
    });
    hubJsm = await jetstreamManager(await rawAs('hub', senderUser), { domain: 'hub' });
  });
  after(async () => {
    await cloud?.close().catch(() => {});
    await reader?.close().catch(() => {});
    await engine?.close().catch(() => {});
    for (const nc of raws) await nc.close().catch(() => {});
    await topo?.stop();
  });

  it("the site's engine with its set runs and relays; the cloud client's set creates the relay stream", async () => {
    // A hub-side setup (the cloud client's rights) makes the relay stream with a short window.
    await ensureRelayStream(hubJsm, layout(ns), 1, RELAY_WINDOW_MS);
    engine = await createEngine({
      servers: topo.leaf.url,
      namespace: ns,
      ...as(engineUser),
      workflows: [site],
      logger,
      leaseTtlMs: 1_000,
      extensions: [relay],
    });
    for (const id of ids) await engine.start(site, { id, input: { label: id } });
    await eventually(() => assert.deepEqual(relay.status(), { leading: true, relayed: 0, checkpoint: 0 }));
  });

  it('a cloud client with relayDomain sends during a cut; after the restore the events are applied in order, once', async () => {
    cloud = await createClient({ servers: topo.hub.url, namespace: ns, jsDomain: SITE, relayDomain: 'hub', ...as(senderUser), workflows: [site], logger });
    const hubSent = new Map<string, number[]>(ids.map((id) => [id, [1]]));
    const siteSent = new Map<string, number[]>(ids.map((id) => [id, []]));
    for (const id of ids) await cloud.send(site, id, { type: 'ADD', k: 1 });
    for (const id of ids) await engine!.waitFor(site, id, (s) => s.context.log.includes(1), { timeoutMs: 10_000 });

    await topo.link.cut();
    for (let k = 100; k < 105; k++) {
      for (const id of ids) {
        assert.equal((await cloud.send(site, id, { type: 'ADD', k }, { idempotencyKey: `${id}-${k}` })).duplicate, false);
        hubSent.get(id)!.push(k);
        await engine!.send(site, id, { type: 'ADD', k: -k });
        siteSent.get(id)!.push(-k);
      }
    }
    // A retry with the same key, within the relay stream's window: recognised (its MSG.GET right).
    assert.equal((await cloud.send(site, ids[0]!, { type: 'ADD', k: 100 }, { idempotencyKey: `${ids[0]}-100` })).duplicate, true);
    for (const id of ids) {
      const cutOff = await engine!.waitFor(site, id, (s) => s.context.log.includes(-104), { timeoutMs: 10_000 });
      assert.ok(!cutOff.context.log.some((k) => k >= 100), `${id}: nothing from the hub during the cut: ${cutOff.context.log.join(',')}`);
    }
    await topo.link.restore();
    for (const id of ids) {
      const want = hubSent.get(id)!;
      const done = await engine!.waitFor(site, id, (s) => want.every((k) => s.context.log.includes(k)), { timeoutMs: 20_000 });
      assert.deepEqual(
        done.context.log.filter((k) => k > 0),
        want,
        `${id}: the hub's events in the order sent, once each`,
      );
      assert.deepEqual(
        done.context.log.filter((k) => k < 0),
        siteSent.get(id),
        `${id}: the site's own, in order, once each`,
      );
    }
    // A start through the relay: the site's engine creates the instance and its answer crosses the link.
    const started = await cloud.start(site, { id: 'p-cloud', input: { label: 'cloud' }, timeoutMs: 10_000 });
    assert.equal(started.status, 'running');
    assert.equal(started.revision, 1);
    // Relayed events older than the window are purged from the hub (the engine's PURGE right).
    await eventually(async () => assert.equal(await relayMessages(), 0), 15_000, 200);
    assert.equal(relay.status().relayed, ids.length * 6 + 1);
  });

  it('a cloud reader with jsDomain gets, lists and reads history; it may not send or write a record', async () => {
    const r: Client = await createClient({ servers: topo.hub.url, namespace: ns, jsDomain: SITE, ...as(readerUser), workflows: [site], logger });
    reader = r;
    for (const id of ids) {
      const atSite = await engine!.get(site, id);
      const seen = await r.get(site, id);
      assert.deepEqual(seen && { revision: seen.revision, context: seen.context }, atSite && { revision: atSite.revision, context: atSite.context });
      assert.deepEqual(
        (await r.history(site, id)).map((h) => h.seq),
        (await engine!.history(site, id)).map((h) => h.seq),
      );
    }
    const listed: string[] = [];
    for await (const i of r.list(site)) listed.push(i.id);
    assert.deepEqual(listed.sort(), [...ids, 'p-cloud'].sort());

    const before = await engine!.get(site, 'p-1');
    const denied = async (work: Promise<unknown>, subject: string): Promise<void> => {
      await assert.rejects(work, (e: unknown) => {
        assert.equal(violationOf(e)?.subject, subject, `refused on ${subject}: ${String(e)}`);
        return true;
      });
      provoked.push({ server: 'hub', user: readerUser.user, subject });
    };
    await denied(r.send(site, 'p-1', { type: 'ADD', k: 999 }), inbox('p-1'));
    // Before it, the send read the workflow's published secret paths, refused too (a reader's set
    // has no such read): warned, sealed with the definition's paths.
    provoked.push({ server: 'hub', user: readerUser.user, subject: `$JS.${SITE}.API.DIRECT.GET.KV_${ns}_control.$KV.${ns}_control.secrets.${site.name}` });
    const nc = await rawAs('hub', readerUser);
    const js = jetstream(nc, { domain: SITE });
    await denied(js.publish(inbox('p-1'), JSON.stringify({ type: 'ADD', k: 999 })), inbox('p-1'));
    // Across domains a KV write goes through the site's API subjects.
    const bucket = layout(ns).instancesShard(0);
    const kv = await new Kvm(js).open(bucket);
    await denied(kv.put(`${site.name}.p-1`, '{}'), `$JS.${SITE}.API.$KV.${bucket}.${site.name}.p-1`);
    const now = await engine!.get(site, 'p-1');
    assert.deepEqual(now && { revision: now.revision, context: now.context }, before && { revision: before.revision, context: before.context });
  });

  it('the link carries only what the table says: not even a user with every right can write at the site or in the hub through it', async () => {
    const link = await leafSubs();
    assert.ok(link);
    // What the site subscribes to in the hub: the engines' inboxes, and of its domain's API the
    // families the table names; within them the hub passes only the allowed calls (below).
    assert.deepEqual(
      link.subs.filter((s) => s.startsWith(`$JS.${SITE}.`)).sort(),
      ['CONSUMER.>', 'DIRECT.>', 'INFO', 'STREAM.>'].map((s) => `$JS.${SITE}.API.${s}`),
    );
    const others = link.subs.filter((s) => !s.startsWith(`$JS.${SITE}.`) && !s.startsWith('$LDS.'));
    assert.ok(others.length > 0 && others.every((s) => s.startsWith('_INBOX.engine.')), others.join(' '));
    assert.ok(!link.subs.some((s) => s.startsWith(`${ns}.`) || s.startsWith('$KV.')), `no events or records subjects: ${link.subs.join(' ')}`);

    const before = await engine!.get(site, 'p-2');
    const admin = await rawAs('hub', hubAdmin);
    const noResponders = async (nc: NatsConnection, subject: string, body = '{}'): Promise<void> => {
      await assert.rejects(nc.request(subject, body, { timeout: 3_000 }), /no responders/, subject);
    };
    // From the hub: an event into a site inbox, a record write, a purge and a delete of the site's streams.
    await noResponders(admin, inbox('p-2'), JSON.stringify({ type: 'ADD', k: 777 }));
    await noResponders(admin, `$JS.${SITE}.API.$KV.${layout(ns).instancesShard(0)}.${site.name}.p-2`);
    await noResponders(admin, `$JS.${SITE}.API.STREAM.PURGE.${layout(ns).historyStream}`);
    await noResponders(admin, `$JS.${SITE}.API.STREAM.DELETE.${layout(ns).deadLetterStream}`);
    // ...while the reads it needs go through.
    assert.match((await admin.request(`$JS.${SITE}.API.STREAM.INFO.${layout(ns).historyStream}`, '', { timeout: 5_000 })).string(), /stream_info_response/);
    // From the site: the hub's relay stream cannot be deleted, nor another stream read.
    const siteAdminNc = await rawAs('site', siteAdmin);
    await noResponders(siteAdminNc, `$JS.hub.API.STREAM.DELETE.${layout(ns).relayStream}`);
    await noResponders(siteAdminNc, `$JS.hub.API.STREAM.LIST`);
    const now = await engine!.get(site, 'p-2');
    assert.deepEqual(now?.context, before?.context);
  });

  it('each entry of the link is needed; with every right the link lets the hub write into the site', async () => {
    const readerNc = await rawAs('hub', readerUser);
    const siteRead = (): Promise<unknown> => readerNc.request(`$JS.${SITE}.API.INFO`, '', { timeout: 1_500 });

    // Without the site's API: no hub client reaches it (the link does not subscribe there).
    let link = await relink(without(leafSet, (s) => s.startsWith(`$JS.${SITE}.API.`)));
    assert.ok(!link.subs.some((s) => s.startsWith(`$JS.${SITE}.`)), link.subs.join(' '));
    await assert.rejects(siteRead(), /no responders/);

    // Without the site engines' inboxes: the relay's requests reach the hub, the answers do not come back.
    link = await relink(without(leafSet, (s) => s === '_INBOX.engine.>'));
    assert.ok(!link.subs.some((s) => s.startsWith('_INBOX.')), link.subs.join(' '));
    await cloud!.send(site, 'p-3', { type: 'ADD', k: 200 });
    await eventually(() => assert.match(relay.status().lastError ?? '', /timeout/i), 10_000);
    assert.ok(!(await engine!.get(site, 'p-3'))!.context.log.includes(200), 'not relayed');

    // Without the relay's calls: the site sees no JetStream of the hub.
    await relink(without(leafSet, (s) => s.startsWith('$JS.hub.API.')));
    await eventually(() => assert.match(relay.status().lastError ?? '', /no responders/i), 10_000);
    assert.ok(!(await engine!.get(site, 'p-3'))!.context.log.includes(200), 'not relayed');

    // Without the hub readers' inbox: their requests reach the site, the answers do not come back.
    await relink(without(leafSet, (s) => s === '_INBOX.reader.>'));
    await assert.rejects(siteRead(), /timeout/i);
    // The queued send is relayed now (the relay's entries are back).
    await engine!.waitFor(site, 'p-3', (s) => s.context.log.includes(200), { timeoutMs: 10_000 });

    // Without the cloud senders' inbox: a start through the relay is created at the site, its answer is lost.
    await relink(without(leafSet, (s) => s === '_INBOX.sender.>'));
    const pending = await cloud!.start(site, { id: 'p-lost', input: { label: 'lost' }, timeoutMs: 1_500 });
    assert.equal(pending.status, 'pending');
    await engine!.waitFor(site, 'p-lost', (s) => s.status === 'running', { timeoutMs: 10_000 });

    // Every right: the same event a hub user with every right sent in vain above now lands in the site's inbox.
    await relink(everything);
    const admin = await rawAs('hub', hubAdmin);
    await eventually(() => jetstream(admin).publish(inbox('p-2'), JSON.stringify({ type: 'ADD', k: 777 })), 10_000);
    await engine!.waitFor(site, 'p-2', (s) => s.context.log.includes(777), { timeoutMs: 10_000 });

    // Back to the table's set.
    await relink(leafSet);
    await siteRead();
  });

  it("each addition to the cloud clients' sets is needed, and the hub checks its own domain's calls as $JS.API", async () => {
    // Without the relay subject: refused at once, naming it.
    const noRelay = await createClient({
      servers: topo.hub.url,
      namespace: ns,
      jsDomain: SITE,
      relayDomain: 'hub',
      ...as(senderNoRelay),
      workflows: [site],
      logger,
    });
    try {
      await assert.rejects(noRelay.send(site, 'p-1', { type: 'ADD', k: 300 }), (e: unknown) => {
        assert.equal(violationOf(e)?.subject, `${ns}.relay.${site.name}.p-1`, String(e));
        return true;
      });
      provoked.push({ server: 'hub', user: senderNoRelay.user, subject: `${ns}.relay.${site.name}.p-1` });
    } finally {
      await noRelay.close();
    }
    // The two that nats.js cannot tie to the request (the hub refuses the mapped subject): each
    // fails after the JetStream request timeout, and the hub logs the refusal of `$JS.API.…`.
    const dupNoCheck = async (): Promise<unknown> => {
      const c = await createClient({
        servers: topo.hub.url,
        namespace: ns,
        jsDomain: SITE,
        relayDomain: 'hub',
        ...as(senderNoMsgGet),
        workflows: [site],
        logger,
      });
      try {
        await c.send(site, 'p-1', { type: 'ADD', k: 301 }, { idempotencyKey: 'p-1-301' });
        return await c.send(site, 'p-1', { type: 'ADD', k: 301 }, { idempotencyKey: 'p-1-301' }).then(
          () => undefined,
          (e: unknown) => e,
        );
      } finally {
        await c.close();
      }
    };
    const [oldTable, noMsgGet] = await Promise.all([
      createClient({ servers: topo.hub.url, namespace: ns, jsDomain: SITE, relayDomain: 'hub', ...as(senderOldTable), workflows: [site], logger }).then(
        async (c) => void (await c.close()),
        (e: unknown) => e,
      ),
      dupNoCheck(),
    ]);
    assert.match(String(oldTable), /timeout/i);
    assert.match(String(noMsgGet), /timeout/i);
    const refused = refusalsIn(topo.hub.log());
    assert.deepEqual(
      refused.filter((r) => r.user === senderOldTable.user).map((r) => r.subject),
      ['$JS.API.INFO'],
    );
    assert.deepEqual(
      refused.filter((r) => r.user === senderNoMsgGet.user).map((r) => r.subject),
      [`$JS.API.STREAM.MSG.GET.${ns}_relay`],
    );
    provoked.push({ server: 'hub', user: senderOldTable.user, subject: '$JS.API.INFO' });
    provoked.push({ server: 'hub', user: senderNoMsgGet.user, subject: `$JS.API.STREAM.MSG.GET.${ns}_relay` });

    // list() without either consumer right of the record buckets fails on it.
    for (const { op, u } of readerNoList) {
      const c = await createClient({ servers: topo.hub.url, namespace: ns, jsDomain: SITE, ...as(u), workflows: [site], logger });
      try {
        await assert.rejects(
          (async () => {
            for await (const _ of c.list(site)) void _;
          })(),
          (e: unknown) => {
            const v = violationOf(e);
            assert.ok(v && v.subject.startsWith(`$JS.${SITE}.API.CONSUMER.${op}.KV_${ns}_instances`), `${u.user}: ${String(e)}`);
            provoked.push({ server: 'hub', user: u.user, subject: v.subject });
            return true;
          },
        );
      } finally {
        await c.close();
      }
    }
  });

  it("each addition to the site engine's set is needed: without it the relay stops on that subject, and says so", async () => {
    // A namespace whose relay stream does not exist yet: the engine creates it, if it may.
    const noCreateLog = memoryLogger();
    // Relays that fail retry after idleMs: slowly here, so the site's log keeps its start (16 kB tail).
    const noCreate = edgeRelay({ hubDomain: 'hub', idleMs: 1_000, hubTimeoutMs: 1_000 });
    const e1 = await createEngine({
      servers: topo.leaf.url,
      namespace: ns2,
      ...as(engine2NoCreate),
      workflows: [site],
      logger: noCreateLog,
      leaseTtlMs: 1_000,
      drainTimeoutMs: 500,
      extensions: [noCreate],
    });
    const createSubject = `$JS.hub.API.STREAM.CREATE.${ns2}_relay`;
    try {
      await eventually(
        () => assert.match(noCreate.status().lastError ?? '', new RegExp(`may not publish to '${createSubject.replace(/[.$]/g, '\\$&')}'`)),
        10_000,
      );
      assert.ok(
        noCreateLog.lines.some((l) => l.startsWith('error: ') && l.includes(createSubject)),
        noCreateLog.lines.join('\n'),
      );
      provoked.push({ server: 'site', user: engine2NoCreate.user, subject: createSubject });
    } finally {
      await e1.close();
    }
    const created = edgeRelay({ hubDomain: 'hub', idleMs: 50, hubTimeoutMs: 1_000 });
    const e2 = await createEngine({
      servers: topo.leaf.url,
      namespace: ns2,
      ...as(engine2User),
      workflows: [site],
      logger,
      leaseTtlMs: 1_000,
      drainTimeoutMs: 500,
      extensions: [created],
    });
    try {
      const jsm = await jetstreamManager(await rawAs('site', engine2User), { domain: 'hub' });
      await eventually(async () => assert.equal((await jsm.streams.info(layout(ns2).relayStream)).config.name, layout(ns2).relayStream), 10_000);
      await eventually(() => assert.deepEqual(created.status(), { leading: true, relayed: 0, checkpoint: 0 }), 10_000);
    } finally {
      await e2.close();
    }

    // The main namespace: its engine hands the relay on, one engine at a time lacks one entry.
    await engine!.close();
    engine = undefined;
    for (const { entry, u } of engineSweep) {
      assert.equal(u.permissions.publish.length, sets.siteEngine.publish.length - 1, `${entry} is an entry of the set`);
      const log = memoryLogger();
      const r = edgeRelay({ hubDomain: 'hub', idleMs: 1_000, hubTimeoutMs: 1_000, readAhead: 1 });
      const e = await createEngine({
        servers: topo.leaf.url,
        namespace: ns,
        ...as(u),
        workflows: [site],
        logger: log,
        leaseTtlMs: 1_000,
        drainTimeoutMs: 500,
        extensions: [r],
      });
      try {
        // The lease is the first relaystate key the relay writes.
        const subject = entry.replace(/\.>$/, '.lease');
        const named = (l: string): boolean => l.startsWith('error: ') && l.includes(`may not publish to '${subject}'`);
        if (entry.includes('.STREAM.PURGE.')) {
          // It relays; only the purge, once the relayed event is out of the window, is refused.
          await cloud!.send(site, 'p-1', { type: 'ADD', k: 400 });
          await e.waitFor(site, 'p-1', (s) => s.context.log.includes(400), { timeoutMs: 10_000 });
          await eventually(() => assert.ok(log.lines.some(named), log.lines.join('\n')), 15_000, 100);
          assert.ok((await relayMessages()) >= 1, 'the relayed event stays in the hub');
        } else {
          await eventually(() => assert.ok(log.lines.some(named) && r.status().lastError?.includes(subject), `${u.user}: ${log.lines.join('\n')}`), 10_000);
        }
        // The engine itself goes on: the site's own events are applied.
        await e.send(site, 'p-2', { type: 'ADD', k: -500 });
        await e.waitFor(site, 'p-2', (s) => s.context.log.includes(-500), { timeoutMs: 10_000 });
        provoked.push({ server: 'site', user: u.user, subject });
      } finally {
        await e.close();
      }
    }
  });

  it('nothing else was refused: the library stays within these sets', () => {
    for (const [server, log] of [
      ['hub', topo.hub.log()],
      ['site', topo.leaf.log()],
    ] as const) {
      assert.match(log, /Starting nats-server/, `the ${server}'s whole log is at hand`);
      const unexpected = refusalsIn(log).filter((r) => !provoked.some((p) => p.server === server && p.user === r.user && p.subject === r.subject));
      assert.deepEqual(unexpected, [], `${server}: only the refusals the test provoked`);
    }
    assert.deepEqual(
      logger.lines.filter((l) => l.startsWith('error: ')),
      [],
    );
  });
});
