import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CreateStateMachineCommand,
  GetActivityTaskCommand,
  ListStateMachinesCommand,
  SendTaskSuccessCommand,
  SFNClient,
  StartExecutionCommand,
} from '@aws-sdk/client-sfn';
import { fromTemporaryCredentials } from '@aws-sdk/credential-providers';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { startNats } from '../helpers.js';
import { waitForStatus } from '../sfn/sfn-local-helpers.js';

const cli = resolve(import.meta.dirname, '../../dist/adapters/cli/main.js');
const ROLE = 'arn:aws:iam::123456789012:role/local-dev';

/** Starts the built CLI and waits until it says how to reach it. */
async function startCli(args: string[], cwd: string): Promise<{ child: ChildProcess; out: () => string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [cli, 'sfn-local', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + 15_000;
  while (!/Press Ctrl-C/.test(out) && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return { child, out: () => out, exited };
}

describe('jetstate sfn-local (built CLI, as a subprocess)', () => {
  let dir: string;
  let nats: Awaited<ReturnType<typeof startNats>>;
  let nc: NatsConnection;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'jetstate-sfn-local-'));
    await writeFile(join(dir, 'hello.asl.json'), JSON.stringify({ StartAt: 'Hi', States: { Hi: { Type: 'Pass', Result: { hello: 'world' }, End: true } } }));
    await writeFile(
      join(dir, 'doubler.asl.json'),
      JSON.stringify({
        StartAt: 'Double',
        States: {
          Double: {
            Type: 'Task',
            Resource: 'arn:aws:states:::lambda:invoke',
            Parameters: { FunctionName: 'double', 'Payload.$': '$' },
            OutputPath: '$.Payload',
            End: true,
          },
        },
      }),
    );
    await writeFile(
      join(dir, 'packer.asl.json'),
      JSON.stringify({ StartAt: 'Pack', States: { Pack: { Type: 'Task', Resource: 'arn:aws:states:us-east-1:123456789012:activity:pack', End: true } } }),
    );
    await writeFile(join(dir, 'handlers.mjs'), 'export const taskHandlers = { double: async (p) => ({ n: p.n * 2 }) };\n');
    nats = await startNats();
    nc = await connect({ servers: nats.url });
  });
  after(async () => {
    await nc?.close();
    await nats?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves the definitions, activities and handlers it was given, publishes status events to NATS, and stops on SIGTERM', async () => {
    const events: Array<{ detail: { name: string; status: string } }> = [];
    const sub = nc.subscribe('sfn.test.events');
    void (async () => {
      for await (const m of sub) events.push(m.json());
    })();
    await nc.flush();
    const defs = join(dir);
    const { child, out, exited } = await startCli(
      [
        '--port',
        '0',
        '--definitions',
        defs,
        '--activity',
        'pack',
        '--handlers',
        join(dir, 'handlers.mjs'),
        '--role',
        ROLE,
        '--events-nats',
        nats.url,
        '--events-subject',
        'sfn.test.events',
      ],
      dir,
    );
    try {
      const text = out();
      assert.match(text, /sfn-local is listening on (http:\/\/127\.0\.0\.1:\d+)/, text);
      const endpoint = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(text)![1]!;
      const stsEndpoint = /STS on (http:\/\/127\.0\.0\.1:\d+)/.exec(text)![1]!;
      assert.match(text, /credentials: accessKeyId test, secretAccessKey test/);
      assert.match(text, /arn:aws:states:us-east-1:123456789012:stateMachine:hello/);
      assert.match(text, /arn:aws:states:us-east-1:123456789012:activity:pack/);
      assert.match(text, /aws stepfunctions --endpoint-url http:\/\/127\.0\.0\.1:\d+ --region us-east-1/);

      const sfn = new SFNClient({ endpoint, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
      try {
        const names = (await sfn.send(new ListStateMachinesCommand({}))).stateMachines!.map((m) => m.name);
        assert.deepEqual(names, ['doubler', 'hello', 'packer']);
        const hello = await sfn.send(new StartExecutionCommand({ stateMachineArn: 'arn:aws:states:us-east-1:123456789012:stateMachine:hello', name: 'h-1' }));
        assert.deepEqual(JSON.parse((await waitForStatus(sfn, hello.executionArn!)).output!), { hello: 'world' });
        const doubled = await sfn.send(
          new StartExecutionCommand({ stateMachineArn: 'arn:aws:states:us-east-1:123456789012:stateMachine:doubler', input: '{"n":21}' }),
        );
        assert.deepEqual(JSON.parse((await waitForStatus(sfn, doubled.executionArn!)).output!), { n: 42 });
        const packed = await sfn.send(
          new StartExecutionCommand({ stateMachineArn: 'arn:aws:states:us-east-1:123456789012:stateMachine:packer', input: '{"box":1}' }),
        );
        const task = await sfn.send(new GetActivityTaskCommand({ activityArn: 'arn:aws:states:us-east-1:123456789012:activity:pack' }));
        assert.equal(task.input, '{"box":1}');
        await sfn.send(new SendTaskSuccessCommand({ taskToken: task.taskToken, output: '"packed"' }));
        assert.equal((await waitForStatus(sfn, packed.executionArn!)).output, '"packed"');
      } finally {
        sfn.destroy();
      }

      // Through the loopback STS, with an assumed role.
      const assumed = new SFNClient({
        endpoint,
        region: 'us-east-1',
        credentials: fromTemporaryCredentials({
          masterCredentials: { accessKeyId: 'test', secretAccessKey: 'test' },
          params: { RoleArn: ROLE, RoleSessionName: 'cli-test' },
          clientConfig: { endpoint: stsEndpoint, region: 'us-east-1' },
        }),
      });
      try {
        await assumed.send(new CreateStateMachineCommand({ name: 'by-role', definition: '{"StartAt":"A","States":{"A":{"Type":"Succeed"}}}', roleArn: ROLE }));
      } finally {
        assumed.destroy();
      }

      await nc.flush();
      const deadline = Date.now() + 5_000;
      while (!events.some((e) => e.detail.name === 'h-1' && e.detail.status === 'SUCCEEDED') && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(
        events.filter((e) => e.detail.name === 'h-1').map((e) => e.detail.status),
        ['RUNNING', 'SUCCEEDED'],
      );

      child.kill('SIGTERM');
      assert.equal(await exited, 0, out());
      assert.match(out(), /stopped\n$/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      sub.unsubscribe();
    }
  });

  it('refuses a definition it cannot run, naming the file, and exits 2', async () => {
    const bad = await mkdtemp(join(tmpdir(), 'jetstate-sfn-local-bad-'));
    try {
      await writeFile(join(bad, 'fancy.asl.json'), JSON.stringify({ QueryLanguage: 'JSONata', StartAt: 'A', States: { A: { Type: 'Pass', End: true } } }));
      const { child, out, exited } = await startCli(['--port', '0', '--definitions', bad], bad);
      try {
        assert.equal(await exited, 2, out());
        assert.match(out(), /fancy\.asl\.json: InvalidDefinition: .*JSONata.*not supported by sfn-local/);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      const { exited: badFlag, out: badOut } = await startCli(['--port', 'eighty'], bad);
      assert.equal(await badFlag, 2);
      assert.match(badOut(), /port/);
    } finally {
      await rm(bad, { recursive: true, force: true });
    }
  });
});
