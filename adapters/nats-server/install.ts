/**
 * Finds a nats-server 2.10 or newer, or fetches one into a project's `.jetstate/nats` without
 * installing anything system-wide: the distribution's package, downloaded with `apt-get download`
 * and unpacked with `dpkg-deb -x`. When the system's own candidate is older than 2.10 (Debian 12
 * packages 2.9), the package comes from Debian 13 "trixie" through a private source list, so the
 * system's apt configuration and state are not touched. `jetstate nats install`, `jetstate dev`
 * and the repository's scripts/ensure-nats.sh all use this one implementation.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

/** The oldest nats-server jetstate runs on. */
export const MIN_NATS_VERSION = { major: 2, minor: 10 } as const;

/** The Debian suite fetched from when the system's own package is too old. */
export const DEFAULT_SUITE = 'trixie';

const DEBIAN_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
const DEBIAN_MIRROR = 'http://deb.debian.org/debian';

/** A failure to find or fetch a nats-server; the message says what to install instead. */
export class NatsInstallError extends Error {
  override name = 'NatsInstallError';
  readonly code = 'NATS_SERVER_UNAVAILABLE';
}

export interface FoundNatsServer {
  path: string;
  /** As the binary reports it, e.g. 'v2.10.27'. */
  version: string;
}

/** Where the project-local copy lives: `<project>/.jetstate/nats/usr/sbin/nats-server`. */
export function projectNatsPath(projectDir: string): string {
  return join(projectDir, '.jetstate', 'nats', 'usr', 'sbin', 'nats-server');
}

const atLeastMin = (major: number, minor: number): boolean =>
  major > MIN_NATS_VERSION.major || (major === MIN_NATS_VERSION.major && minor >= MIN_NATS_VERSION.minor);

/** The version a binary reports, if it runs and is 2.10 or newer. */
export function usableVersion(binary: string): string | undefined {
  const r = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  const m = r.status === 0 ? /v(\d+)\.(\d+)\.\d+\S*/.exec(r.stdout) : null;
  return m && atLeastMin(Number(m[1]), Number(m[2])) ? m[0] : undefined;
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/**
 * A usable nats-server: `$JETSTATE_NATS_SERVER`, then the project's `.jetstate/nats`, then any
 * `extraDirs` project copies, then one on PATH. Undefined when none is 2.10 or newer.
 */
export function findUsableNatsServer(projectDir: string, extra: string[] = []): FoundNatsServer | undefined {
  const candidates = [process.env['JETSTATE_NATS_SERVER'], projectNatsPath(projectDir), ...extra, onPath('nats-server')];
  for (const path of candidates) {
    if (!path || !existsSync(path)) continue;
    const version = usableVersion(path);
    if (version) return { path, version };
  }
  return undefined;
}

interface Run {
  code: number | null;
  stdout: string;
}

/** Runs a tool; its own output goes to `log` line by line (apt's progress), stdout is also returned. */
function run(cmd: string, args: string[], options: { cwd?: string; log: (line: string) => void; quiet?: boolean }): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(cmd, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let stdout = '';
    let partial = '';
    const relay = (d: Buffer): void => {
      partial += d.toString();
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      if (!options.quiet) for (const l of lines) if (l.trim()) options.log(`  ${l}`);
    };
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      relay(d);
    });
    child.stderr.on('data', relay);
    child.once('error', (e) => fail(new NatsInstallError(`cannot run ${cmd}: ${e.message}`)));
    child.once('close', (code) => done({ code, stdout }));
  });
}

/** What to do on a system where jetstate cannot fetch the package. */
const INSTALL_YOURSELF =
  'install nats-server 2.10 or newer yourself and put it on PATH or set JETSTATE_NATS_SERVER to it: a release binary from ' +
  'https://github.com/nats-io/nats-server/releases, `brew install nats-server` on macOS, or the `nats` Docker image (see docs/NATS.md)';

/** The system's own apt candidate of nats-server, e.g. '2.9.10-1+b3', or undefined. */
async function systemCandidate(log: (line: string) => void): Promise<string | undefined> {
  const r = await run('apt-cache', ['policy', 'nats-server'], { log, quiet: true });
  const m = /Candidate:\s*(\S+)/.exec(r.stdout);
  return m && m[1] !== '(none)' ? m[1] : undefined;
}

/** The Debian mirror the system already uses (so no new host is contacted), else deb.debian.org. */
function debianMirror(): string {
  const uris: string[] = [];
  try {
    for (const f of readdirSync('/etc/apt/sources.list.d').filter((n) => n.endsWith('.sources'))) {
      for (const m of readFileSync(join('/etc/apt/sources.list.d', f), 'utf8').matchAll(/^URIs:\s*(\S+)/gm)) uris.push(m[1]!);
    }
  } catch {
    // no deb822 sources
  }
  try {
    for (const m of readFileSync('/etc/apt/sources.list', 'utf8').matchAll(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)/gm)) uris.push(m[1]!);
  } catch {
    // no one-line sources
  }
  return uris.find((u) => /debian/.test(u) && !/security/.test(u)) ?? DEBIAN_MIRROR;
}

