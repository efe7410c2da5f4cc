/**
 * Runs the two-services example end to end, as a user would set it up, and checks it:
 *
 *   1. packs jetstate (`npm pack`, from the built dist/) and copies shop/ and billing/ into a
 *      temporary folder beside the tarball;
 *   2. installs each (`npm install`: jetstate from the tarball, nothing else of this repository)
 *      and builds it with `tsc --strict`;
 *   3. starts a nats-server (the repository's launcher, on a free loopback port), then both
 *      services, sharing it and one namespace;
 *   4. places an order at the shop, pays its invoice at billing, ships the order, and checks with
 *      each service's own `jetstate` CLI (its jetstate.config.json) that the invoice was created,
 *      paid and closed and the order shipped;
 *   5. stops everything and removes the folder (`--keep` keeps it).
 *
 * Usage, from the repository (after `npm run build`): node --import tsx examples/two-services/run.ts [--keep]
 * Exits 0 when every check passed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { cp, mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { NatsServer } from '../../adapters/nats-server/launcher.js';

const here = import.meta.dirname;
const repo = resolve(here, '../..');
const keep = process.argv.includes('--keep');
const log = (line: string): void => void process.stdout.write(`[two-services] ${line}\n`);

class CheckFailed extends Error {}
function check(ok: unknown, what: string): void {
  if (!ok) throw new CheckFailed(what);
  log(`ok: ${what}`);
}

/** Runs a command to completion; rejects with its output when it fails (unless `allowFailure`). */
function run(
  cmd: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; allowFailure?: boolean },
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(cmd, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', fail);
    child.once('close', (code) => {
      if (code !== 0 && !options.allowFailure) fail(new Error(`${cmd} ${args.join(' ')} (in ${options.cwd}) exited with ${code}:\n${stdout}\n${stderr}`));
      else done({ code, stdout, stderr });
    });
  });
}

/** A service process and what it printed. */
interface Service {
  child: ChildProcess;
  output: () => string;
  url: string;
}

function startService(name: string, dir: string, env: NodeJS.ProcessEnv): Promise<Service> {
  const child = spawn(process.execPath, ['dist/main.js'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  cleanups.push(async () => void child.kill('SIGKILL'));
  let out = '';
  return new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`${name} did not start in 30 s:\n${out}`)), 30_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        done({ child, output: () => out, url: m[1]! });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`${name} exited with ${code} before it listened:\n${out}`));
    });
  });
}

async function stopService(s: Service | undefined): Promise<void> {
  if (!s || s.child.exitCode !== null || s.child.signalCode !== null) return;
  const exited = new Promise((r) => s.child.once('exit', r));
  s.child.kill('SIGTERM');
  const t = setTimeout(() => s.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

async function http(method: string, url: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(url, { method, ...(body ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}) });
  return { status: res.status, json: await res.json() };
}

async function du(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) total += await du(p);
    else if (entry.isFile()) total += (await stat(p)).size;
  }
  return total;
}

