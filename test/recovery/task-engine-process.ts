/** An engine running the relay workflow in its own process; prints READY, closes on SIGTERM. */
import { writeSync } from 'node:fs';
import { createEngine } from '../../engine/index.js';
import { relay } from './task-workflow.js';

const engine = await createEngine({ servers: process.env['NATS_URL']!, namespace: process.env['JETSTATE_NAMESPACE']!, workflows: [relay], leaseTtlMs: 1_000 });
writeSync(1, `READY ${process.pid}\n`);
process.on('SIGTERM', () => void engine.close().then(() => process.exit(0)));
