// The test files for `npm test`: every test/*/*.test.ts, the longest first, so that the last
// files to start (four run at once) are short ones and no long file runs on alone at the end.
// The order is from the per-file durations of a full run on 2 cores (a full run's TAP output); a file
// missing from the list runs after them, in name order.
//
// Each file is bundled first (esbuild, the TypeScript transform tsx itself uses), with its own
// sources and this repository's, its packages left as imports; the runner then loads one module
// per file instead of resolving and transforming every source file through tsx's loader hooks in
// each of the suite's processes. That took about 1.2 s of CPU per process, a third of the
// suite's CPU on 2 cores. `import.meta.url`, `dirname` and `filename` keep the value of the source
// file they are written in, so paths computed from them are the same. The runner does not load
// tsx: a TypeScript module a test loads at run time is one of test/, bundled too (`testModule`).
// Every other TypeScript file under test/ is bundled beside them (chunks shared), for the child
// processes the tests start (engine processes, workflow modules they load): test/helpers.ts
// `nodeArgsFor` runs those bundles when the test itself runs from one, tsx on the source otherwise.
// JETSTATE_TEST_BUNDLE=0 prints the source files instead (what a single file run by hand uses).
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const LONGEST_FIRST = [
  'test/examples/two-services.test.ts',
  'test/fidelity/fidelity.test.ts',
  'test/recovery/cluster-loss.test.ts',
  'test/cli/habits.test.ts',
  'test/integration/partition-reader.test.ts',
  'test/recovery/exactly-once.test.ts',
  'test/recovery/fresh-namespace.test.ts',
  'test/recovery/timer-takeover.test.ts',
  'test/recovery/order-and-crash.test.ts',
  'test/edge/step-functions.test.ts',
  'test/edge/permissions.test.ts',
  'test/cli/security-cli.test.ts',
  'test/security/event-layer-property.test.ts',
  'test/integration/cluster.test.ts',
  'test/recovery/open-during-election.test.ts',
  'test/sfn/activity-bridge.test.ts',
];

const repo = resolve(import.meta.dirname, '..');
const all = readdirSync(join(repo, 'test'), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .flatMap((d) =>
    readdirSync(join(repo, 'test', d.name))
      .filter((f) => f.endsWith('.test.ts'))
      .map((f) => `test/${d.name}/${f}`),
  )
  .sort();
const present = new Set(all);
const first = LONGEST_FIRST.filter((f) => present.has(f));
const files = [...first, ...all.filter((f) => !first.includes(f))];

if (process.env['JETSTATE_TEST_BUNDLE'] === '0') {
  process.stdout.write(files.join(' ') + '\n');
} else {
  const { build } = await import('esbuild');
  // A folder per run: a second `npm test` in the same checkout leaves the first one's bundles be.
  const root = join(repo, '.jetstate', 'test-bundles');
  const out = join(root, `${Date.now()}-${process.pid}`);
  for (const d of existsSync(root) ? readdirSync(root) : []) {
    const at = Number(d.split('-')[0]);
    if (!(at > Date.now() - 6 * 3_600_000)) rmSync(join(root, d), { recursive: true, force: true });
  }
  /** Every TypeScript module under test/ (recursively), relative to the repository. */
  const modules = (dir) =>
    readdirSync(join(repo, dir), { withFileTypes: true }).flatMap((d) =>
      d.isDirectory() ? modules(`${dir}/${d.name}`) : /\.ts$/.test(d.name) && !d.name.endsWith('.d.ts') ? [`${dir}/${d.name}`] : [],
    );
  /** `import.meta.url`, `.dirname` and `.filename` as in the source file, not the bundle. */
  const sourceMeta = {
    name: 'source-import-meta',
    setup(b) {
      b.onLoad({ filter: /\.[cm]?ts$/ }, (args) => {
        if (args.path.includes(`${join('node_modules', '')}`)) return undefined;
        const values = { url: pathToFileURL(args.path).href, dirname: dirname(args.path), filename: args.path };
        const contents = readFileSync(args.path, 'utf8').replace(/\bimport\.meta\.(url|dirname|filename)\b/g, (_, k) => JSON.stringify(values[k]));
        return { contents, loader: 'ts' };
      });
    },
  };
  await build({
    absWorkingDir: repo,
    entryPoints: [...new Set([...files, ...modules('test')])],
    outdir: out,
    outbase: repo,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    sourcemap: 'linked',
    plugins: [sourceMeta],
    logLevel: 'error',
  });
  process.stdout.write(files.map((f) => relative(repo, join(out, f.replace(/\.ts$/, '.mjs')))).join(' ') + '\n');
}
