// The CLI's conventions, run as a subprocess: --version, help per command, --json errors (and
// null for a missing instance), settings from jetstate.config.json / --config / the environment,
// .ts workflow modules through tsx, and a silent OpenTelemetry collector that does not hold a
// command up.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createEngine, type Engine } from '../../engine/index.js';
import { order } from '../../workflows/order.js';
import { freePort } from '../../adapters/nats-server/launcher.js';
import { runCli, startNats, uniqueNamespace } from '../helpers.js';

const repo = resolve(import.meta.dirname, '../..');
/** The environment without anything that would choose settings for the CLI. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const k of [
    'NATS_URL',
    'JETSTATE_WORKFLOWS',
    'JETSTATE_NAMESPACE',
    'OTEL_EXPORTER_OTLP_ENDPOINT',
    'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
    'OTEL_TRACES_EXPORTER',
  ]) {
    if (!(k in extra)) delete env[k];
  }
  return env;
}
const errorOf = (stderr: string): { code: string; message: string } =>
  (JSON.parse(stderr.trim().split('\n').pop()!) as { error: { code: string; message: string } }).error;

describe('CLI habits', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let engine: Engine;
  let namespace: string;
  let common: string[];
  let scratch: string;
  before(async () => {
    nats = await startNats();
    namespace = uniqueNamespace('habits');
    engine = await createEngine({ servers: nats.url, namespace, workflows: [order] });
    common = ['--server', nats.url, '--namespace', namespace];
    await engine.start(order, { id: 'h-1', input: { orderId: 'h-1', customer: 'ada', amount: 5 } });
    scratch = await mkdtemp(join(tmpdir(), 'jetstate-habits-'));
  });
  after(async () => {
    await engine?.close();
    await nats?.dispose();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('prints its version', async () => {
    const pkg = JSON.parse(await readFile(join(repo, 'package.json'), 'utf8')) as { version: string };
    const r = await runCli(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), pkg.version);
  });

  it('has help for each command, and refuses options a command does not take', async () => {
    for (const command of ['dev', 'ui', 'start', 'send', 'get', 'list', 'history', 'verify', 'wait', 'reencrypt', 'deadletters', 'nats']) {
      const r = await runCli([command, '--help']);
      assert.equal(r.code, 0, `${command} --help: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^Usage: jetstate ${command} `), command);
      assert.match(r.stdout, /--help/);
    }
    assert.match((await runCli(['help', 'wait'])).stdout, /^Usage: jetstate wait <workflow> <id> --state S/);
    assert.match((await runCli(['sfn-local', '--help'])).stdout, /^Usage: jetstate sfn-local/);
    const overview = await runCli(['--help']);
    assert.equal(overview.code, 0);
    assert.match(overview.stdout, /Run 'jetstate <command> --help'/);
    const stray = await runCli(['get', 'order', 'h-1', '--limit', '3', ...common]);
    assert.equal(stray.code, 2);
    assert.match(stray.stderr, /--limit does not apply to 'get'; see jetstate get --help/);
    // A word too many would be dropped without a word: here an id meant for --id.
    const extra = await runCli(['start', 'order', 'h-9', '--input', '{"orderId":"h-9","customer":"ada","amount":5}', ...common]);
    assert.equal(extra.code, 2);
    assert.match(extra.stderr, /'start' takes <workflow> --input JSON \[--id ID\]; unexpected 'h-9'; see jetstate start --help/);
    assert.match((await runCli(['get', 'order', 'h-1', 'more', ...common])).stderr, /'get' takes <workflow> <id>; unexpected 'more'/);
    const twice = await runCli(['send', 'order', 'h-1', 'PAY', '{"amount":1}', '--data', '{"amount":2}', ...common]);
    assert.equal(twice.code, 2);
    assert.match(twice.stderr, /give the event payload once: as the JSON argument or as --data, not both/);
    // A missing argument is said before anything connects (here nothing answers at the address).
    const missing = await runCli(['get', 'order', '--server', 'nats://127.0.0.1:1']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /'get' takes <workflow> <id>; missing <id>; see jetstate get --help/);
    const unknownHelp = await runCli(['help', 'frobnicate']);
    assert.equal(unknownHelp.code, 2);
    assert.match(unknownHelp.stderr, /unknown command 'frobnicate'/);
    // Checked before dev starts anything (found after, it left the engine running).
    const badPort = await runCli(['dev', '--port', 'abc', ...common]);
    assert.equal(badPort.code, 2);
    assert.match(badPort.stderr, /--port must be a port number 0-65535/);
    assert.doesNotMatch(badPort.stdout, /engine .* is running/);
  });

  it('checks flag values and the event payload before anything connects, naming the flag', async () => {
    // Nothing answers at this address: each error must come before a connection is tried.
    const nowhere = ['--server', 'nats://127.0.0.1:1', '--namespace', namespace];
    const said = async (args: string[], message: RegExp): Promise<void> => {
      const r = await runCli([...args, ...nowhere]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
      assert.doesNotMatch(r.stderr, /connect/, args.join(' '));
    };
    await said(['deadletters', '--limit', 'abc'], /--limit 'abc' is not a whole number from 1 to 10000; e\.g\. --limit 50/);
    await said(['deadletters', '--limit', '0'], /--limit '0' is not a whole number from 1 to 10000/);
    await said(['wait', 'order', 'h-1', '--state', 'paid', '--timeout-ms=-5'], /--timeout-ms '-5' is not a whole number from 0 to/);
    await said(['wait', 'order', 'h-1', '--state', 'paid', '--timeout-ms', '2s'], /--timeout-ms '2s' is not a whole number/);
    // The payload's fields go beside the type: a list or a string would be spread into the event.
    await said(
      ['send', 'order', 'h-1', 'PAY', '[1,2]'],
      /the event payload must be a JSON object \(its fields go beside the type\), e\.g\. '\{"amount":10\}'; got \[1,2\]/,
    );
    await said(['send', 'order', 'h-1', 'PAY', '--data', '"abc"'], /the event payload must be a JSON object/);
    await said(
      ['send', 'order', 'h-1', 'PAY', '{"type":"CANCEL"}'],
      /the event payload says type 'CANCEL' and the command 'PAY': give the type once, as the argument/,
    );
    await said(['send', 'order', 'h-1', 'PAY', '{oops'], /the event payload is not valid JSON/);
    await said(['start', 'order', '--input', '{oops'], /--input is not valid JSON/);
  });

  it('with --json, prints errors as JSON on stderr, and null for a missing instance (exit 1)', async () => {
    const missing = await runCli(['get', 'order', 'nobody', '--json', ...common]);
    assert.equal(missing.code, 1);
    assert.equal(missing.stdout.trim(), 'null');
    assert.deepEqual(errorOf(missing.stderr), { code: 'INSTANCE_NOT_FOUND', message: 'order nobody does not exist' });

    const found = await runCli(['get', 'order', 'h-1', '--json', ...common]);
    assert.equal(found.code, 0, found.stderr);
    assert.equal((JSON.parse(found.stdout) as { id: string }).id, 'h-1');

    const badEvent = await runCli(['send', 'order', 'h-1', 'PAY', '{"amount":"lots"}', '--json', ...common]);
    assert.equal(badEvent.code, 1);
    assert.equal(errorOf(badEvent.stderr).code, 'INVALID_EVENT');
    const unknown = await runCli(['frobnicate', '--json']);
    assert.equal(unknown.code, 2);
    assert.equal(errorOf(unknown.stderr).code, 'INVALID_OPTIONS');
    const badFlag = await runCli(['get', '--frob', '--json']);
    assert.equal(badFlag.code, 2);
    assert.match(errorOf(badFlag.stderr).message, /--frob/);
    const noServer = await runCli(['get', 'order', 'x', '--json', '--server', 'nats://127.0.0.1:1']);
    assert.equal(noServer.code, 1);
    assert.equal(errorOf(noServer.stderr).code, 'CLOSED');
    // Without --json the same errors are plain words.
    assert.match((await runCli(['get', 'order', 'nobody', ...common])).stderr, /^jetstate: order nobody does not exist\n$/);
  });

  it('takes the workflows module, server and namespace from jetstate.config.json, --config and the environment', async () => {
    const project = join(scratch, 'project');
    await mkdir(project, { recursive: true });
    // A path relative to the config file's folder.
    const workflows = relative(project, join(repo, 'dist/workflows/order.js'));
    await writeFile(join(project, 'jetstate.config.json'), JSON.stringify({ workflows, server: nats.url, namespace }));
    const fromFile = await runCli(['get', 'order', 'h-1', '--json'], { cwd: project, env: cleanEnv() });
    assert.equal(fromFile.code, 0, fromFile.stderr);
    assert.equal((JSON.parse(fromFile.stdout) as { id: string }).id, 'h-1');

    // The environment wins over the file, and a flag over the environment.
    const approvalModule = join(repo, 'dist/workflows/approval.js');
    const fromEnv = await runCli(['get', 'order', 'h-1'], { cwd: project, env: cleanEnv({ JETSTATE_WORKFLOWS: approvalModule }) });
    assert.equal(fromEnv.code, 2);
    assert.match(fromEnv.stderr, /no workflow named 'order'; known: approval/);
    const fromFlag = await runCli(['get', 'order', 'h-1', '-w', join(repo, 'dist/workflows/order.js')], {
      cwd: project,
      env: cleanEnv({ JETSTATE_WORKFLOWS: approvalModule }),
    });
    assert.equal(fromFlag.code, 0, fromFlag.stderr);
    const otherNamespace = await runCli(['get', 'order', 'h-1'], { cwd: project, env: cleanEnv({ JETSTATE_NAMESPACE: uniqueNamespace('empty') }) });
    assert.equal(otherNamespace.code, 1, 'h-1 is not in another namespace');

    // --config names a file anywhere; a bad one is refused with its name and what it may say.
    const elsewhere = join(scratch, 'elsewhere');
    await mkdir(elsewhere, { recursive: true });
    const named = await runCli(['get', 'order', 'h-1', '--config', join(project, 'jetstate.config.json')], { cwd: elsewhere, env: cleanEnv() });
    assert.equal(named.code, 0, named.stderr);
    await writeFile(join(elsewhere, 'bad.json'), JSON.stringify({ workflow: 'typo.js' }));
    const bad = await runCli(['get', 'order', 'h-1', '--config', 'bad.json', '--json'], { cwd: elsewhere, env: cleanEnv() });
    assert.equal(bad.code, 2);
    assert.match(errorOf(bad.stderr).message, /bad\.json is not valid: .*"workflow".*it may set "workflows", "server", "namespace" and "domain"/);
    const absent = await runCli(['get', 'order', 'h-1', '--config', 'nope.json'], { cwd: elsewhere, env: cleanEnv() });
    assert.equal(absent.code, 2);
    assert.match(absent.stderr, /cannot read the config file .*nope\.json/);
  });

  it("loads a .ts workflows module through the project's tsx, and says what to do without one", async () => {
    // This repository has tsx: the module and what it imports load as TypeScript.
    const ts = await runCli(['get', 'order', 'h-1', '--json', '-w', join(repo, 'workflows/order.ts'), ...common], { cwd: repo, env: cleanEnv() });
    assert.equal(ts.code, 0, ts.stderr);
    assert.equal((JSON.parse(ts.stdout) as { value: string }).value, 'awaitingPayment');
    // A project without tsx.
    const bare = join(scratch, 'bare');
    await mkdir(bare, { recursive: true });
    await writeFile(join(bare, 'workflows.ts'), 'export const workflows: unknown[] = [];\n');
    const noTsx = await runCli(['get', 'order', 'h-1', '-w', 'workflows.ts', ...common], { cwd: bare, env: cleanEnv() });
    assert.equal(noTsx.code, 2);
    assert.match(
      noTsx.stderr,
      /workflows\.ts is TypeScript and tsx is not installed in this project to load it; build it to JavaScript \(tsc\) and pass the \.js file, or install tsx/,
    );
  });

  it('does not wait on an OpenTelemetry collector that is not there, and says so once', async () => {
    // Nothing listens on this port: connections are refused.
    const refused = `http://127.0.0.1:${await freePort()}`;
    const r1 = await runCli(['send', 'order', 'h-1', 'PAY', '{"amount":1}', ...common], { env: cleanEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: refused }) });
    assert.equal(r1.code, 0, r1.stderr);
    assert.match(r1.stdout, /accepted PAY/);
    assert.equal(r1.stderr.match(/did not answer/g)?.length, 1, r1.stderr);
    assert.match(r1.stderr, new RegExp(`OpenTelemetry collector at ${refused} did not answer`));

    // This one accepts connections and never answers.
    const sockets = new Set<Socket>();
    const silent: Server = createServer((s) => void sockets.add(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const endpoint = `http://127.0.0.1:${(silent.address() as { port: number }).port}`;
      const r2 = await runCli(['send', 'order', 'h-1', 'PAY', '{"amount":1}', ...common], { env: cleanEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint }) });
      assert.equal(r2.code, 0, r2.stderr);
      assert.equal(r2.stderr.match(/did not answer/g)?.length, 1, r2.stderr);
      assert.ok(sockets.size >= 1, 'the exporter tried the collector');
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});
