/**
 * Instance records in KV: the single reader and writer. Every record read back is parsed with
 * zod and has its secrets opened (or, for a reader without the key ring, shown redacted); every
 * record written has them sealed; every write is compare-and-set. The engine's store also keeps
 * the live XState snapshot and the KV revision in an LRU cache, so the hot path does no `get`
 * per event.
 */
import type { KV } from '@nats-io/kv';
import type { AnyMachineSnapshot } from 'xstate';
import { z } from 'zod';
import type { WorkflowDefinition } from '../define/definition.js';
import { ConflictError, ErrorCode, JetstateError } from '../errors.js';
import { deleteNoteOf, parseStoredRecord, type DeleteNote, type InstanceRecord } from '../protocol/record.js';
import { decodeJson, encodeJson } from '../protocol/json.js';
import type { Registry } from '../step/registry.js';
import type { MachineRunner } from '../step/runner.js';
import type { SecretCodec } from '../security/codec.js';
import { redactEnvelopes } from '../security/redact.js';
import { isCasConflict } from './nats-errors.js';
import type { RecordBuckets } from './runtime.js';

export interface LoadedInstance {
  record: InstanceRecord;
  /** KV revision of the record, for compare-and-set. */
  kvRevision: number;
  snapshot: AnyMachineSnapshot;
  def: WorkflowDefinition;
  runner: MachineRunner;
}

/** A record's delete (or purge) marker: its revision (a new instance is created over it) and the engine's note, if it wrote one. */
export interface DeleteMarker {
  revision: number;
  note: DeleteNote | undefined;
}

/** Why an instance cannot be processed; it is reported and left untouched (a missing one may have been deleted: `marker`). */
export type LoadProblem = { problem: 'missing'; marker?: DeleteMarker } | { problem: 'unreadable' | 'unregistered'; message: string };

/**
 * Parses stored bytes into a record with its secrets opened (with the ring) or redacted (without):
 * the one place records are read. Throws `RECORD_UNREADABLE` naming the instance.
 */
export function parseRecord(codec: SecretCodec, key: string, bytes: Uint8Array, mode: 'open' | 'open-or-redact' = 'open'): InstanceRecord {
  const where = `instance '${key}'`;
  let raw: unknown;
  try {
    raw = decodeJson(bytes);
  } catch (e) {
    throw new JetstateError(ErrorCode.RecordUnreadable, `${where}: stored record is not UTF-8 JSON (${(e as Error).message}); it was left untouched`, {
      cause: e,
    });
  }
  const parsed = parseStoredRecord(raw);
  if (!parsed.success)
    throw new JetstateError(
      ErrorCode.RecordUnreadable,
      `${where}: stored record does not match the record schema; it was left untouched:\n${z.prettifyError(parsed.error)}`,
    );
  if (mode === 'open-or-redact' && !codec.ring) return redactEnvelopes(parsed.data) as InstanceRecord;
  try {
    return codec.openRecord(parsed.data);
  } catch (e) {
    throw new JetstateError(ErrorCode.RecordUnreadable, `${where}: its secrets cannot be decrypted (${(e as Error).message}); it was left untouched`, {
      cause: e,
    });
  }
}

/** The stored bytes of a record and the sealed record they encode (its `lastHistory` is ready to publish). */
export function encodeRecord(codec: SecretCodec, record: InstanceRecord): { bytes: Uint8Array; sealed: InstanceRecord } {
  const sealed = codec.sealRecord(record);
  return { bytes: encodeJson(sealed), sealed };
}

/** Reads one record: null when missing. */
export async function readRecord(
  kv: KV,
  codec: SecretCodec,
  key: string,
  mode: 'open' | 'open-or-redact' = 'open',
): Promise<{ record: InstanceRecord; kvRevision: number } | null> {
  const entry = await kv.get(key);
  if (!entry || entry.operation !== 'PUT') return null;
  return { record: parseRecord(codec, key, entry.value, mode), kvRevision: entry.revision };
}

export class InstanceStore {
  private readonly cache = new Map<string, LoadedInstance>();

