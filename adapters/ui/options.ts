/** Options of `createUiServer`, validated once with zod. */
import type { NatsConnection } from '@nats-io/nats-core';
import { z } from 'zod';
import { ErrorCode, JetstateError, KeyRing, isWorkflowDefinition, type IdentityOptions, type Logger, type WorkflowDefinition } from '../../engine/index.js';

/** The port `jetstate ui` and `jetstate dev` use when none is given. */
export const DEFAULT_UI_PORT = 7480;

export interface UiServerOptions {
  /** NATS server URL(s); or give `connection`. */
  servers?: string | string[];
  /** A connection of yours (with whatever credentials it needs); left open on close. */
  connection?: NatsConnection;
  /** Namespace to show (default `jetstate`). */
  namespace?: string;
  /** JetStream domain that holds the namespace (see `jsDomain` of createClient, docs/EDGE.md). */
  jsDomain?: string;
  /** The workflows to draw and act on (the same module an engine runs). */
  workflows: WorkflowDefinition[];
  /** Verify tokens in the UI's own client too, so a refused send fails before it is published. */
  identity?: IdentityOptions;
  /**
   * The key ring. Used to seal secret fields of events the page sends and for `verify`; opened
   * values are shown only with `reveal`.
   */
  keyRing?: string | KeyRing;
  /** Show secret fields in clear (needs `keyRing`); otherwise they stay `[encrypted:<kid>]`. */
  reveal?: boolean;
  /** Port on 127.0.0.1 (default 7480; 0 picks a free one). */
  port?: number;
  /** Link of a trace, with `{traceId}` (and optionally `{spanId}`), e.g. `http://localhost:16686/trace/{traceId}`. */
  traceUrl?: string;
  /** How long a send from the page waits to see its event applied or refused (default 5 s). */
  sendWaitMs?: number;
  logger?: Logger;
}

const quiet: Logger = { debug: () => {}, info: () => {}, warn: (m) => console.error(`jetstate ${m}`), error: (m) => console.error(`jetstate ${m}`) };

export const UiServerOptionsSchema = z
  .object({
    servers: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    connection: z
      .custom<NatsConnection>((v) => typeof (v as { subscribe?: unknown } | null)?.subscribe === 'function', 'connection must be a NatsConnection')
      .optional(),
    namespace: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,128}$/, 'namespace: use 1-128 of A-Z a-z 0-9 _ -')
      .default('jetstate'),
    jsDomain: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/, 'jsDomain: a JetStream domain name (1-64 of A-Z a-z 0-9 _ -)')
      .optional(),
    workflows: z
      .array(z.custom<WorkflowDefinition>(isWorkflowDefinition, 'each workflow must come from defineWorkflow()'))
      .min(1, 'give the workflows to show, from defineWorkflow()'),
    identity: z.custom<IdentityOptions>((v) => typeof v === 'object' && v !== null).optional(),
    keyRing: z
      .union([z.string().min(1), z.custom<KeyRing>((v) => v instanceof KeyRing, 'keyRing must come from createKeyRing() or be an id:base64 list')])
      .optional(),
    reveal: z.boolean().default(false),
    port: z.number().int().min(0).max(65_535).default(DEFAULT_UI_PORT),
    traceUrl: z
      .string()
      .refine(
        (t) => /^https?:\/\//.test(t) && t.includes('{traceId}'),
        "traceUrl must be an http(s) URL containing '{traceId}', e.g. 'http://localhost:16686/trace/{traceId}'",
      )
      .optional(),
    sendWaitMs: z.number().int().min(0).max(60_000).default(5_000),
    logger: z.custom<Logger>((v) => typeof (v as Logger | null)?.warn === 'function').default(quiet),
  })
  .strict()
  .refine((o) => o.servers !== undefined || o.connection !== undefined, { message: "give 'servers' (e.g. 'nats://127.0.0.1:4222') or a 'connection'" })
  .refine((o) => !o.reveal || o.keyRing !== undefined, { message: 'reveal needs the key ring (keyRing, or JETSTATE_KEYS for the CLI)' });

export type ResolvedUiServerOptions = z.output<typeof UiServerOptionsSchema>;

export function parseUiOptions(options: UiServerOptions): ResolvedUiServerOptions {
  const r = UiServerOptionsSchema.safeParse(options ?? {});
  if (!r.success) throw new JetstateError(ErrorCode.InvalidOptions, `createUiServer options are not valid:\n${z.prettifyError(r.error)}`);
  return r.data;
}
