// What `npm pack` would publish: the license, what the README links, no source maps (they would
// point at sources that are not shipped), and dependencies that an embedding service really needs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';

const repo = resolve(import.meta.dirname, '../..');

interface PackEntry {
  files: Array<{ path: string }>;
}

describe('the package', () => {
  it('ships its license, what the README links, and no source maps', async () => {
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: repo, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const files = new Set((JSON.parse(r.stdout) as PackEntry[])[0]!.files.map((f) => f.path));
    for (const f of [
      'LICENSE',
      'README.md',
      'package.json',
      'dist/engine/index.js',
      'dist/engine/index.d.ts',
      'dist/adapters/cli/main.js',
      'dist/adapters/ui/web/app.js',
    ]) {
      assert.ok(files.has(f), `${f} is in the package`);
    }
    assert.deepEqual(
      [...files].filter((f) => f.endsWith('.map')),
      [],
      'no source maps',
    );
    const readme = await readFile(resolve(repo, 'README.md'), 'utf8');
    const links = [...readme.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((l) => !/^[a-z]+:/.test(l) && !l.startsWith('#'));
    assert.ok(links.length > 5, 'the README has relative links');
    for (const link of links) assert.ok(files.has(link.split('#')[0]!), `the README links ${link}, which the package must ship`);
    for (const f of files) {
      if (!f.endsWith('.js')) continue;
      assert.doesNotMatch(await readFile(resolve(repo, f), 'utf8'), /sourceMappingURL/, `${f} names no source map`);
    }
  });

  it('depends on what the library needs at run time; xstate and zod are peers, the OpenTelemetry SDK an optional one', async () => {
    const pkg = JSON.parse(await readFile(resolve(repo, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
      peerDependencies: Record<string, string>;
      peerDependenciesMeta: Record<string, { optional?: boolean }>;
    };
    assert.deepEqual(Object.keys(pkg.dependencies).sort(), [
      '@nats-io/jetstream',
      '@nats-io/kv',
      '@nats-io/nats-core',
      '@nats-io/transport-node',
      '@opentelemetry/api',
      'jose',
    ]);
    const nats = new Set(
      Object.entries(pkg.dependencies)
        .filter(([k]) => k.startsWith('@nats-io/'))
        .map(([, v]) => v),
    );
    assert.equal(nats.size, 1, 'the @nats-io packages are pinned to one version');
    for (const v of Object.values(pkg.dependencies)) assert.match(v, /^\d+\.\d+\.\d+$/, 'dependencies are pinned');
    assert.equal(pkg.peerDependencies['xstate'], '^5.25.0');
    assert.equal(pkg.peerDependencies['zod'], '^4.0.0');
    assert.ok(pkg.peerDependencies['@opentelemetry/sdk-node']);
    assert.equal(pkg.peerDependenciesMeta['@opentelemetry/sdk-node']?.optional, true);
    for (const peer of ['xstate', 'zod', '@opentelemetry/sdk-node'])
      assert.match(pkg.devDependencies[peer] ?? '', /^\d+\.\d+\.\d+$/, `${peer} is a pinned devDependency`);
  });
});
