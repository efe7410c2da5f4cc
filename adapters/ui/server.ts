/**
 * The UI server: node:http on 127.0.0.1, the built page as static files, a JSON API read from
 * the in-memory index and the public client, and server-sent events for everything live.
 *
 * Two clients share one NATS connection: the reader, which opens secrets only when the server was
 * started to reveal them, and the actor (send, verify, cancel, terminate), which holds the key
 * ring when there is one, since sealing a secret field of an event needs it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { createClient, ErrorCode, JetstateError, type Client, type ClientOptions } from '../../engine/index.js';
import { closeConnection } from '../../engine/internal.js';
import { Assets, findAssetsDir } from './assets.js';
import { WorkflowCatalog } from './catalog.js';
import { HttpError, checkOrigin, sendError } from './http.js';
import { instanceDetail, type DetailSources } from './instance-detail.js';
import { InstanceIndex } from './instance-index.js';
import { LiveHub } from './live.js';
import { parseUiOptions, type ResolvedUiServerOptions, type UiServerOptions } from './options.js';
import { route, type ApiContext } from './routes.js';
import { cachedPendingExecutions } from './step-functions-view.js';

/**
 * A running web view of one namespace. Close it to stop serving; it leaves a connection it was
 * given open.
 */
export class UiServer implements AsyncDisposable {
  private closing: Promise<void> | undefined;
  private resolveClosed!: () => void;
  private readonly closedPromise = new Promise<void>((r) => (this.resolveClosed = r));

  private constructor(
    private readonly http: Server,
    private readonly nc: NatsConnection,
    private readonly ownsConnection: boolean,
    private readonly clients: Client[],
    private readonly index: InstanceIndex,
    private readonly live: LiveHub,
    /** The port it listens on, on 127.0.0.1. */
    readonly port: number,
  ) {}

  /** The page's address, e.g. `http://127.0.0.1:7480/`. */
  get url(): string {
    return `http://127.0.0.1:${this.port}/`;
  }

  /** Resolves once the index holds every instance that existed at start-up. */
  ready(): Promise<void> {
    return this.index.whenReady();
  }

  static async start(options: UiServerOptions): Promise<UiServer> {
    const o = parseUiOptions(options);
    const assets = await Assets.load(findAssetsDir());
    const ownsConnection = o.connection === undefined;
    let nc: NatsConnection;
    try {
      nc = o.connection ?? (await connect({ servers: o.servers!, name: 'jetstate-ui', noAsyncTraces: true, maxReconnectAttempts: -1, reconnectTimeWait: 250 }));
    } catch (e) {
      throw new JetstateError(
        ErrorCode.Closed,
        `cannot connect to NATS at ${String(o.servers)}: ${(e as Error).message}; start one with 'jetstate dev' or pass --server`,
        { cause: e },
      );
    }
    const opened: Client[] = [];
    let index: InstanceIndex | undefined;
    try {
      const base: ClientOptions = {
        connection: nc,
        namespace: o.namespace,
        ...(o.jsDomain ? { jsDomain: o.jsDomain } : {}),
        workflows: o.workflows,
        logger: o.logger,
        name: 'jetstate-ui',
        ...(o.identity ? { identity: o.identity } : {}),
      };
      const reader = await createClient({ ...base, ...(o.reveal && o.keyRing ? { secrets: { keyRing: o.keyRing } } : {}) });
      opened.push(reader);
      const actor = o.keyRing && !o.reveal ? await createClient({ ...base, secrets: { keyRing: o.keyRing } }) : reader;
      if (actor !== reader) opened.push(actor);
      const domain = o.jsDomain ? { domain: o.jsDomain } : {};
      const kvm = new Kvm(jetstream(nc, domain));
      const buckets = await Promise.all(reader.recordBuckets.map((b) => kvm.open(b)));
      const kv = (key: string): KV => {
        const dot = key.indexOf('.');
        return buckets[reader.recordBuckets.indexOf(reader.recordBucketOf(key.slice(0, dot), key.slice(dot + 1)))]!;
      };
      const jsm: JetStreamManager = await jetstreamManager(nc, domain);
      index = new InstanceIndex(buckets, o.logger);
      index.start();
      const catalog = new WorkflowCatalog(o.workflows);
      const sources: DetailSources = {
        reader,
        kv,
        index,
        catalog,
        traceUrl: o.traceUrl,
        revealed: o.reveal,
        executions: cachedPendingExecutions(jsm, kvm, o.namespace),
      };
      const historySubject = (wf: string, id: string): string => `${o.namespace}.hist.${wf}.${id}`;
      const live = new LiveHub(index, nc, historySubject, (wf, id) => instanceDetail(sources, wf, id), o.logger);
      const ctx: ApiContext = { options: o, nc, jsm, kvm, reader, actor, index, catalog, sources, live, historySubject, deadLetterCache: null };
      const http = createServer((req, res) => void handle(req, res, ctx, assets, o));
      const port = await listen(http, o.port);
      return new UiServer(http, nc, ownsConnection, opened, index, live, port);
    } catch (e) {
      await index?.close();
      for (const c of opened) await c.close().catch(() => {});
      if (ownsConnection) await nc.close().catch(() => {});
      throw e;
    }
  }

  /** Stops serving (open event streams end), stops the watch, closes the clients. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown().finally(() => this.resolveClosed());
    return this.closing;
  }

  /** Resolves when the server has closed; never rejects. */
  closed(): Promise<void> {
    return this.closedPromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async shutdown(): Promise<void> {
    this.live.close();
    await new Promise<void>((r) => {
      this.http.close(() => r());
      this.http.closeAllConnections();
    });
    await this.index.close();
    for (const c of this.clients) await c.close().catch(() => {});
    if (this.ownsConnection) await closeConnection(this.nc);
  }
}

function listen(http: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      reject(
        e.code === 'EADDRINUSE'
          ? new JetstateError(ErrorCode.InvalidOptions, `port ${port} on 127.0.0.1 is in use; pass another with --port (0 picks a free one)`, { cause: e })
          : e,
      );
    };
    http.once('error', onError);
    http.listen(port, '127.0.0.1', () => {
      http.off('error', onError);
      resolve((http.address() as AddressInfo).port);
    });
  });
}

async function handle(req: IncomingMessage, res: ServerResponse, ctx: ApiContext, assets: Assets, o: ResolvedUiServerOptions): Promise<void> {
  try {
    const port = (req.socket.localPort ?? o.port) as number;
    checkOrigin(req, port);
    const url = new URL(req.url ?? '/', `http://127.0.0.1:${port}`);
    if (url.pathname.startsWith('/api/')) {
      await route(req, res, url, ctx);
      return;
    }
    if ((req.method === 'GET' || req.method === 'HEAD') && assets.serve(req, res, url.pathname)) return;
    throw new HttpError(404, 'NOT_FOUND', `nothing at ${url.pathname}`);
  } catch (e) {
    sendError(res, e);
  }
}

/**
 * Starts the web view of a namespace on 127.0.0.1.
 *
 * @example
 * ```ts
 * const ui = await createUiServer({ servers: 'nats://127.0.0.1:4222', workflows: [order], port: 0 });
 * console.log(`open ${ui.url}`);
 * await ui.close();
 * ```
 */
export function createUiServer(options: UiServerOptions): Promise<UiServer> {
  return UiServer.start(options);
}
