// The engine's layers, from the import lines: each file imports only from its own layer or lower
// ones (type imports included), the engine's files form no import cycle, the engine imports
// nothing from adapters/ or workflows/, and adapters reach the engine only through its two
// barrels (engine/index.ts, the public API, and engine/internal.ts).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';

const root = resolve(import.meta.dirname, '..', '..');
const engineDir = join(root, 'engine');

/** Lowest first. A file's layer is its folder under engine/ (or its name, for files at the top). */
const LAYERS: string[][] = [
  ['errors.ts', 'logger.ts', 'clock.ts'],
  ['protocol'],
  ['telemetry'],
  ['security'],
  ['define'],
  ['step'],
  ['gate'],
  ['options.ts'],
  ['store'],
  ['effects'],
  ['worker'],
  ['client.ts', 'engine.ts'],
  ['index.ts', 'internal.ts'],
];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Relative imports of a file (`import ... from`, `export ... from`, `import()`), resolved to .ts paths. */
function importsOf(file: string): string[] {
  const src = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)['"](\.{1,2}\/[^'"]+)['"]/g))
    out.push(resolve(dirname(file), m[1]!.replace(/\.js$/, '.ts')));
  return out;
}

function layerOf(file: string): number {
  const rel = relative(engineDir, file);
  const head = rel.includes('/') ? rel.split('/')[0]! : rel;
  const i = LAYERS.findIndex((l) => l.includes(head));
  assert.notEqual(i, -1, `engine/${rel} is in no layer: add it to LAYERS in test/unit/layers.test.ts`);
  return i;
}

describe('layers', () => {
  const engine = files(engineDir);

  it('engine files import only their own layer or lower ones', () => {
    const problems: string[] = [];
    for (const f of engine) {
      for (const dep of importsOf(f)) {
        if (!dep.startsWith(engineDir)) {
          problems.push(`engine/${relative(engineDir, f)} imports ${relative(root, dep)}, outside engine/`);
          continue;
        }
        if (layerOf(dep) > layerOf(f))
          problems.push(
            `engine/${relative(engineDir, f)} (${LAYERS[layerOf(f)]!.join(',')}) imports engine/${relative(engineDir, dep)} (${LAYERS[layerOf(dep)]!.join(',')}), a higher layer`,
          );
      }
    }
    assert.deepEqual(problems, []);
  });

  it('engine files form no import cycle', () => {
    const graph = new Map(engine.map((f) => [f, importsOf(f).filter((d) => d.startsWith(engineDir))]));
    const state = new Map<string, 'open' | 'done'>();
    const cycles: string[] = [];
    const visit = (f: string, path: string[]): void => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        cycles.push([...path.slice(path.indexOf(f)), f].map((p) => relative(engineDir, p)).join(' -> '));
        return;
      }
      state.set(f, 'open');
      for (const d of graph.get(f) ?? []) visit(d, [...path, f]);
      state.set(f, 'done');
    };
    for (const f of engine) visit(f, []);
    assert.deepEqual(cycles, []);
  });

  it('adapters and workflows use the engine through its barrels only', () => {
    const problems: string[] = [];
    for (const dir of ['adapters', 'workflows']) {
      for (const f of files(join(root, dir))) {
        for (const dep of importsOf(f)) {
          if (!dep.startsWith(engineDir)) continue;
          const rel = relative(engineDir, dep);
          if (rel !== 'index.ts' && rel !== 'internal.ts') problems.push(`${relative(root, f)} imports engine/${rel}`);
        }
      }
    }
    assert.deepEqual(problems, []);
  });
});
