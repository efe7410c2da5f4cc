/**
 * For `jetstate sfn-local --handlers dist/workflows/hybrid-handlers.js`: the Lambda function of
 * workflows/hybrid.asl.json ('hybrid-settle'), a forwarder that stores each task token in the
 * JetStream stream HYBRID_TOKENS on the NATS at NATS_URL (default nats://127.0.0.1:4222). It
 * connects on its first call.
 */
import { taskTokenForwarder } from '../adapters/step-functions/callback.js';
import { HYBRID_TOKEN_STREAM, HYBRID_TOKEN_SUBJECT } from './hybrid-cloud.js';

const forwarder = taskTokenForwarder({
  servers: process.env['NATS_URL'] || 'nats://127.0.0.1:4222',
  subject: HYBRID_TOKEN_SUBJECT,
  stream: HYBRID_TOKEN_STREAM,
});

export const taskHandlers = { 'hybrid-settle': forwarder };

/** Called by sfn-local when it stops: the forwarder's NATS connection would keep the process alive. */
export async function close(): Promise<void> {
  await forwarder.close();
}
