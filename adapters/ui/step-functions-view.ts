/**
 * The pending Step Functions executions of a namespace, from the `<ns>_sfn` bucket the Step
 * Functions extension keeps (adapters/step-functions/execution.ts), each with a link to the AWS
 * console. Read only, leniently, and without the AWS SDK, which the UI does not need.
 */
import type { JetStreamManager } from '@nats-io/jetstream';
import type { Kvm } from '@nats-io/kv';
import type { PendingExecution } from './protocol.js';

const MAX_SHOWN = 500;

/** The console page of an execution: `https://<region>.console.aws.amazon.com/states/home?region=<region>#/v2/executions/details/<arn>`. */
export function consoleUrlOf(executionArn: string, region: string): string {
  return `https://${region}.console.aws.amazon.com/states/home?region=${encodeURIComponent(region)}#/v2/executions/details/${encodeURIComponent(executionArn)}`;
}

/** The region an execution ARN names (`arn:aws:states:<region>:<account>:execution:...`). */
export const regionOfArn = (arn: string): string => arn.split(':')[3] || 'us-east-1';

/** Pending executions, oldest first; null when the namespace has no such bucket. */
export async function pendingExecutions(jsm: JetStreamManager, kvm: Kvm, namespace: string): Promise<PendingExecution[] | null> {
  const bucket = `${namespace}_sfn`;
  try {
    await jsm.streams.info(`KV_${bucket}`);
  } catch (e) {
    if (/not found/i.test((e as Error).message)) return null;
    throw e;
  }
  const kv = await kvm.open(bucket);
  const out: PendingExecution[] = [];
  for await (const key of await kv.keys()) {
    if (out.length >= MAX_SHOWN) break;
    const entry = await kv.get(key);
    if (!entry || entry.operation !== 'PUT') continue;
    let p: { ref?: { workflow?: string; id?: string; invokeId?: string }; executionArn?: string; target?: { region?: string }; startedAtMs?: number };
    try {
      p = JSON.parse(entry.string()) as typeof p;
    } catch {
      continue;
    }
    if (typeof p.executionArn !== 'string') continue;
    const region = p.target?.region || regionOfArn(p.executionArn);
    out.push({
      key,
      workflow: String(p.ref?.workflow ?? '?'),
      id: String(p.ref?.id ?? '?'),
      invokeId: String(p.ref?.invokeId ?? '?'),
      executionArn: p.executionArn,
      region,
      startedAtMs: typeof p.startedAtMs === 'number' ? p.startedAtMs : 0,
      consoleUrl: consoleUrlOf(p.executionArn, region),
    });
  }
  return out.sort((a, b) => a.startedAtMs - b.startedAtMs);
}

/** Reads the pending executions at most every `maxAgeMs`, however many instance pages ask. */
export function cachedPendingExecutions(jsm: JetStreamManager, kvm: Kvm, namespace: string, maxAgeMs = 3_000): () => Promise<PendingExecution[] | null> {
  let last: { atMs: number; value: Promise<PendingExecution[] | null> } | undefined;
  return () => {
    const now = Date.now();
    if (!last || now - last.atMs > maxAgeMs) {
      const value = pendingExecutions(jsm, kvm, namespace);
      last = { atMs: now, value };
      value.catch(() => (last = undefined));
    }
    return last.value;
  };
}
