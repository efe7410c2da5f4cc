#!/usr/bin/env node
/**
 * The `jetstate` command line. `jetstate dev` runs everything on one machine; the other
 * commands act on any NATS given by --server, NATS_URL or the config file.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ErrorCode, JetstateError } from '../../engine/index.js';
import { runCommand, type CliValues } from './commands.js';
import { resolveSettings } from './config.js';
import { startTelemetry } from './telemetry.js';
import { COMMANDS, commandHelp, OPTIONS, overview, type OptionName } from './usage.js';

/** The version in jetstate's own package.json (found from this file, in the sources or in dist/). */
function version(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'jetstate' && pkg.version) return pkg.version;
    } catch {
      // no package.json here; look further up
    }
    if (dirname(dir) === dir) return 'unknown';
    dir = dirname(dir);
  }
}

/** Prints an error: plain words, or `{"error":{"code","message"}}` with --json; returns the exit code. */
function report(e: unknown, json: boolean): number {
  const err = e as { code?: unknown; message?: unknown };
  const code = typeof err?.code === 'string' ? err.code : 'ERROR';
  const message = typeof err?.message === 'string' ? err.message : String(e);
  process.stderr.write(json ? `${JSON.stringify({ error: { code, message } })}\n` : `jetstate: ${message}\n`);
  return code === ErrorCode.InvalidOptions ? 2 : 1;
}

const usageError = (message: string): JetstateError => new JetstateError(ErrorCode.InvalidOptions, message);

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'sfn-local') return (await import('./sfn-local.js')).sfnLocalMain(argv.slice(1));
  if (argv[0] === '--version' || argv[0] === '-V') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const json = argv.includes('--json');
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  } catch (e) {
    return report(usageError(`${(e as Error).message}; see jetstate --help`), json);
  }
  const [command, ...rest] = parsed.positionals;
  if (command === 'help') {
    if (rest[0] && !COMMANDS[rest[0]])
      return report(usageError(`unknown command '${rest[0]}'; commands: ${Object.keys(COMMANDS).join(', ')}; see jetstate --help`), json);
    process.stdout.write(rest[0] ? commandHelp(rest[0]) : overview());
    return 0;
  }
  if (!command) {
    if (parsed.values.help) {
      process.stdout.write(overview());
      return 0;
    }
    process.stderr.write(overview());
    return 2;
  }
  const spec = COMMANDS[command];
  if (!spec) return report(usageError(`unknown command '${command}'; commands: ${Object.keys(COMMANDS).join(', ')}; see jetstate --help`), json);
  if (parsed.values.help) {
    process.stdout.write(commandHelp(command));
    return 0;
  }
  const stray = (Object.keys(parsed.values) as OptionName[]).filter((o) => o !== 'help' && !spec.options.includes(o));
  if (stray.length > 0)
    return report(usageError(`${stray.map((o) => `--${o}`).join(', ')} does not apply to '${command}'; see jetstate ${command} --help`), json);

  // A word too many would be dropped without a word (a start's id given as a word is not --id); a
  // missing one is said before anything connects (with NATS down, that would be all one saw).
  const words = positionalsOf(spec.args);
  if (rest.length > words.all.length)
    return report(
      usageError(`'${command}' takes ${spec.args || 'no arguments'}; unexpected '${rest.slice(words.all.length).join(' ')}'; see jetstate ${command} --help`),
      json,
    );
  if (rest.length < words.required.length)
    return report(usageError(`'${command}' takes ${spec.args}; missing ${words.required.slice(rest.length).join(' ')}; see jetstate ${command} --help`), json);

  let values: CliValues;
  try {
    values = { ...parsed.values, ...(command === 'nats' ? {} : resolveSettings(parsed.values)) };
  } catch (e) {
    return report(e, json);
  }
  const telemetry = command === 'nats' ? undefined : await startTelemetry({ oneShot: !spec.longRunning });
  let code: number;
  try {
    code = await runCommand(command, rest, values);
  } catch (e) {
    code = report(e, json);
  }
  // An exporter still waiting on a silent collector would hold the process open: exit anyway.
  if ((await telemetry?.shutdown()) === 'late') process.exit(code);
  return code;
}

/** The words a command's usage takes (`<name>`, `[NAME]`, sub-command words; not options), and those it needs (`<name>`). */
function positionalsOf(args: string): { all: string[]; required: string[] } {
  const all = args.split(' ').filter((t) => /^<[^>]+>$/.test(t) || /^\[[^-][^\]]*\]$/.test(t) || /^[a-z][a-z-]*$/.test(t));
  return { all, required: all.filter((t) => t.startsWith('<')) };
}

process.exitCode = await main(process.argv.slice(2));
