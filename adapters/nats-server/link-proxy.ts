/**
 * A TCP relay on loopback (for tests, benchmarks and `scripts/edge-dev.sh`) between a leaf node and its hub's leaf node port, so a test can cut the
 * link (every connection dropped, new ones refused) and restore it while both servers keep
 * running: the cloud side stays up, as in a real outage of the site's uplink.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { freePort } from './launcher.js';

export class LinkProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly port: number,
    private readonly targetPort: number,
  ) {}

  static async start(targetPort: number): Promise<LinkProxy> {
    const proxy = new LinkProxy(await freePort(), targetPort);
    await proxy.restore();
    return proxy;
  }

  get up(): boolean {
    return this.server !== undefined;
  }

  /** Accepts and forwards connections again, on the same port. */
  async restore(): Promise<void> {
    if (this.server) return;
    const server = createServer((inbound) => {
      // Accepted just before a cut, handed over after it: dropped like the others.
      if (this.server !== server) return void inbound.destroy();
      const outbound = createConnection({ host: '127.0.0.1', port: this.targetPort });
      for (const s of [inbound, outbound]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => s.destroy());
      }
      inbound.pipe(outbound);
      outbound.pipe(inbound);
      inbound.on('close', () => outbound.destroy());
      outbound.on('close', () => inbound.destroy());
    });
    await new Promise<void>((ok, ko) => {
      server.once('error', ko);
      server.listen(this.port, '127.0.0.1', () => ok());
    });
    this.server = server;
  }

  /** Drops every forwarded connection and refuses new ones until {@link restore}. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await closed;
  }
}