/** What must not outlive this runner, even when it is told to stop half-way. */
const cleanups: Array<() => Promise<void>> = [];
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping`);
    void Promise.allSettled(cleanups.map((c) => c())).then(() => process.exit(1));
  });
}

async function main(): Promise<number> {
  if (!existsSync(join(repo, 'dist/adapters/cli/main.js'))) {
    log('dist/ is missing: run `npm run build` in the repository first');
    return 2;
  }
  const work = await mkdtemp(join(tmpdir(), 'jetstate-two-services-'));
  if (!keep) cleanups.push(() => rm(work, { recursive: true, force: true }));
  let nats: NatsServer | undefined;
  const services: Service[] = [];
  try {
    log(`working in ${work}`);
    const packed = await run('npm', ['pack', '--silent', '--pack-destination', work], { cwd: repo });
    await rename(join(work, packed.stdout.trim().split('\n').pop()!), join(work, 'jetstate.tgz'));
    const dirs = { shop: join(work, 'shop'), billing: join(work, 'billing') };
    for (const [name, dir] of Object.entries(dirs)) {
      await cp(join(here, name), dir, { recursive: true, filter: (src) => !/[\\/](node_modules|dist)$/.test(src) });
    }
    log('npm install in shop/ and billing/ (jetstate from the packed tarball)');
    const install = ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=warn'];
    const installs = await Promise.all(Object.values(dirs).map((cwd) => run('npm', install, { cwd })));
    check(!installs.some((r) => /EBADENGINE/.test(r.stderr)), 'no engine warnings while installing jetstate and its dependencies');
    log('tsc --strict in shop/ and billing/');
    await Promise.all(Object.values(dirs).map((cwd) => run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json', '--strict'], { cwd })));

    const shopModules = join(dirs.shop, 'node_modules');
    check(!existsSync(join(shopModules, '@opentelemetry/sdk-node')), 'the OpenTelemetry SDK is not installed with jetstate (an optional peer)');
    check(existsSync(join(shopModules, 'jetstate/LICENSE')), 'the package ships its LICENSE');
    log(`jetstate in node_modules: ${((await du(join(shopModules, 'jetstate'))) / 1e6).toFixed(1)} MB`);

    nats = await NatsServer.start({ serverName: 'two_services' });
    const started = nats;
    cleanups.push(() => started.stop());
    log(`nats-server at ${nats.url}`);
    // What the services and their CLIs read from the environment: only the NATS; the rest from their config.
    const env: NodeJS.ProcessEnv = { ...process.env, NATS_URL: nats.url };
    for (const k of ['JETSTATE_NAMESPACE', 'JETSTATE_WORKFLOWS', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_TRACES_EXPORTER'])
      delete env[k];
    const jetstateBin = (dir: string): string => realpathSync(join(dir, 'node_modules/.bin/jetstate'));
    const cli = (dir: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}) =>
      run(process.execPath, [jetstateBin(dir), ...args], { cwd: dir, env: { ...env, ...extraEnv }, allowFailure: true });

    const version = await cli(dirs.shop, ['--version']);
    check(version.code === 0 && /^\d+\.\d+\.\d+/.test(version.stdout), `the installed CLI runs (jetstate ${version.stdout.trim()})`);
    const traced = await cli(dirs.shop, ['get', 'order', 'nobody'], { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' });
    check(/@opentelemetry\/sdk-node is not installed/.test(traced.stderr), 'with OTEL_* set and no SDK installed, the CLI says what to install');

    services.push(await startService('shop', dirs.shop, env));
    services.push(await startService('billing', dirs.billing, env));
    const [shop, billing] = services as [Service, Service];
    log(`shop at ${shop.url}, billing at ${billing.url}`);

    const placed = await http('POST', `${shop.url}/orders`, { orderId: 'o-1', customer: 'ada', amount: 30 });
    check(placed.status === 202, 'the shop accepted order o-1');
    const invoicing = await cli(dirs.shop, ['wait', 'order', 'o-1', '--state', 'awaitingPayment', '--timeout-ms', '30000', '--json']);
    check(
      invoicing.code === 0 && (JSON.parse(invoicing.stdout) as { context: { invoiceId?: string } }).context.invoiceId === 'inv-o-1',
      'billing opened invoice inv-o-1 for the order',
    );
    const opened = await http('GET', `${billing.url}/invoices/inv-o-1`);
    check(opened.status === 200 && (opened.json as { value: string }).value === 'open', 'billing serves the open invoice');

    const paid = await http('POST', `${billing.url}/invoices/inv-o-1/pay`, { amount: 30 });
    check(paid.status === 202, 'billing accepted a payment of 30');
    const orderPaid = await cli(dirs.shop, ['wait', 'order', 'o-1', '--state', 'paid', '--timeout-ms', '30000']);
    check(orderPaid.code === 0, 'the invoice told the order it is paid (sendToInstance, billing to shop)');

    const shipped = await http('POST', `${shop.url}/orders/o-1/ship`, { carrier: 'dhl', trackingId: 'JD0142' });
    check(shipped.status === 202, 'the shop shipped the order');
    const closed = await cli(dirs.billing, ['wait', 'invoice', 'inv-o-1', '--state', 'closed', '--timeout-ms', '30000']);
    check(closed.code === 0, 'the order told the invoice it shipped (sendToInstance, shop to billing)');

    const inv = await cli(dirs.billing, ['get', 'invoice', 'inv-o-1', '--json']);
    const invoice = JSON.parse(inv.stdout) as { status: string; context: { paid: number; carrier?: string }; output: { paid: number } };
    check(invoice.status === 'done' && invoice.context.paid === 30 && invoice.context.carrier === 'dhl', 'invoice inv-o-1 was paid in full (30) and closed');
    const ord = await cli(dirs.shop, ['get', 'order', 'o-1', '--json']);
    const orderState = JSON.parse(ord.stdout) as { status: string; value: string; output: { paid: number } };
    check(orderState.status === 'done' && orderState.value === 'shipped' && orderState.output.paid === 30, 'order o-1 is shipped and done');
    const history = await cli(dirs.billing, ['history', 'invoice', 'inv-o-1']);
    check(/PAY/.test(history.stdout) && /ORDER_SHIPPED/.test(history.stdout), 'the invoice history has the payment and the shipping');
    const verify = await cli(dirs.billing, ['verify', 'invoice', 'inv-o-1']);
    check(verify.code === 0, 'replaying the invoice history reproduces it');
    const missing = await cli(dirs.billing, ['get', 'invoice', 'inv-nope', '--json']);
    check(missing.code === 1 && missing.stdout.trim() === 'null', 'get --json of a missing invoice prints null and exits 1');
    const notHere = await cli(dirs.shop, ['get', 'invoice', 'inv-o-1']);
    check(notHere.code === 2 && /no workflow named 'invoice'/.test(notHere.stderr), "the shop's CLI knows only the shop's workflows");
    log('all checks passed');
    return 0;
  } catch (e) {
    log(`FAILED: ${(e as Error).message}`);
    for (const [i, s] of services.entries()) log(`--- ${i === 0 ? 'shop' : 'billing'} output ---\n${s.output()}`);
    return 1;
  } finally {
    for (const s of services) await stopService(s);
    if (nats) {
      await nats.stop();
      await rm(nats.storeDir, { recursive: true, force: true });
    }
    if (keep) log(`kept ${work}`);
    else await rm(work, { recursive: true, force: true });
  }
}

process.exitCode = await main();
