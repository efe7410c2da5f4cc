// The two-services example, end to end (examples/two-services/run.ts): jetstate packed and
// installed from the tarball into two services of their own, built with tsc --strict, sharing one
// nats-server and one namespace; an order placed at the shop gets an invoice at billing, which is
// paid and closed. Needs the built dist/ and the npm registry (or its cache) for the services'
// dependencies.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';

const repo = resolve(import.meta.dirname, '../..');

describe('examples/two-services', () => {
  it('packs, installs, builds and runs both services, and the order and its invoice go end to end', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'examples/two-services/run.ts'], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    // Bounded: the runner stops its services and nats-server itself; this is the last resort.
    const timer = setTimeout(() => child.kill('SIGTERM'), 170_000);
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    clearTimeout(timer);
    assert.equal(code, 0, out);
    assert.match(out, /all checks passed/);
    assert.match(out, /ok: invoice inv-o-1 was paid in full \(30\) and closed/);
  });
});
