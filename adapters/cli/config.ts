/**
 * Where the CLI's settings come from, so `-w` and `--server` are not needed on every call: a flag
 * wins, then the environment (NATS_URL, JETSTATE_WORKFLOWS, JETSTATE_NAMESPACE, JETSTATE_DOMAIN), then the config
 * file (`--config FILE`, else `jetstate.config.json` in the current folder), then the defaults.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { ErrorCode, JetstateError } from '../../engine/index.js';

export const CONFIG_FILE = 'jetstate.config.json';

/** What a config file may say; anything else in it is an error, so a typo does not go unnoticed. */
export const CliConfigSchema = z.strictObject({
  /** Module exporting the workflows, relative to the config file. */
  workflows: z.string().min(1).optional(),
  server: z.string().min(1).optional(),
  namespace: z.string().min(1).optional(),
  /** JetStream domain of the namespace (docs/EDGE.md). */
  domain: z.string().min(1).optional(),
});
export type CliConfig = z.infer<typeof CliConfigSchema>;

/** The settings a command runs with. */
export interface Settings {
  server?: string | undefined;
  namespace?: string | undefined;
  domain?: string | undefined;
  workflows?: string | undefined;
}

/** Reads the config file: the one named, else ./jetstate.config.json if there is one. Paths come back absolute. */
export function readConfig(named: string | undefined, cwd: string = process.cwd()): CliConfig & { file?: string } {
  const file = named ? resolve(cwd, named) : resolve(cwd, CONFIG_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (!named && (e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new JetstateError(ErrorCode.InvalidOptions, `cannot read the config file ${file}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new JetstateError(ErrorCode.InvalidOptions, `the config file ${file} is not valid JSON (${(e as Error).message})`);
  }
  const parsed = CliConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new JetstateError(
      ErrorCode.InvalidOptions,
      `the config file ${file} is not valid: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}; it may set "workflows", "server", "namespace" and "domain"`,
    );
  }
  const config = parsed.data;
  const workflows = config.workflows && !isAbsolute(config.workflows) ? resolve(dirname(file), config.workflows) : config.workflows;
  return { ...config, ...(workflows ? { workflows } : {}), file };
}

/** Flags, then environment, then config file. */
export function resolveSettings(
  flags: Settings & { config?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
): Settings {
  const config = readConfig(flags.config, cwd);
  const pick = (flag: string | undefined, envValue: string | undefined, fromFile: string | undefined): string | undefined =>
    flag || envValue || fromFile || undefined;
  return {
    server: pick(flags.server, env['NATS_URL'], config.server),
    namespace: pick(flags.namespace, env['JETSTATE_NAMESPACE'], config.namespace),
    domain: pick(flags.domain, env['JETSTATE_DOMAIN'], config.domain),
    workflows: pick(flags.workflows, env['JETSTATE_WORKFLOWS'], config.workflows),
  };
}
