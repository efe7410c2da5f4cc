/**
 * `jetstate nats install`: makes sure this project has a nats-server 2.10 or newer, fetching
 * the distribution's package into ./.jetstate/nats when none is found. Progress goes to stderr;
 * the binary's path is the last line of stdout (or `{ path, version, fetched }` with --json).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, JetstateError } from '../../engine/index.js';
import { fetchNatsServer, findUsableNatsServer, projectNatsPath, type FoundNatsServer } from '../nats-server/install.js';

export interface NatsValues {
  suite?: string | undefined;
  json?: boolean | undefined;
}

const say = (line: string): void => void process.stderr.write(`${line}\n`);

/**
 * jetstate's own folder. In a clone of the repository it holds the copy that scripts/ensure-nats.sh
 * fetched, which `jetstate dev` run from another folder uses too; an installed package has none.
 */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

/**
 * A usable nats-server for this project, fetched when none is found (`why` says, to the user,
 * what needs it). `dev` also takes the copy in jetstate's own folder (a clone of the repository).
 */
export async function ensureNatsServer(
  why: string,
  options: { suite?: string | undefined; packageCopy?: boolean } = {},
): Promise<FoundNatsServer & { fetched: boolean }> {
  const { suite, packageCopy = false } = options;
  const found = suite ? undefined : findUsableNatsServer(process.cwd(), packageCopy ? [projectNatsPath(packageRoot())] : []);
  if (found) return { ...found, fetched: false };
  if (!suite) say(`jetstate: ${why}: no nats-server 2.10 or newer found ($JETSTATE_NATS_SERVER, ./.jetstate/nats, PATH); fetching one into ./.jetstate/nats`);
  return { ...(await fetchNatsServer({ projectDir: process.cwd(), suite, log: say })), fetched: true };
}

export async function runNats(args: string[], values: NatsValues): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'install' || rest.length > 0) {
    throw new JetstateError(
      ErrorCode.InvalidOptions,
      `usage: jetstate nats install [--suite SUITE]${sub && sub !== 'install' ? `; unknown subcommand '${sub}'` : ''}`,
    );
  }
  if (values.suite !== undefined && !/^[a-z][a-z0-9-]*$/.test(values.suite)) {
    throw new JetstateError(ErrorCode.InvalidOptions, `--suite must be a Debian suite name like trixie or sid, got '${values.suite}'`);
  }
  const server = await ensureNatsServer('nats install', { suite: values.suite });
  if (!server.fetched) say(`jetstate: nats-server ${server.version} is already there; nothing fetched`);
  process.stdout.write(values.json ? `${JSON.stringify(server)}\n` : `${server.path}\n`);
  return 0;
}
