#!/usr/bin/env node
/**
 * The `jetstate` command line. `jetstate dev` runs everything on one machine; the other
 * commands act on any NATS given by --server or NATS_URL.
 */
import { parseArgs } from 'node:util';
import { ErrorCode, JetstateError } from '../../engine/index.js';
import { runCommand, USAGE } from './commands.js';
import { startTelemetry } from './telemetry.js';

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'sfn-local') return (await import('./sfn-local.js')).sfnLocalMain(argv.slice(1));
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        server: { type: 'string', short: 's' },
        namespace: { type: 'string', short: 'n' },
        workflows: { type: 'string', short: 'w' },
        id: { type: 'string' },
        input: { type: 'string', short: 'i' },
        status: { type: 'string' },
        state: { type: 'string' },
        data: { type: 'string' },
        'idempotency-key': { type: 'string' },
        'timeout-ms': { type: 'string' },
        json: { type: 'boolean' },
        token: { type: 'string' },
        reveal: { type: 'boolean' },
        limit: { type: 'string' },
        port: { type: 'string' },
        'trace-url': { type: 'string' },
        'no-ui': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    process.stderr.write(`jetstate: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const [command, ...rest] = parsed.positionals;
  if (parsed.values.help || !command) {
    process.stdout.write(USAGE);
    return command || parsed.values.help ? 0 : 2;
  }
  const telemetry = await startTelemetry();
  try {
    return await runCommand(command, rest, parsed.values);
  } catch (e) {
    if (e instanceof JetstateError) {
      process.stderr.write(`jetstate: ${e.message}\n`);
      return e.code === ErrorCode.InvalidOptions ? 2 : 1;
    }
    process.stderr.write(`jetstate: ${(e as Error).message ?? String(e)}\n`);
    return 1;
  } finally {
    await telemetry?.shutdown();
  }
}

process.exitCode = await main(process.argv.slice(2));
