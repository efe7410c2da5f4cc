/** ARNs and names exactly as Step Functions forms and checks them. */
import { sfnErrors } from './errors.js';

export interface Scope {
  region: string;
  account: string;
}

export const stateMachineArn = (s: Scope, name: string): string => `arn:aws:states:${s.region}:${s.account}:stateMachine:${name}`;
export const executionArn = (s: Scope, stateMachineName: string, name: string): string =>
  `arn:aws:states:${s.region}:${s.account}:execution:${stateMachineName}:${name}`;
export const activityArn = (s: Scope, name: string): string => `arn:aws:states:${s.region}:${s.account}:activity:${name}`;

/**
 * AWS's rule for names of state machines, executions and activities: 1-80 characters, none of
 * whitespace, brackets, wildcards, the listed specials, or control characters.
 */
const FORBIDDEN = /[\s<>{}[\]?*"#%\\^|~`$&,;:/\u0000-\u001f\u007f-\u009f]/u;

export function isValidName(name: string): boolean {
  return name.length >= 1 && name.length <= 80 && !FORBIDDEN.test(name);
}

/** Throws `InvalidName` unless `name` follows AWS's rule. */
export function checkName(name: string): string {
  if (!isValidName(name)) throw sfnErrors.invalidName(name);
  return name;
}

const ARN = /^arn:aws:states:([a-z0-9-]+):(\d{12}):(stateMachine|execution|activity):(.+)$/;

/** Splits a Step Functions ARN of the given kind; throws `InvalidArn` when it is not one. */
export function parseArn(arn: unknown, kind: 'stateMachine' | 'execution' | 'activity'): { region: string; account: string; resource: string } {
  const m = typeof arn === 'string' ? ARN.exec(arn) : null;
  if (!m || m[3] !== kind || m[4]!.length === 0) throw sfnErrors.invalidArn(String(arn), kind);
  return { region: m[1]!, account: m[2]!, resource: m[4]! };
}
