/**
 * A workflow's secret paths, published in the control bucket (`secrets.<workflow>`) by every
 * process that creates its events streams, before it creates them. An engine that sends to an
 * instance of a workflow it does not register (another service's) reads them before it seals the
 * event, so the receiving workflow's secret fields never travel in the clear. The list only grows:
 * a union, written with compare-and-set.
 */
import type { KV } from '@nats-io/kv';
import { z } from 'zod';
import { decodeJson, encodeJson } from '../protocol/json.js';
import type { Layout } from '../protocol/names.js';
import type { Registry } from '../step/registry.js';
import type { SecretCodec } from '../security/codec.js';
import type { Logger } from '../logger.js';
import { isCasConflict } from './nats-errors.js';

/** What of the runtime these need (runtime.ts calls in here). */
interface Host {
  control: KV;
  names: Layout;
  registry: Registry;
  security: { codec: SecretCodec };
  logger: Logger;
}

const PublishedSchema = z.object({ paths: z.array(z.string()) });

/** Attempts to merge this process's paths into the published ones while other processes write them too. */
const PUBLISH_ATTEMPTS = 20;

/** The published paths under `key` and the entry's revision (undefined: never written). */
async function readPublished(rt: Host, key: string): Promise<{ paths: string[]; revision: number | undefined }> {
  const entry = await rt.control.get(key);
  if (!entry) return { paths: [], revision: undefined };
  if (entry.operation !== 'PUT') return { paths: [], revision: entry.revision };
  let value: unknown;
  try {
    value = decodeJson(entry.value);
  } catch {
    value = undefined;
  }
  const parsed = PublishedSchema.safeParse(value);
  if (!parsed.success) rt.logger.warn(`control key '${key}' does not hold { paths: string[] }; it is read as empty and written again`);
  return { paths: parsed.success ? parsed.data.paths : [], revision: entry.revision };
}

/** Adds the secret paths this process registers for `workflow` to the published list (nothing written when it holds them all). */
export async function publishSecretPaths(rt: Host, workflow: string): Promise<void> {
  const own = rt.registry.secretPaths(workflow);
  if (own.length === 0) return;
  const key = rt.names.secretsKey(workflow);
  for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
    const stored = await readPublished(rt, key);
    const have = new Set(stored.paths);
    if (own.every((p) => have.has(p))) return;
    const value = encodeJson({ paths: [...new Set([...have, ...own])].sort() });
    try {
      if (stored.revision !== undefined) await rt.control.update(key, value, stored.revision);
      else await rt.control.create(key, value);
      return;
    } catch (e) {
      if (!isCasConflict(e)) throw e;
    }
  }
  throw new Error(`control key '${key}' could not be written (written by others ${PUBLISH_ATTEMPTS} times meanwhile)`);
}

/**
 * Before this process seals an event for an instance of a workflow it does not register: the
 * paths the namespace publishes for it (read each time: a version registered since may have added
 * some). Call it once the workflow's streams are known to exist, since they are created after.
 */
export async function learnSecretPaths(rt: Host, workflow: string): Promise<void> {
  const { paths } = await readPublished(rt, rt.names.secretsKey(workflow));
  if (paths.length > 0) rt.security.codec.learn(workflow, paths);
}
