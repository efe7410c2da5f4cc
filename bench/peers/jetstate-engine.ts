/**
 * The jetstate service of the peer benchmark, in its own process like the Restate service: an
 * engine with the two workflows on the nats-server named by argv[2]. Prints `ready` once the
 * engine runs; closes (drains) on SIGTERM or when its parent goes away. With a parent IPC channel,
 * `{ profile: file }` starts a CPU profile of this process and `{ profile: null }` writes it and
 * answers `{ profiled: file }`.
 */
import { writeFile, mkdir } from 'node:fs/promises';
import { Session } from 'node:inspector';
import { dirname } from 'node:path';
import { createEngine } from '../../engine/index.js';
import { PEERS_NAMESPACE, peerSteps, peerTally } from './jetstate-workflows.js';

async function main(): Promise<void> {
  const servers = process.argv[2];
  if (!servers) throw new Error('usage: jetstate-engine.ts <nats url>');
  const engine = await createEngine({
    servers,
    namespace: PEERS_NAMESPACE,
    workflows: [peerSteps, peerTally],
    name: 'peers-engine',
    ...(process.env.PEERS_SHARDS ? { recordShards: Number(process.env.PEERS_SHARDS) } : {}),
    ...(process.env.PEERS_PARTITIONS ? { partitions: Number(process.env.PEERS_PARTITIONS) } : {}),
  });
  let closing = false;
  const close = async (): Promise<void> => {
    if (closing) return;
    closing = true;
    await engine.close().catch(() => {});
    process.exit(0);
  };
  process.on('SIGTERM', () => void close());
  process.on('disconnect', () => void close());

  let session: Session | undefined;
  let file = '';
  const post = <T>(method: string, params?: object): Promise<T> =>
    new Promise((resolve, reject) => session!.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res as T))));
  process.on('message', (m: { profile?: string | null }) => {
    void (async () => {
      if (typeof m.profile === 'string') {
        file = m.profile;
        session = new Session();
        session.connect();
        await post('Profiler.enable');
        await post('Profiler.setSamplingInterval', { interval: 500 });
        await post('Profiler.start');
        process.send?.({ profiling: file });
      } else if (m.profile === null && session) {
        const { profile } = await post<{ profile: unknown }>('Profiler.stop');
        session.disconnect();
        session = undefined;
        await mkdir(dirname(file), { recursive: true });
        await writeFile(file, JSON.stringify(profile));
        process.send?.({ profiled: file });
      }
    })();
  });
  process.stdout.write('ready\n');
}

main().catch((e: unknown) => {
  console.error(`peers engine: ${(e as Error).stack ?? String(e)}`);
  process.exit(1);
});
