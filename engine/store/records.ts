/**
 * Instance records in KV with an in-memory cache of the record, its KV revision and the live
 * XState snapshot. Writes are compare-and-set on the KV revision; the revision `update()`
 * returns is kept, so the hot path does no `get` per event.
 */
import type { KV } from '@nats-io/kv';
import type { AnyMachineSnapshot } from 'xstate';
import { z } from 'zod';
import type { WorkflowDefinition } from '../define/definition.js';
import { InstanceRecordSchema, decodeJson, encodeJson, type InstanceRecord } from '../protocol/record.js';
import type { Registry } from './runtime.js';
import type { MachineRunner } from '../step/step.js';
import { JetstateError } from '../errors.js';
import type { SecretCodec } from '../security/codec.js';

export interface LoadedInstance {
  record: InstanceRecord;
  /** KV revision of the record, for compare-and-set. */
  kvRevision: number;
  snapshot: AnyMachineSnapshot;
  def: WorkflowDefinition;
  runner: MachineRunner;
}

/** Why an instance cannot be processed; it is reported and left untouched. */
export type LoadProblem = { problem: 'missing' } | { problem: 'unreadable' | 'unregistered'; message: string };

export class ConflictError extends Error {}

export class InstanceStore {
  private readonly cache = new Map<string, LoadedInstance>();

  constructor(
    private readonly kv: KV,
    private readonly registry: Registry,
    private readonly codec: SecretCodec,
    private readonly capacity = 50_000,
  ) {}

  /** The bytes a record is stored as: its secrets sealed. */
  encode(record: InstanceRecord): Uint8Array {
    return this.encodeSealed(record).bytes;
  }

  /** The stored bytes and the sealed record they encode (its `lastHistory` is ready to publish). */
  encodeSealed(record: InstanceRecord): { bytes: Uint8Array; sealed: InstanceRecord } {
    const sealed = this.codec.sealRecord(record);
    return { bytes: encodeJson(sealed), sealed };
  }

  async load(key: string): Promise<LoadedInstance | LoadProblem> {
    const hit = this.cache.get(key);
    if (hit) {
      // Refresh its place in the LRU order.
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    const entry = await this.kv.get(key);
    if (!entry || entry.operation !== 'PUT') return { problem: 'missing' };
    const where = `instance '${key}'`;
    let record: InstanceRecord;
    try {
      const parsed = InstanceRecordSchema.safeParse(decodeJson(entry.value));
      if (!parsed.success) return { problem: 'unreadable', message: `${where}: stored record does not match the record schema; left untouched:\n${z.prettifyError(parsed.error)}` };
      record = this.codec.openRecord(parsed.data);
    } catch (e) {
      if (e instanceof JetstateError) return { problem: 'unreadable', message: `${where}: its secrets cannot be decrypted (${e.message}); left untouched` };
      return { problem: 'unreadable', message: `${where}: stored record is not UTF-8 JSON (${(e as Error).message}); left untouched` };
    }
    const found = this.registry.find(record.workflow, record.version);
    if (!found) {
      return {
        problem: 'unregistered',
        message: `workflow '${record.workflow}' instance '${record.id}': stored version ${record.version} is not registered; register it or add a migration. Its events wait in the stream.`,
      };
    }
    let snapshot: AnyMachineSnapshot;
    try {
      snapshot = found.runner.restore(record.snapshot);
    } catch (e) {
      return { problem: 'unreadable', message: `${where}: the stored snapshot does not restore into version ${record.version} (${(e as Error).message}); left untouched` };
    }
    const loaded: LoadedInstance = { record, kvRevision: entry.revision, snapshot, def: found.def, runner: found.runner };
    this.remember(key, loaded);
    return loaded;
  }

  /** Compare-and-set; throws {@link ConflictError} when someone else wrote first. */
  async write(key: string, prev: LoadedInstance, record: InstanceRecord, snapshot: AnyMachineSnapshot, encoded: Uint8Array = this.encode(record)): Promise<LoadedInstance> {
    let revision: number;
    try {
      revision = await this.kv.update(key, encoded, prev.kvRevision);
    } catch (e) {
      this.cache.delete(key);
      if (/wrong last sequence/i.test((e as Error).message)) throw new ConflictError(key);
      throw e;
    }
    const next: LoadedInstance = { ...prev, record, snapshot, kvRevision: revision };
    this.remember(key, next);
    return next;
  }

  invalidate(key: string): void {
    this.cache.delete(key);
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