export interface FetchOptions {
  /** The project folder; the binary lands in `<projectDir>/.jetstate/nats`. */
  projectDir: string;
  /** Fetch from this Debian suite (e.g. 'sid') instead of the system's own package or trixie. */
  suite?: string | undefined;
  /** Progress, one line at a time (apt's output included). */
  log: (line: string) => void;
}

/**
 * Fetches the distribution's nats-server package into `<projectDir>/.jetstate/nats` and returns
 * the binary. Throws {@link NatsInstallError} with what to install on systems without apt.
 */
export async function fetchNatsServer(options: FetchOptions): Promise<FoundNatsServer> {
  const { projectDir, log } = options;
  if (process.platform !== 'linux' || !onPath('apt-get') || !onPath('dpkg-deb') || !onPath('apt-cache')) {
    throw new NatsInstallError(
      `no nats-server 2.10 or newer was found, and this system has no apt-get and dpkg-deb to fetch Debian's package; ${INSTALL_YOURSELF}`,
    );
  }
  const work = join(projectDir, '.jetstate', 'apt');
  const dest = join(projectDir, '.jetstate', 'nats');
  await rm(work, { recursive: true, force: true });
  await mkdir(join(work, 'lists', 'partial'), { recursive: true });
  await mkdir(join(work, 'archives', 'partial'), { recursive: true });
  try {
    // Cache and archives in the work folder, no lock on the system's apt state; root's downloads
    // stay root's (apt's sandbox user could not write into this folder).
    const apt = [
      '-o',
      `Dir::Cache=${work}`,
      '-o',
      `Dir::Cache::archives=${join(work, 'archives')}`,
      '-o',
      'Debug::NoLocking=1',
      '-o',
      'APT::Sandbox::User=root',
    ];
    const candidate = options.suite ? undefined : await systemCandidate(log);
    const m = candidate ? /^(?:\d+:)?(\d+)\.(\d+)/.exec(candidate) : null;
    if (m && atLeastMin(Number(m[1]), Number(m[2]))) {
      log(`fetching the system's nats-server ${candidate} package with apt-get download (nothing is installed)`);
      const r = await run('apt-get', [...apt, 'download', 'nats-server'], { cwd: work, log });
      if (r.code !== 0) throw new NatsInstallError(`apt-get download nats-server failed (exit ${r.code}); ${INSTALL_YOURSELF}`);
    } else {
      const suite = options.suite ?? DEFAULT_SUITE;
      if (!existsSync(DEBIAN_KEYRING)) {
        throw new NatsInstallError(
          `the system's nats-server package is ${candidate ? `${candidate}, older than 2.10` : 'not available'}, and fetching Debian's (${suite}) needs Debian's archive keyring ` +
            `at ${DEBIAN_KEYRING} (package debian-archive-keyring); install that, or ${INSTALL_YOURSELF}`,
        );
      }
      const mirror = debianMirror();
      const list = join(work, `${suite}.list`);
      await writeFile(list, `deb [signed-by=${DEBIAN_KEYRING}] ${mirror} ${suite} main\n`);
      log(
        `${candidate ? `the system's nats-server package is ${candidate}, older than 2.10; ` : ''}fetching Debian's (${suite}) from ${mirror} ` +
          `through a private source list into ${dest} (nothing is installed system-wide)`,
      );
      const own = [...apt, '-o', `Dir::State::Lists=${join(work, 'lists')}`, '-o', `Dir::Etc::sourcelist=${list}`, '-o', 'Dir::Etc::sourceparts=-'];
      const update = await run('apt-get', [...own, 'update'], { cwd: work, log });
      if (update.code !== 0)
        throw new NatsInstallError(
          `apt-get update of the private ${suite} source list failed (exit ${update.code}); check the network, or ${INSTALL_YOURSELF}`,
        );
      const r = await run('apt-get', [...own, 'download', 'nats-server'], { cwd: work, log });
      if (r.code !== 0) throw new NatsInstallError(`apt-get download nats-server from ${suite} failed (exit ${r.code}); ${INSTALL_YOURSELF}`);
    }
    const deb = (await readdir(work)).find((f) => /^nats-server_.*\.deb$/.test(f));
    if (!deb) throw new NatsInstallError(`apt-get download left no nats-server package in ${work}; ${INSTALL_YOURSELF}`);
    await rm(dest, { recursive: true, force: true });
    await mkdir(dest, { recursive: true });
    const x = await run('dpkg-deb', ['-x', join(work, deb), dest], { log });
    if (x.code !== 0) throw new NatsInstallError(`dpkg-deb -x ${deb} failed (exit ${x.code})`);
    const path = projectNatsPath(projectDir);
    const version = usableVersion(path);
    if (!version) throw new NatsInstallError(`the fetched ${deb} does not give a nats-server 2.10 or newer at ${path}; ${INSTALL_YOURSELF}`);
    log(`nats-server ${version} is at ${path}`);
    return { path, version };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
