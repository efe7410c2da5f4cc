/**
 * `jetstate dev`: one command for a working setup on this machine. Uses the NATS at --server /
 * NATS_URL / the config file / 127.0.0.1:4222 when one answers; otherwise starts a nats-server
 * with JetStream whose data stays in ./.jetstate/dev-data, fetching the binary into
 * ./.jetstate/nats first when none is found (as `jetstate nats install` does). Runs an engine
 * with the workflows until Ctrl-C.
 */
import { connect as tcpConnect } from 'node:net';
import { dirname, resolve } from 'node:path';
import { createEngine } from '../../engine/index.js';
import { NatsServer, freePort } from '../nats-server/launcher.js';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { DEFAULT_SERVER, DEV_KEYS_FILE, keyRingText, loadWorkflows, serverOf, type CliValues } from './commands.js';
import { ensureNatsServer } from './nats.js';
import { portOf, startUi } from './ui.js';

/** Whether something accepts TCP connections at a nats:// URL (within a second). */
export function reachable(url: string): Promise<boolean> {
  // 'host:port' as the NATS client takes it, or a nats:// URL.
  const u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url.replace(/^nats:/, 'http:') : `http://${url}`);
  return new Promise((ok) => {
    const socket = tcpConnect({ host: u.hostname, port: Number(u.port || 4222) });
    const done = (v: boolean): void => {
      socket.destroy();
      ok(v);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * The key ring for workflows with secrets: JETSTATE_KEYS, else one made for development in
 * .jetstate/dev-keys (readable by this user only), which the other CLI commands in this folder use too.
 */
async function devKeyRing(): Promise<string> {
  const existing = keyRingText();
  if (existing) return existing;
  await mkdir(dirname(DEV_KEYS_FILE), { recursive: true });
  const text = `dev1:${randomBytes(32).toString('base64')}`;
  await writeFile(DEV_KEYS_FILE, text + '\n', { mode: 0o600, flag: 'wx' }).catch(() => {});
  process.stdout.write(`made a development key ring for secrets in ${DEV_KEYS_FILE} (set JETSTATE_KEYS in production)\n`);
  return keyRingText() ?? text;
}

const otlpEndpoint = (): string | undefined =>
  process.env['OTEL_SDK_DISABLED']?.toLowerCase() === 'true'
    ? undefined
    : process.env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] || process.env['OTEL_EXPORTER_OTLP_ENDPOINT'] || undefined;

export async function runDev(values: CliValues): Promise<number> {
  // Checked before anything starts: a bad --port found after would leave the engine running.
  portOf(values);
  const workflows = await loadWorkflows(values.workflows);
  const explicit = values.server || process.env['NATS_URL'];
  let url = serverOf(values);
  let server: NatsServer | undefined;
  if (!(await reachable(url))) {
    if (explicit) {
      process.stderr.write(`jetstate: no NATS answers at ${url}; start it, or run 'jetstate dev' without --server/NATS_URL to start one here\n`);
      return 1;
    }
    const storeDir = resolve(process.cwd(), '.jetstate', 'dev-data');
    const binary = await ensureNatsServer(`no NATS answers at ${url}, so dev starts one`, { packageCopy: true });
    const port = (await reachable(DEFAULT_SERVER)) ? await freePort() : 4222;
    server = await NatsServer.start({ binary: binary.path, storeDir, port, serverName: 'jetstate_dev', ownProcessGroup: true });
    url = server.url;
    process.stdout.write(`started nats-server ${binary.version} (pid ${server.pid}) at ${url}, data in ${storeDir}\n`);
  } else {
    process.stdout.write(`using the NATS at ${url}\n`);
  }
  // The server runs in its own process group (a Ctrl-C drains the engine first): whatever ends
  // this command must stop it.
  const stopServer = (): void => {
    try {
      if (server?.pid !== undefined) process.kill(server.pid, 'SIGTERM');
    } catch {
      // already gone
    }
  };
  if (server) process.once('exit', stopServer);
  try {
    const keyRing = await devKeyRing();
    const engine = await createEngine({
      servers: url,
      namespace: values.namespace,
      ...(values.domain ? { jsDomain: values.domain } : {}),
      workflows,
      name: 'jetstate-dev',
      secrets: { keyRing },
    });
    const ui = values['no-ui']
      ? undefined
      : await startUi(values, url, workflows, { fallbackToFreePort: true }).catch(async (e: unknown) => {
          await engine.close();
          throw e;
        });
    const cli = 'npx jetstate';
    const server_ = url === DEFAULT_SERVER ? '' : ` --server ${url}`;
    process.stdout.write(
      [
        `engine ${engine.engineId} is running workflows: ${workflows.map((w) => `${w.name} v${w.version}`).join(', ')}`,
        ui ? `web view: ${ui.url}` : 'web view: off (--no-ui)',
        '',
        'Try it from another shell in this folder:',
        `  ${cli} start order --id o-1 --input '{"orderId":"o-1","customer":"ada","amount":30}'${server_}`,
        `  ${cli} send order o-1 PAY '{"amount":30}'${server_}`,
        `  ${cli} send order o-1 SHIP '{"carrier":"dhl","trackingId":"JD0142"}'${server_}`,
        `  ${cli} get order o-1${server_}`,
        `  ${cli} history order o-1${server_}`,
        `  ${cli} verify order o-1${server_}`,
        `  ${cli} start approval --id a-1 --input '{"requester":"ada","resource":"db-prod","simulateOutage":true}'${server_}`,
        `  ${cli} send approval a-1 APPROVE '{"by":"grace"}'${server_}`,
        `  ${cli} history approval a-1${server_}     # the provisioning task retried once, then succeeded`,
        `  ${cli} start payment --id p-1 --input '{"paymentId":"p-1","amount":12,"card":{"number":"4111111111111111","expiry":"12/29"}}'${server_}`,
        `  ${cli} send payment p-1 CONFIRM '{"cvc":"123"}'${server_}`,
        `  ${cli} get payment p-1${server_}          # the card number is [encrypted:dev1]; add --reveal to see it`,
        '',
        otlpEndpoint()
          ? `Traces and metrics go over OTLP to ${otlpEndpoint()} (from the OTEL_* environment).`
          : 'Tracing is off: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4318) to send traces to Jaeger or Tempo.',
        'Press Ctrl-C to stop (in-flight events are drained first).',
        '',
      ].join('\n'),
    );
    await new Promise<void>((done) => {
      process.once('SIGINT', done);
      process.once('SIGTERM', done);
    });
    process.stdout.write('stopping: draining the engine\n');
    await ui?.close();
    await engine.close();
  } finally {
    if (server) {
      await server.stop();
      process.off('exit', stopServer);
      process.stdout.write('stopped nats-server\n');
    }
  }
  return 0;
}
