/** The JetStream domain option of the adapter's helpers (a leaf node's own JetStream, e.g. an edge site's). */
import { z } from 'zod';
import { ErrorCode, JetstateError } from '../../engine/internal.js';

export const JetStreamDomainSchema = z.string().regex(/^[A-Za-z0-9_-]+$/, 'domain: a JetStream domain name (A-Z a-z 0-9 _ -)');

/** JetStream options for a domain (none: the connection's own JetStream). */
export const inDomain = (domain: string | undefined): { domain?: string } => (domain ? { domain } : {});

/** Throws a clear error for a `domain` option that is not a JetStream domain name. */
export function checkDomain(where: string, domain: string | undefined): void {
  if (domain !== undefined && !JetStreamDomainSchema.safeParse(domain).success)
    throw new JetstateError(ErrorCode.InvalidOptions, `${where}: domain '${domain}' is not a JetStream domain name (A-Z a-z 0-9 _ -)`);
}
