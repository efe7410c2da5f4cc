/**
 * Installs Restate for the peer benchmark on first use: the server (its binary comes in a platform
 * package from the npm registry) and the TypeScript SDK, with `npm install --prefix` into a folder
 * under `.jetstate/bench-cache/` of the project. A later run finds it there and installs nothing.
 * Nothing is installed system-wide and the project's package.json is not touched.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The versions compared. The SDK is the newest line that the SDK's own compatibility table lists
 * for a 1.7 server and that runs on Node 20: from 1.15 on, its Node handler uses
 * `Promise.withResolvers` (Node 22+) and every invocation fails on Node 20.
 */
export const RESTATE_VERSIONS = { server: '1.7.12', sdk: '1.14.5' } as const;

/** Where the installed Restate lives. */
export interface RestateInstall {
  /** The restate-server binary. */
  serverBinary: string;
  /** The SDK's ESM entry point, for `import()` from the service process. */
  sdkEntry: string;
  /** Versions as the installed packages report them. */
  serverVersion: string;
  sdkVersion: string;
  /** True when this call ran `npm install`. */
  installed: boolean;
  /** The cache folder. */
  dir: string;
}

/** The project root (bench/peers/../..). */
export const projectRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

const platformPackage = (): string => {
  const arch = process.arch === 'x64' ? 'x64' : process.arch === 'arm64' ? 'arm64' : undefined;
  if ((process.platform !== 'linux' && process.platform !== 'darwin') || !arch) {
    throw new Error(`restate-server is published for linux and darwin on x64 and arm64 only, not ${process.platform} ${process.arch}`);
  }
  return `@restatedev/restate-server-${process.platform}-${arch}`;
};

function locate(dir: string): Omit<RestateInstall, 'installed' | 'dir'> | undefined {
  const modules = join(dir, 'node_modules');
  const serverBinary = join(modules, platformPackage(), 'bin', 'restate-server');
  const sdkPackage = join(modules, '@restatedev', 'restate-sdk', 'package.json');
  if (!existsSync(serverBinary) || !existsSync(sdkPackage)) return undefined;
  const version = spawnSync(serverBinary, ['--version'], { encoding: 'utf8' });
  const serverVersion = /restate-server (\S+)/.exec(version.stdout ?? '')?.[1];
  const sdkVersion = (JSON.parse(readFileSync(sdkPackage, 'utf8')) as { version: string }).version;
  if (version.status !== 0 || serverVersion !== RESTATE_VERSIONS.server || sdkVersion !== RESTATE_VERSIONS.sdk) return undefined;
  return { serverBinary, sdkEntry: join(modules, '@restatedev', 'restate-sdk', 'dist', 'index.js'), serverVersion, sdkVersion };
}

/**
 * Returns the cached install, or installs it (about 230 MB, mostly the server binary). The
 * install goes into a temporary sibling folder that is renamed into place once complete, so an
 * interrupted install is never mistaken for a finished one.
 */
export async function ensureRestate(log: (line: string) => void): Promise<RestateInstall> {
  const cache = join(projectRoot, '.jetstate', 'bench-cache');
  const dir = join(cache, `restate-${RESTATE_VERSIONS.server}-sdk-${RESTATE_VERSIONS.sdk}`);
  const found = locate(dir);
  if (found) return { ...found, installed: false, dir };
  await mkdir(cache, { recursive: true });
  const tmp = await mkdtemp(join(cache, 'installing-'));
  try {
    const args = [
      'install',
      '--prefix',
      tmp,
      '--no-audit',
      '--no-fund',
      '--no-save',
      // restate-server depends on an analytics package whose install script reports the download; run no scripts.
      '--ignore-scripts',
      `@restatedev/restate-server@${RESTATE_VERSIONS.server}`,
      `@restatedev/restate-sdk@${RESTATE_VERSIONS.sdk}`,
    ];
    log(`installing Restate into ${dir} (npm ${args.join(' ')}) ...`);
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn('npm', args, { cwd: tmp, stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, SCARF_ANALYTICS: 'false' } });
      child.once('error', reject);
      child.once('exit', resolve);
    });
    if (code !== 0) throw new Error(`npm install of Restate failed (exit ${code}); check that the npm registry is reachable, or remove ${tmp}`);
    if (!locate(tmp)) {
      throw new Error(
        `npm installed Restate into ${tmp} but no ${platformPackage()}/bin/restate-server ${RESTATE_VERSIONS.server} or SDK ${RESTATE_VERSIONS.sdk} is there`,
      );
    }
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  const done = locate(dir);
  if (!done) throw new Error(`Restate was installed but cannot be found in ${dir}`);
  return { ...done, installed: true, dir };
}
