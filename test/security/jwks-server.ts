/** A JWKS endpoint on loopback for identity tests: serves what it is given and counts fetches. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JWK } from 'jose';

export interface JwksServer {
  url: string;
  /** GETs of the JWKS so far. */
  fetches: number;
  keys: JWK[];
  /** When set, answers with this status and no keys. */
  failWith: number | null;
  close(): Promise<void>;
}

export async function startJwksServer(keys: JWK[] = []): Promise<JwksServer> {
  const state = { fetches: 0, keys, failWith: null as number | null };
  const server: Server = createServer((req, res) => {
    state.fetches++;
    if (state.failWith !== null) {
      res.writeHead(state.failWith).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: state.keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  }) as JwksServer;
}
