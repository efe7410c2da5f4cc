/** Small HTTP helpers shared by the loopback AWS endpoints. */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Thrown by {@link readBody} when a body is larger than allowed. */
export class BodyTooLargeError extends Error {
  override readonly name = 'BodyTooLargeError';
}

/** Reads a request body up to `limitBytes`; a larger one is refused without buffering it. */
export function readBody(req: IncomingMessage, limitBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limitBytes) {
        reject(new BodyTooLargeError(`request body is larger than ${limitBytes} bytes`));
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

/** A request id in the form AWS uses. */
export const requestId = (): string => randomUUID();

/** An HTTP server listening on loopback, with a close that also ends idle keep-alive sockets. */
export interface LoopbackServer {
  server: Server;
  endpoint: string;
  port: number;
  close(): Promise<void>;
}

/** Starts an HTTP server on `host:port` (port 0 picks a free one). */
export async function listenLoopback(handler: RequestListener, host: string, port: number): Promise<LoopbackServer> {
  const server = createServer(handler);
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    server,
    port: address.port,
    endpoint: `http://${host}:${address.port}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // Requests still open (long polls) are ended by their owners before close; any socket
        // left after that is cut so close never hangs.
        setTimeout(() => server.closeAllConnections(), 1_000).unref();
      });
      return closing;
    },
  };
}