  constructor(
    private readonly buckets: Pick<RecordBuckets, 'ofKey' | 'update' | 'create'>,
    private readonly registry: Registry,
    private readonly codec: SecretCodec,
    private readonly capacity = 50_000,
  ) {}

  encode(record: InstanceRecord): { bytes: Uint8Array; sealed: InstanceRecord } {
    return encodeRecord(this.codec, record);
  }

  async load(key: string): Promise<LoadedInstance | LoadProblem> {
    const hit = this.cache.get(key);
    if (hit) {
      // Refresh its place in the LRU order.
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    const entry = await this.buckets.ofKey(key).get(key);
    if (!entry) return { problem: 'missing' };
    if (entry.operation !== 'PUT') return { problem: 'missing', marker: { revision: entry.revision, note: deleteNoteOf(entry.value) } };
    let record: InstanceRecord;
    try {
      record = parseRecord(this.codec, key, entry.value);
    } catch (e) {
      return { problem: 'unreadable', message: (e as Error).message };
    }
    return this.prepare(key, record, entry.revision);
  }

  /** A record read elsewhere (or just written), with its machine. */
  private prepare(key: string, record: InstanceRecord, kvRevision: number): LoadedInstance | LoadProblem {
    const found = this.registry.find(record.workflow, record.version);
    if (!found) {
      return {
        problem: 'unregistered',
        message: `workflow '${record.workflow}' instance '${record.id}': stored version ${record.version} is not registered in this engine; register it (or add a migration), or run an engine that has it. Its events wait in the stream.`,
      };
    }
    let snapshot: AnyMachineSnapshot;
    try {
      snapshot = found.runner.restore(record.snapshot);
    } catch (e) {
      return {
        problem: 'unreadable',
        message: `instance '${key}': the stored snapshot does not restore into version ${record.version} (${(e as Error).message}); left untouched`,
      };
    }
    const loaded: LoadedInstance = { record, kvRevision, snapshot, def: found.def, runner: found.runner };
    this.remember(key, loaded);
    return loaded;
  }

  /** Compare-and-set; throws {@link ConflictError} when someone else wrote first. */
  async write(key: string, prev: LoadedInstance, record: InstanceRecord, snapshot: AnyMachineSnapshot, encoded: Uint8Array): Promise<LoadedInstance> {
    let revision: number;
    try {
      revision = await this.buckets.update(key, encoded, prev.kvRevision);
    } catch (e) {
      this.cache.delete(key);
      if (isCasConflict(e)) throw new ConflictError(key, { cause: e });
      throw e;
    }
    const next: LoadedInstance = { ...prev, record, snapshot, kvRevision: revision };
    this.remember(key, next);
    return next;
  }

  /** Creates a record that must not exist yet (over the delete marker at revision `over`); throws {@link ConflictError} when it does. */
  async create(
    key: string,
    def: WorkflowDefinition,
    runner: MachineRunner,
    record: InstanceRecord,
    snapshot: AnyMachineSnapshot,
    encoded: Uint8Array,
    over?: number,
  ): Promise<LoadedInstance> {
    let revision: number;
    try {
      revision = await this.buckets.create(key, encoded, over);
    } catch (e) {
      this.cache.delete(key);
      if (isCasConflict(e)) throw new ConflictError(key, { cause: e });
      throw e;
    }
    const next: LoadedInstance = { record, snapshot, kvRevision: revision, def, runner };
    this.remember(key, next);
    return next;
  }

  /** Whether the instance is cached (without touching its place in the LRU order). */
  has(key: string): boolean {
    return this.cache.has(key);
  }

  invalidate(key: string): void {
    this.cache.delete(key);
  }

  /** Forgets the cached instances `which` names (a partition this engine takes: others may have written them meanwhile). */
  invalidateWhere(which: (record: InstanceRecord) => boolean): void {
    for (const [key, loaded] of this.cache) if (which(loaded.record)) this.cache.delete(key);
  }

  private remember(key: string, value: LoadedInstance): void {
    this.cache.delete(key);
    this.cache.set(key, value);
    if (this.cache.size > this.capacity) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
  }
}
