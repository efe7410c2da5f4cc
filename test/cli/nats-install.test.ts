// `jetstate nats install`: finds a usable nats-server without fetching, says what to install on a
// system without apt, and (opt-in, it downloads from Debian: JETSTATE_TEST_APT=1) fetches the
// distribution's package into ./.jetstate/nats of the current folder.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { findNatsServer } from '../../adapters/nats-server/launcher.js';
import { runCli } from '../helpers.js';

const errorOf = (stderr: string): { code: string; message: string } =>
  (JSON.parse(stderr.trim().split('\n').pop()!) as { error: { code: string; message: string } }).error;

describe('jetstate nats install', () => {
  let scratch: string;
  let emptyBin: string;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'jetstate-nats-install-'));
    emptyBin = join(scratch, 'bin');
    await mkdir(emptyBin);
  });
  after(async () => {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('uses a nats-server 2.10+ that is there and fetches nothing', async () => {
    const binary = findNatsServer();
    const env = { ...process.env, JETSTATE_NATS_SERVER: binary };
    const r = await runCli(['nats', 'install'], { cwd: scratch, env });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split('\n').pop(), binary, 'the path is the last line');
    assert.match(r.stderr, /nats-server v2\.\d+\.\d+ is already there; nothing fetched/);
    assert.ok(!existsSync(join(scratch, '.jetstate')), 'nothing written');
    const json = await runCli(['nats', 'install', '--json'], { cwd: scratch, env });
    const found = JSON.parse(json.stdout) as { path: string; version: string; fetched: boolean };
    assert.deepEqual({ path: found.path, fetched: found.fetched }, { path: binary, fetched: false });
    assert.match(found.version, /^v2\.\d+\.\d+/);
  });

  it('says what to install where it cannot fetch one (no apt-get)', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: emptyBin };
    delete env['JETSTATE_NATS_SERVER'];
    const r = await runCli(['nats', 'install', '--json'], { cwd: scratch, env });
    assert.equal(r.code, 1);
    const error = errorOf(r.stderr);
    assert.equal(error.code, 'NATS_SERVER_UNAVAILABLE');
    assert.match(
      error.message,
      /no apt-get and dpkg-deb to fetch Debian's package; install nats-server 2\.10 or newer yourself .*JETSTATE_NATS_SERVER.*releases/,
    );
    assert.ok(!existsSync(join(scratch, '.jetstate', 'nats')));
  });

  it('refuses what it does not understand', async () => {
    const sub = await runCli(['nats', 'uninstall']);
    assert.equal(sub.code, 2);
    assert.match(sub.stderr, /usage: jetstate nats install \[--suite SUITE\]; unknown subcommand 'uninstall'/);
    const suite = await runCli(['nats', 'install', '--suite', 'sid; rm -rf /']);
    assert.equal(suite.code, 2);
    assert.match(suite.stderr, /--suite must be a Debian suite name/);
  });

  it(
    'fetches the Debian package into ./.jetstate/nats (downloads; JETSTATE_TEST_APT=1)',
    { skip: process.env['JETSTATE_TEST_APT'] !== '1' && 'set JETSTATE_TEST_APT=1 to download from Debian' },
    async () => {
      const project = join(scratch, 'project');
      await mkdir(project);
      const env: NodeJS.ProcessEnv = { ...process.env };
      delete env['JETSTATE_NATS_SERVER'];
      const r = await runCli(['nats', 'install', '--suite', 'trixie', '--json'], { cwd: project, env });
      assert.equal(r.code, 0, r.stderr);
      const found = JSON.parse(r.stdout) as { path: string; version: string; fetched: boolean };
      assert.equal(found.path, join(project, '.jetstate/nats/usr/sbin/nats-server'));
      assert.equal(found.fetched, true);
      assert.match(r.stderr, /through a private source list/);
      assert.ok(!existsSync(join(project, '.jetstate/apt')), 'the work folder is removed');
    },
  );
});
