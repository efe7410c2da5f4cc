/**
 * Shared parts of the end-to-end security tests (engine-identity, engine-secrets): OIDC keys and
 * tokens from jose (as in identity.test.ts), and a look at the streams from the outside: the
 * events stream's last sequence, the dead-letter stream's messages, a raw publisher that bypasses
 * `send()`, and every envelope's key id in the stored instance records.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { jetstreamManager, jetstream, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { headers as natsHeaders, type NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { ErrorCode, JetstateError } from '../../engine/errors.js';
import { layout, partitionOf, type Layout } from '../../engine/protocol/names.js';

export interface Signer {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

/** A fresh signing key and its public JWK (what an issuer's JWKS serves). */
export async function oidcSigner(kid: string, alg = 'RS256'): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

export const nowSec = (): number => Math.floor(Date.now() / 1000);

/** A signed JWT with the usual claims (valid for ten minutes) overridden by `claims`. */
export function jwt(s: Signer, base: { iss: string; aud: string }, claims: JWTPayload = {}): Promise<string> {
  return new SignJWT({ ...base, sub: 'user-1', iat: nowSec(), exp: nowSec() + 600, ...claims })
    .setProtectedHeader({ alg: s.alg, kid: s.kid, typ: 'JWT' })
    .sign(s.privateKey);
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

/** An unsigned token (`alg: none`), the classic forgery. */
export function unsignedJwt(base: { iss: string; aud: string }, claims: JWTPayload = {}): string {
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...base, sub: 'user-1', iat: nowSec(), exp: nowSec() + 600, ...claims })}.`;
}

/** A real token whose payload was rewritten (say, roles added) while its signature was kept. */
export function tampered(token: string, change: (claims: Record<string, unknown>) => Record<string, unknown>): string {
  const [h, p, s] = token.split('.') as [string, string, string];
  return `${h}.${b64(change(JSON.parse(Buffer.from(p, 'base64url').toString('utf8'))))}.${s}`;
}

/** Asserts that `p` rejects with a JetstateError of `code` whose message starts with `[reason]`. */
export async function rejects(p: Promise<unknown>, code: ErrorCode, reason: string): Promise<JetstateError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof JetstateError, `expected a JetstateError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.ok(e.message.startsWith(`[${reason}]`), `expected '[${reason}] ...', got: ${e.message}`);
    return e;
  }
  assert.fail(`expected ${code} [${reason}], but it succeeded`);
}

export interface DeadLetter {
  seq: number;
  subject: string;
  reason: string;
  originalSubject: string;
  originalSeq: number;
  data: string;
}

/**
 * An outside view of a namespace, through its own connection: what a raw client could publish,
 * and what an operator can read.
 */
export class Outside {
  private constructor(
    readonly nc: NatsConnection,
    readonly jsm: JetStreamManager,
    readonly names: Layout,
  ) {}

  static async open(servers: string, namespace: string): Promise<Outside> {
    const nc = await connect({ servers });
    return new Outside(nc, await jetstreamManager(nc), layout(namespace));
  }

  subject(workflow: string, id: string, partitions = 16): string {
    return this.names.eventSubject(partitionOf(workflow, id, partitions), workflow, id);
  }

  /** Publishes straight to an instance's event subject, as a client that bypasses `send()` could. */
  async publishRaw(workflow: string, id: string, event: unknown, hdrs: Record<string, string> = {}): Promise<number> {
    const h = natsHeaders();
    for (const [k, v] of Object.entries(hdrs)) h.set(k, v);
    const ack = await jetstream(this.nc).publish(this.subject(workflow, id), JSON.stringify(event), { headers: h });
    return ack.seq;
  }

  /** The sum of the last sequences of every events stream of the namespace: moves when anything is stored. */
  async eventsLastSeq(): Promise<number> {
    let total = 0;
    for await (const si of this.jsm.streams.list()) if (si.config.name.startsWith(`${this.names.namespace}_evt_`)) total += si.state.last_seq;
    return total;
  }

  async deadLetters(): Promise<DeadLetter[]> {
    const stream = this.names.deadLetterStream;
    const { first_seq, last_seq, messages } = (await this.jsm.streams.info(stream)).state;
    const out: DeadLetter[] = [];
    if (messages === 0) return out;
    for (let seq = first_seq; seq <= last_seq; seq++) {
      const m = await this.jsm.streams.getMessage(stream, { seq }).catch(() => null);
      if (!m) continue;
      out.push({
        seq,
        subject: m.subject,
        reason: m.header.get('Jetstate-Reason'),
        originalSubject: m.header.get('Jetstate-Subject'),
        originalSeq: Number(m.header.get('Jetstate-Seq')),
        data: m.string(),
      });
    }
    return out;
  }

  /** The stored bytes of every instance record of the namespace, by key, as NATS holds them. */
  async storedRecords(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    // Every bucket the records are spread over.
    for await (const si of this.jsm.streams.list()) {
      if (!si.config.name.startsWith(`KV_${this.names.instancesBucket}`)) continue;
      const kv = await new Kvm(this.nc).open(si.config.name.slice('KV_'.length));
      for await (const key of await kv.keys()) {
        const e = await kv.get(key);
        if (e && e.operation === 'PUT') out.set(key, e.string());
      }
    }
    return out;
  }

  /** Every message of the history stream, parsed, in stream order. */
  async storedHistory(): Promise<unknown[]> {
    const stream = this.names.historyStream;
    const { first_seq, last_seq, messages } = (await this.jsm.streams.info(stream)).state;
    const out: unknown[] = [];
    if (messages === 0) return out;
    for (let seq = first_seq; seq <= last_seq; seq++) {
      const m = await this.jsm.streams.getMessage(stream, { seq }).catch(() => null);
      if (m) out.push(m.json());
    }
    return out;
  }

  async close(): Promise<void> {
    await this.nc.close();
  }
}

/** The key id of every secret envelope (`{ $enc, k, iv, ct }`) anywhere inside a JSON value. */
export function envelopeKeyIds(value: unknown): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (typeof v === 'object' && v !== null) {
      const o = v as Record<string, unknown>;
      if (o['$enc'] === 'v1' && typeof o['k'] === 'string') out.push(o['k']);
      else Object.values(o).forEach(walk);
    }
  };
  walk(value);
  return out;
}

/** Every regular file under `dir`, recursively. */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

/** For each marker, the files under `dir` whose bytes contain it (as UTF-8). */
export async function scanFor(dir: string, markers: readonly string[]): Promise<Map<string, string[]>> {
  const found = new Map<string, string[]>(markers.map((m) => [m, []]));
  const needles = markers.map((m) => [m, Buffer.from(m, 'utf8')] as const);
  for (const file of await filesUnder(dir)) {
    const bytes = await readFile(file);
    for (const [m, needle] of needles) if (bytes.includes(needle)) found.get(m)!.push(file);
  }
  return found;
}
