// The CLI's --domain (and JETSTATE_DOMAIN): reads of an edge site from the hub; a namespace that
// is not in the domain named is an error that says so. Needs the built CLI (`npm run build`).
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { resolve } from 'node:path';
import { createEngine, type Engine } from '../../engine/index.js';
import { runCli, uniqueNamespace } from '../helpers.js';
import { site } from './site-workflow.js';
import { startTopology, type Topology } from './topology.js';

const workflows = resolve(import.meta.dirname, 'site-workflow.ts');

describe('jetstate --domain', () => {
  let topo: Topology | undefined;
  let engine: Engine | undefined;
  after(async () => {
    await engine?.close();
    await topo?.dispose();
  });

  it('reads an edge instance from the hub, and names the domain of a missing namespace', async () => {
    topo = await startTopology({ leafJetStream: true });
    const namespace = uniqueNamespace('clidomain');
    engine = await createEngine({ servers: topo.leaf.url, namespace, workflows: [site], leaseTtlMs: 1_000 });
    await engine.start(site, { id: 'c-1', input: { label: 'c' } });
    await engine.send(site, 'c-1', { type: 'ADD', k: 7 });
    await engine.waitFor(site, 'c-1', (s) => s.context.log.length === 1);

    const env = { ...process.env, NATS_URL: '' };
    const got = await runCli(
      ['get', 'site', 'c-1', '--server', topo.hub.url, '--namespace', namespace, '--domain', 'edge', '--workflows', workflows, '--json'],
      { env },
    );
    assert.equal(got.code, 0, got.stderr);
    assert.deepEqual(JSON.parse(got.stdout).context.log, [7]);
    const viaEnv = await runCli(['list', 'site', '--server', topo.hub.url, '--namespace', namespace, '--workflows', workflows, '--json'], {
      env: { ...env, JETSTATE_DOMAIN: 'edge' },
    });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.match(viaEnv.stdout, /c-1/);

    const missing = await runCli(
      ['get', 'site', 'c-1', '--server', topo.hub.url, '--namespace', `${namespace}x`, '--domain', 'edge', '--workflows', workflows, '--json'],
      { env },
    );
    assert.equal(missing.code, 1);
    const error = JSON.parse(missing.stderr).error as { code: string; message: string };
    assert.equal(error.code, 'NAMESPACE_NOT_FOUND');
    assert.match(error.message, /domain 'edge'/);
  });
});
