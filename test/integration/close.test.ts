// Closing when the server is gone: close() resolves and leaves nothing running, so a service that
// shuts down during a NATS outage still exits.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { nodeArgsFor } from '../helpers.js';

describe('closing after the server died', () => {
  it('an engine and a client close, and their process ends by itself', { timeout: 90_000 }, async () => {
    const child = spawn(process.execPath, nodeArgsFor(join(import.meta.dirname, '..', 'fixtures', 'close-after-server-loss.ts')), {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    // A bound on liveness, not a timing check: before the fix the process never ended.
    const code = await new Promise<number | string>((resolve) => {
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        resolve('still running 60 s after it was told to close');
      }, 60_000);
      child.once('exit', (c) => {
        clearTimeout(t);
        resolve(c ?? -1);
      });
    });
    assert.match(out, /CLOSED/, `close() resolved:\n${out}`);
    assert.equal(code, 0, `the process ended by itself:\n${out}`);
  });
});
