// The layers, read from the import lines: the production Step Functions adapter never reaches the
// loopback emulators (adapters/local) or the packages only they need, and the testing entry
// exports what a user's tests start.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';

const root = resolve(import.meta.dirname, '../..');
const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+'([^']+)'|import\(\s*'([^']+)'\s*\)/g;

/**
 * Every module `entry` may load: project files, packages loaded with it (`packages`), and
 * packages loaded only on use by `import()` (`onUse`, e.g. the credential providers of roles).
 */
function importGraph(entry: string): { files: Set<string>; packages: Set<string>; onUse: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const onUse = new Set<string>();
  const visit = (file: string): void => {
    if (files.has(file)) return;
    files.add(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(IMPORT)) {
      const spec = m[1] ?? m[2]!;
      if (spec.startsWith('.')) visit(resolve(dirname(file), spec).replace(/\.js$/, '.ts'));
      else (m[1] ? packages : onUse).add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  };
  visit(resolve(root, entry));
  return { files, packages, onUse };
}

describe('layers', () => {
  it('jetstate/adapters/step-functions loads no emulator and none of their packages', () => {
    const { files, packages, onUse } = importGraph('adapters/step-functions/index.ts');
    const local = [...files].map((f) => relative(root, f)).filter((f) => f.startsWith('adapters/local/') || f.startsWith('adapters/testing/'));
    assert.deepEqual(local, [], 'the production adapter imports emulators');
    assert.equal(packages.has('aws-local-stepfunctions') || onUse.has('aws-local-stepfunctions'), false);
    // The engine's createAwsIamToken loads it when called; the adapter never does.
    assert.equal(packages.has('@smithy/signature-v4'), false);
    assert.ok(packages.has('@aws-sdk/client-sfn'), 'the walk follows the imports');
  });

  it('the emulators live under adapters/local and the testing entry exports them', () => {
    const { files, packages } = importGraph('adapters/testing/index.ts');
    const rel = [...files].map((f) => relative(root, f));
    assert.ok(rel.includes('adapters/local/step-functions/server.ts'));
    assert.ok(rel.includes('adapters/local/aws/sts.ts'));
    assert.ok(rel.includes('adapters/nats-server/launcher.ts'));
    assert.ok(packages.has('aws-local-stepfunctions'));
    assert.equal(
      rel.some((f) => f.startsWith('adapters/step-functions/')),
      false,
      'emulators do not depend on the production adapter',
    );
  });

  it('engine/ imports nothing from adapters/ or workflows/', () => {
    const { files } = importGraph('engine/internal.ts');
    const outside = [...files].map((f) => relative(root, f)).filter((f) => !f.startsWith('engine/'));
    assert.deepEqual(outside, []);
  });

  it('the testing entry starts what it exports', async () => {
    const testing = await import('../../adapters/testing/index.js');
    assert.equal(typeof testing.startLocalStepFunctions, 'function');
    assert.equal(typeof testing.startLocalSts, 'function');
    assert.equal(typeof testing.NatsServer.start, 'function');
    assert.equal(typeof testing.startCluster, 'function');
    const sts = await testing.startLocalSts();
    const sfn = await testing.startLocalStepFunctions({ sts });
    try {
      assert.match(sfn.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.match(sts.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
    } finally {
      await sfn.close();
      await sts.close();
    }
  });
});
