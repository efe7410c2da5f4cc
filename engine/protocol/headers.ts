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
/**
 * On a send from a parent to its child (`sendTo` a child): the parent's invoke id. The child takes
 * it only from its own parent (the send's sender), so a parent whose start of a child id another
 * parent's child holds was refused cannot reach that child before it hears so.
 */
export const TO_CHILD_HEADER = 'Jetstate-To-Child';
/** JetStream's message id header (deduplication), covered by the signature. */
export const MSG_ID_HEADER = 'Nats-Msg-Id';
/** A KV message's operation (`DEL`, `PURGE`; absent for a value), as the KV clients read it. */
export const KV_OPERATION_HEADER = 'KV-Operation';
