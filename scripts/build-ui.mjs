#!/usr/bin/env node
/**
 * Builds the web view's page into dist/adapters/ui/web: the browser code bundled by esbuild, the
 * HTML and CSS copied, and the ELK layout worker copied as its own file (loaded only when a
 * statechart is drawn). Run by `npm run build`; the library's runtime install needs none of it.
 */
import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'adapters/ui/web');
const out = join(root, 'dist/adapters/ui/web');
await mkdir(out, { recursive: true });
await build({
  entryPoints: [join(src, 'main.ts')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  target: ['es2022'],
  minify: true,
  sourcemap: false,
  legalComments: 'linked',
  logLevel: 'warning',
});
await copyFile(join(src, 'index.html'), join(out, 'index.html'));
await copyFile(join(src, 'style.css'), join(out, 'app.css'));
await copyFile(join(root, 'node_modules/elkjs/lib/elk-worker.min.js'), join(out, 'elk-worker.min.js'));
