/** NATS headers of jetstate's messages. */

/** A sender's token, verified by the engine. */
export const TOKEN_HEADER = 'Jetstate-Token';
/** Where the engine answers a start (`created`, `exists`, `conflict`, `rejected`), best effort. */
export const REPLY_HEADER = 'Jetstate-Reply';
/** An engine's signature over subject, message id, signing time and body. */
export const SIGNATURE_HEADER = 'Jetstate-Sig';
/** When the engine signed the event (ms since the epoch), covered by the signature. */
export const SIGNED_AT_HEADER = 'Jetstate-Signed-At';
/**
 * On a send between instances: the sending outbox entry's key (`<workflow>.<id>@<born>.<revision>.<index>`),
 * whose keyed message id the signature covers, so the target can tell a send it applied already.
 */
export const SEND_HEADER = 'Jetstate-Send';
/** JetStream's message id header (deduplication), covered by the signature. */
export const MSG_ID_HEADER = 'Nats-Msg-Id';
