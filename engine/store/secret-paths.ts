/**
 * A workflow's secret paths, published in the control bucket (`secrets.<workflow>`) by every
 * process that creates its events streams, before it creates them: the union of the versions
 * they register, written with compare-and-set; it only grows. Whoever seals an event or a record
 * for a workflow seals with that union as well as its own paths, so a field a newer version
 * declares secret is not stored in the clear by a process that has an older version, or none:
 * - an engine learns it when it registers the workflow, and follows it in its watch of the
 *   control bucket (a version published later is honoured within that watch's delay);
 * - an engine sending to a workflow it does not register (another service's) reads it before
 *   each event it seals, a client at most once a second (reads made at once for one workflow are
 *   shared, never one begun before the send was asked for).
 * An engine without a key ring does not learn them for the workflows it registers: it writes
 * them as its definitions say.
 */
import type { KV } from '@nats-io/kv';
import { z } from 'zod';
import { decodeJson, encodeJson } from '../protocol/json.js';
import type { Layout } from '../protocol/names.js';
import type { Registry } from '../step/registry.js';
import type { SecretCodec } from '../security/codec.js';
import type { Logger } from '../logger.js';
import { isCasConflict, permissionViolation } from './nats-errors.js';

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
  const paths = parsePublished(entry.value);
  if (!paths) rt.logger.warn(`control key '${key}' does not hold { paths: string[] }; it is read as empty and written again`);
  return { paths: paths ?? [], revision: entry.revision };
}

/** The paths a published value holds (undefined: not `{ paths: string[] }` JSON). */
function parsePublished(value: Uint8Array): string[] | undefined {
  let decoded: unknown;
  try {
    decoded = decodeJson(value);
  } catch {
    return undefined;
  }
  const parsed = PublishedSchema.safeParse(decoded);
  return parsed.success ? parsed.data.paths : undefined;
}

/** Adds the secret paths this process registers for `workflow` to the published list (nothing written when it holds them all). */
export async function publishSecretPaths(rt: Host, workflow: string): Promise<void> {
  const own = rt.registry.secretPaths(workflow);
  if (own.length === 0) return;
  const key = rt.names.secretsKey(workflow);
  for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
    const stored = await readPublished(rt, key);
    if (rt.security.codec.ring) rt.security.codec.learn(workflow, stored.paths);
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

/** The key prefix of published paths (`secrets.<workflow>`), for a watch of the control bucket. */
export const SECRETS_KEYS = 'secrets.>';

/** An entry of the control bucket's watch: published paths are learned (other keys are not looked at). */
export function learnPublishedEntry(rt: Host, key: string, operation: string, value: Uint8Array | undefined): void {
  if (!key.startsWith('secrets.') || operation !== 'PUT' || !value) return;
  const paths = parsePublished(value);
  if (paths) rt.security.codec.learn(key.slice('secrets.'.length), paths);
}

/** Per process and workflow: the read of its published paths under way, the one queued behind it, and when the last good one began. */
interface Slot {
  running?: Promise<void>;
  queued?: Promise<void>;
  okAtMs?: number;
  /** When a read was last refused (this user may not read the key): not asked again for a minute. */
  deniedAtMs?: number;
  warnedDenied?: boolean;
  warnedAtMs?: number;
}

/** How long a refused read of published paths is not asked again. */
const DENIED_AGAIN_MS = 60_000;
const slots = new WeakMap<Host, Map<string, Slot>>();

function slotOf(rt: Host, workflow: string): Slot {
  let byWorkflow = slots.get(rt);
  if (!byWorkflow) slots.set(rt, (byWorkflow = new Map()));
  let slot = byWorkflow.get(workflow);
  if (!slot) byWorkflow.set(workflow, (slot = {}));
  return slot;
}

/** How a sender reads published paths before it seals (see {@link learnSecretPaths}). */
export interface LearnOptions {
  /** A read begun this recently is good enough (0: one begun after this call). */
  maxAgeMs?: number;
  /**
   * A client with its own definition: not allowed to read the key, it seals with the paths it has
   * (warned once); a read that fails otherwise after one has succeeded, with what that one gave
   * (warned at most once a minute). Otherwise every failure is thrown.
   */
  lenient?: boolean;
}

/**
 * Before this process seals an event for an instance of `workflow`: learns the paths the
 * namespace publishes for it, from a read begun after this call, or within `maxAgeMs` before it
 * (a version registered just before may have added some). Reads asked for meanwhile share one. A
 * sender of another service's workflow must call it once the workflow's streams are known to
 * exist, since they are created after the paths are published.
 */
export async function learnSecretPaths(rt: Host, workflow: string, options: LearnOptions = {}): Promise<void> {
  const slot = slotOf(rt, workflow);
  const maxAgeMs = options.maxAgeMs ?? 0;
  const now = performance.now();
  if (maxAgeMs > 0 && slot.okAtMs !== undefined && now - slot.okAtMs < maxAgeMs) return;
  if (options.lenient && slot.deniedAtMs !== undefined && now - slot.deniedAtMs < DENIED_AGAIN_MS) return;
  try {
    await sharedRead(rt, workflow, slot);
  } catch (e) {
    if (!options.lenient) throw e;
    const message = (e as Error).message;
    if (permissionViolation(e)) {
      slot.deniedAtMs = performance.now();
      if (slot.warnedDenied) return;
      slot.warnedDenied = true;
      rt.logger.warn(
        `the secret paths the namespace publishes for workflow '${workflow}' cannot be read (${message}): its events are sealed with the paths of the definition given here only; ` +
          `allow this user direct gets of '${rt.names.secretsKey(workflow)}' in the control bucket (see docs/SECURITY.md)`,
      );
      return;
    }
    if (slot.okAtMs === undefined) throw e;
    // Sealed with what the last good read gave; read again in a while, not before every send.
    slot.okAtMs = performance.now();
    if (slot.warnedAtMs !== undefined && slot.okAtMs - slot.warnedAtMs < 60_000) return;
    slot.warnedAtMs = slot.okAtMs;
    rt.logger.warn(
      `the secret paths the namespace publishes for workflow '${workflow}' could not be read again (${message}): its events are sealed with those read before`,
    );
  }
}

/** A read of the published paths begun after this call: the one under way if none is, else the next one, shared. */
function sharedRead(rt: Host, workflow: string, slot: Slot): Promise<void> {
  if (!slot.running) {
    const startedAtMs = performance.now();
    const running: Promise<void> = readAndLearn(rt, workflow)
      .then(() => {
        slot.okAtMs = Math.max(slot.okAtMs ?? 0, startedAtMs);
      })
      .finally(() => {
        if (slot.running === running) slot.running = undefined;
      });
    return (slot.running = running);
  }
  // The read under way began before this call and may miss what was published just before it.
  return (slot.queued ??= slot.running
    .catch(() => {})
    .then(() => {
      slot.queued = undefined;
      return sharedRead(rt, workflow, slot);
    }));
}

async function readAndLearn(rt: Host, workflow: string): Promise<void> {
  const { paths } = await readPublished(rt, rt.names.secretsKey(workflow));
  if (paths.length > 0) rt.security.codec.learn(workflow, paths);
}
