// What counts as "AWS gave no answer" (tried again until it does, with untilReachable) and what
// counts as an answer (the task's retry policy), on the errors the real SDK raises over loopback
// sockets: refused, reset, a server that never replies, and HTTP errors with and without a JSON body.
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import { startLocalStepFunctions, type LocalStepFunctions } from '../../adapters/local/step-functions/server.js';
import { freePort } from '../../adapters/nats-server/launcher.js';
import { isUnanswered } from '../../adapters/step-functions/reachability.js';
import { TEST_CREDENTIALS } from './sfn-local-helpers.js';

const listen = async <T extends Server | HttpServer>(server: T): Promise<T & { port: number }> => {
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  return Object.assign(server, { port: (server.address() as { port: number }).port });
};

describe('isUnanswered', () => {
  const servers: Array<Server | HttpServer> = [];
  const sockets = new Set<Socket>();
  const clients: SFNClient[] = [];
  let local: LocalStepFunctions;
  before(async () => {
    local = await startLocalStepFunctions();
  });
  after(async () => {
    for (const c of clients) c.destroy();
    for (const socket of sockets) socket.destroy();
    for (const s of servers) {
      (s as HttpServer).closeAllConnections?.();
      await new Promise((ok) => s.close(ok));
    }
    await local?.close();
  });

  /** The error of a StartExecution against `endpoint` (one HTTP try, 300 ms request timeout). */
  const errorOf = async (endpoint: string): Promise<unknown> => {
    const client = new SFNClient({
      endpoint,
      region: 'us-east-1',
      credentials: TEST_CREDENTIALS,
      maxAttempts: 1,
      requestHandler: { connectionTimeout: 300, requestTimeout: 300, throwOnRequestTimeout: true },
    });
    clients.push(client);
    const stateMachineArn = 'arn:aws:states:us-east-1:123456789012:stateMachine:none';
    return client.send(new StartExecutionCommand({ stateMachineArn, name: 'n', input: '{}' })).then(
      () => assert.fail('expected an error'),
      (e: unknown) => e,
    );
  };
  const server = async <T extends Server | HttpServer>(s: T): Promise<string> => {
    servers.push(s);
    s.on('connection', (socket: Socket) => sockets.add(socket));
    return `http://127.0.0.1:${(await listen(s)).port}`;
  };

  it('no answer: connection refused, reset, or no reply within the request timeout', async () => {
    assert.equal(isUnanswered(await errorOf(`http://127.0.0.1:${await freePort()}`)), true, 'refused');
    assert.equal(isUnanswered(await errorOf(await server(createServer((socket) => socket.destroy())))), true, 'reset');
    assert.equal(isUnanswered(await errorOf(await server(createServer(() => {})))), true, 'silent');
    // Wrapped, as the client pool wraps an AssumeRole that got no answer from STS.
    assert.equal(isUnanswered(new Error('AssumeRole failed', { cause: await errorOf(`http://127.0.0.1:${await freePort()}`) })), true, 'as a cause');
  });

  it('answers: AWS errors with an HTTP status, even a 5xx page that is not JSON', async () => {
    assert.equal(isUnanswered(await errorOf(local.endpoint)), false, 'StateMachineDoesNotExist');
    local.throttle({ count: 1 });
    const throttled = await errorOf(local.endpoint);
    assert.equal((throttled as Error).name, 'ThrottlingException');
    assert.equal(isUnanswered(throttled), false, 'throttling');
    const internal = await server(
      createHttpServer((_, res) => res.writeHead(500, { 'content-type': 'application/x-amz-json-1.0' }).end('{"__type":"InternalFailure","message":"x"}')),
    );
    assert.equal(isUnanswered(await errorOf(internal)), false, '500');
    const gateway = await server(createHttpServer((_, res) => res.writeHead(502, { 'content-type': 'text/html' }).end('<html>bad gateway</html>')));
    assert.equal(isUnanswered(await errorOf(gateway)), false, '502 from a proxy');
    assert.equal(isUnanswered(new Error('plain')), false, 'an error that says nothing of the network');
  });
});
