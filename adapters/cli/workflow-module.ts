/**
 * Loads the workflows a module exports, for the CLI: a built `.js` module, or a `.ts` one through
 * tsx when the project has it installed (Node 20 cannot import TypeScript by itself).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ErrorCode, isWorkflowDefinition, JetstateError, type WorkflowDefinition } from '../../engine/index.js';

const TYPESCRIPT = /\.(c|m)?tsx?$/;

let tsxRegistered = false;

/** The ESM entry of tsx's API in the installation that `from` resolves to, if any. */
function tsxApiFrom(from: string): string | undefined {
  try {
    const manifest = createRequire(from).resolve('tsx/package.json');
    const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { exports?: Record<string, { import?: { default?: string } } | string> };
    const entry = pkg.exports?.['./esm/api'];
    const file = typeof entry === 'object' ? entry.import?.default : undefined;
    return file ? pathToFileURL(join(dirname(manifest), file)).href : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Registers tsx's loader, found from the module's folder or the current one (the project's own
 * tsx, not one of jetstate's), so that the `.ts` module and what it imports load as TypeScript.
 */
async function registerTsx(modulePath: string): Promise<void> {
  if (tsxRegistered) return;
  const api = tsxApiFrom(modulePath) ?? tsxApiFrom(join(process.cwd(), 'package.json'));
  const { register } = api ? ((await import(api)) as { register?: () => unknown }) : {};
  if (typeof register !== 'function') {
    throw new JetstateError(
      ErrorCode.InvalidOptions,
      `${modulePath} is TypeScript and tsx is not installed in this project to load it; build it to JavaScript (tsc) and pass the .js file, or install tsx (npm install --save-dev tsx)`,
    );
  }
  register();
  tsxRegistered = true;
}

/**
 * Loads the workflows a module exports: a `workflows` array, or any exported definitions.
 * Without a path, the bundled examples.
 */
export async function loadWorkflows(path: string | undefined): Promise<WorkflowDefinition[]> {
  const file = path ? (isAbsolute(path) ? path : resolve(process.cwd(), path)) : undefined;
  const url = file ? pathToFileURL(file).href : new URL('../../workflows/index.js', import.meta.url).href;
  if (file && TYPESCRIPT.test(file)) await registerTsx(file);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof JetstateError) throw e;
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ERR_UNKNOWN_FILE_EXTENSION') {
      throw new JetstateError(
        ErrorCode.InvalidOptions,
        `cannot load workflows from ${path}: Node cannot import this kind of file; pass a .js module (build it first)`,
      );
    }
    throw new JetstateError(
      ErrorCode.InvalidOptions,
      `cannot load workflows from ${path ?? 'the bundled examples'}: ${err.message}; pass --workflows (or set JETSTATE_WORKFLOWS) with a module that exports them`,
    );
  }
  const found = new Set<WorkflowDefinition>();
  if (Array.isArray(mod['workflows'])) for (const w of mod['workflows']) if (isWorkflowDefinition(w)) found.add(w);
  for (const v of Object.values(mod)) if (isWorkflowDefinition(v)) found.add(v);
  if (found.size === 0) throw new JetstateError(ErrorCode.InvalidOptions, `${path} exports no workflows; export them made with defineWorkflow()`);
  return [...found];
}
