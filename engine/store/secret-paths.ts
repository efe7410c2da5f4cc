/**
 * A workflow's secret paths, published in the namespace's control bucket (`secrets.<workflow>`)
 * by every process that creates its events streams, before it creates them. An engine that sends
 * to an instance of a workflow it does not register (another service's) reads them before it
 * seals the event, so the receiving workflow's secret fields never travel in the clear. The list
 * only grows: the union of every version ever registered.
 */
import { z } from 'zod';
import { NotYetError } from '../errors.js';
import { decodeJson, encodeJson } from '../protocol/json.js';
import type { KV } from '@nats-io/kv';
import type { Layout } from '../protocol/names.js';
import type { Registry } from '../step/registry.js';
import type { SecretCodec } from '../security/codec.js';
import { isCasConflict } from './nats-errors.js';

/** What of the runtime these need (runtime.ts calls in here). */
interface Host {
  control: KV;
  names: Layout;
  registry: Registry;
  security: { codec: SecretCodec };
}

const PublishedSchema = z.object({ paths: z.array(z.string()) });

/** Attempts to merge this process's paths into the published ones while other processes write them too. */
const PUBLISH_ATTEMPTS = 20;

function parsePaths(value: Uint8Array): string[] {
  const parsed = PublishedSchema.safeParse(decodeJson(value));
  return parsed.success ? parsed.data.paths : [];
}

/** Adds the secret paths this process registers for `workflow` to the published list (none: nothing written). */
export async function publishSecretPaths(rt: Host, workflow: string): Promise<void> {
  const own = rt.registry.secretPaths(workflow);
  if (own.length === 0) return;
  const key = rt.names.secretsKey(workflow);
  for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
    const entry = await rt.control.get(key);
    const stored = entry?.operation === 'PUT' ? parsePaths(entry.value) : [];
    const all = [...new Set([...stored, ...own])].sort();
    if (all.length === stored.length) return;
    try {
      if (entry) await rt.control.update(key, encodeJson({ paths: all }), entry.revision);
      else await rt.control.create(key, encodeJson({ paths: all }));
      return;
    } catch (e) {
      if (!isCasConflict(e)) throw e;
    }
  }
  throw new Error(`the secret paths of workflow '${workflow}' could not be published in '${key}' (written by others ${PUBLISH_ATTEMPTS} times meanwhile)`);
}

/**
 * Before this process seals an event for an instance of `workflow`: when it does not register that
 * workflow, it reads the paths the namespace publishes for it (each time: a version registered
 * since may have added some). Throws {@link NotYetError} when they ask for a key ring this process
 * was not given: the send waits, warned, until it has one.
 */
export async function learnSecretPaths(rt: Host, workflow: string): Promise<void> {
  if (rt.registry.versions(workflow).length > 0) return;
  const entry = await rt.control.get(rt.names.secretsKey(workflow));
  if (entry?.operation !== 'PUT') return;
  const { codec } = rt.security;
  codec.learn(workflow, parsePaths(entry.value));
  if (codec.has(workflow) && !codec.ring) {
    throw new NotYetError(
      `workflow '${workflow}' declares secrets (as its engines publish in '${rt.names.secretsKey(workflow)}'), so what is sent to it is encrypted; ` +
        `give this engine the namespace's key ring: secrets: { keyRing: process.env.JETSTATE_KEYS }`,
    );
  }
}
