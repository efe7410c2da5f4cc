/** The JetStream domain option of the adapter's helpers (a leaf node's own JetStream, e.g. an edge site's). */
import { z } from 'zod';

export const JetStreamDomainSchema = z.string().regex(/^[A-Za-z0-9_-]+$/, 'domain: a JetStream domain name (A-Z a-z 0-9 _ -)');

/** JetStream options for a domain (none: the connection's own JetStream). */
export const inDomain = (domain: string | undefined): { domain?: string } => (domain ? { domain } : {});
