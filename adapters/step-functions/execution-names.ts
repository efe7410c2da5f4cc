/**
 * The deterministic name and ARN of a delegated stage's execution. A retried attempt asks for the
 * same name, so Step Functions itself refuses a second execution; the name must therefore tell
 * apart everything that is not the same invocation: the namespace (several apps, or test runs,
 * on one AWS account), the workflow, the instance, the invocation and the revision that started it.
 */
import { createHash } from 'node:crypto';
import { taskRefKey, type TaskRef } from '../../engine/internal.js';

/** Step Functions' limit on execution names. */
const MAX_NAME_CHARS = 80;
const HASH_CHARS = 20;

export interface ExecutionNameOptions {
  /** The jetstate namespace of the instance. */
  namespace: string;
  /** Prefix of the name (the stage's `name` option); `js` by default. */
  prefix?: string | undefined;
}

/**
 * A deterministic execution name of at most 80 of Step Functions' allowed characters:
 * `<prefix>-<namespace>-<workflow>-<id>-<revision>-<hash>`. The readable middle is cut to fit and
 * its other characters become `_`; the hash (of namespace, workflow, id, invocation and revision)
 * keeps names apart whatever was cut.
 *
 * @example
 * ```ts
 * executionName({ workflow: 'order', id: 'o-17', invokeId: 'settle', token: 3 }, { namespace: 'shop' });
 * // 'js-shop-order-o-17-3-<20 hex digits>'
 * ```
 */
export function executionName(ref: TaskRef, options: ExecutionNameOptions): string {
  const prefix = options.prefix ?? 'js';
  const hash = createHash('sha256')
    .update(options.namespace)
    .update('\0')
    .update(taskRefKey(ref))
    .update('\0')
    .update(ref.invokeId)
    .digest('hex')
    .slice(0, HASH_CHARS);
  const readable = `${options.namespace}-${ref.workflow}-${ref.id}`.replace(/[^A-Za-z0-9_-]/g, '_');
  const room = MAX_NAME_CHARS - prefix.length - hash.length - String(ref.token).length - 3;
  return `${prefix}-${readable.slice(0, Math.max(0, room))}-${ref.token}-${hash}`;
}

/** The ARN an execution of `stateMachineArn` named `name` has (an alias or version qualifier is not part of it). */
export function executionArnOf(stateMachineArn: string, name: string): string {
  const [arn, partition, , region, account, , machine] = stateMachineArn.split(':');
  return `${arn}:${partition}:states:${region}:${account}:execution:${machine}:${name}`;
}
