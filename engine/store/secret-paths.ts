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

const ListSchema = z.object({ items: z.array(z.string()) });

/** Attempts to merge this process's items into the published ones while other processes write them too. */
const PUBLISH_ATTEMPTS = 20;

function parseList(rt: Host, key: string, value: Uint8Array): string[] {
  let v: unknown;
  try {
    v = decodeJson(value);
  } catch {
    v = undefined;
  }
  const parsed = ListSchema.safeParse(v);
  if (parsed.success) return parsed.data.items;
  rt.logger.warn(`control key '${key}' does not hold { items: string[] }; it is read as empty and written again`);
  return [];
}

async function readList(rt: Host, key: string): Promise<{ items: string[]; revision: number | undefined }> {
  const entry = await rt.control.get(key);
  if (!entry) return { items: [], revision: undefined };
  return { items: entry.operation === 'PUT' ? parseList(rt, key, entry.value) : [], revision: entry.revision };
}

/** Adds `own` to the list under `key` (nothing written when it holds them all already). */
async function addToList(rt: Host, key: string, own: readonly string[]): Promise<void> {
  if (own.length === 0) return;
  for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
    const stored = await readList(rt, key);
    const have = new Set(stored.items);
    if (own.every((i) => have.has(i))) return;
    const value = encodeJson({ items: [...new Set([...have, ...own])].sort() });
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

/** Adds the secret paths this process registers for `workflow` to the published list. */
export function publishSecretPaths(rt: Host, workflow: string): Promise<void> {
  return addToList(rt, rt.names.secretsKey(workflow), rt.registry.secretPaths(workflow));
}

/**
 * Before this process seals an event for an instance of a workflow it does not register: the
 * paths the namespace publishes for it (read each time: a version registered since may have added
 * some). Call it once the workflow's streams are known to exist, since they are created after.
 */
export async function learnSecretPaths(rt: Host, workflow: string): Promise<void> {
  if (rt.registry.versions(workflow).length > 0) return;
  const { items } = await readList(rt, rt.names.secretsKey(workflow));
  if (items.length > 0) rt.security.codec.learn(workflow, items);
}
