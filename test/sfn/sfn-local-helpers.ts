/** Helpers for the sfn-local tests: a real SFNClient on the loopback endpoint, and waiting for a status. */
import { DescribeExecutionCommand, SFNClient, type DescribeExecutionCommandOutput } from '@aws-sdk/client-sfn';
import type { LocalStepFunctions } from '../../adapters/local/step-functions/server.js';
import { eventually } from '../helpers.js';

export const ROLE = 'arn:aws:iam::123456789012:role/sfn-local-test';
export const TEST_CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };

export function sfnClient(local: LocalStepFunctions, extra: { maxAttempts?: number; credentials?: unknown } = {}): SFNClient {
  return new SFNClient({
    endpoint: local.endpoint,
    region: local.region,
    credentials: (extra.credentials as never) ?? TEST_CREDENTIALS,
    ...(extra.maxAttempts ? { maxAttempts: extra.maxAttempts } : {}),
  });
}

/** Waits until the execution leaves RUNNING (or reaches `status`) and returns its description. */
export function waitForStatus(client: SFNClient, executionArn: string, status?: string, timeoutMs = 10_000): Promise<DescribeExecutionCommandOutput> {
  return eventually(async () => {
    const d = await client.send(new DescribeExecutionCommand({ executionArn }));
    if (status ? d.status !== status : d.status === 'RUNNING') throw new Error(`execution ${executionArn} is ${d.status}, waiting for ${status ?? 'an end'}`);
    return d;
  }, timeoutMs);
}

export const asl = (definition: object): string => JSON.stringify(definition);
