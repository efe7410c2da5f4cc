/**
 * JetStream publishes on the engine's hot path (every record write), answered on one
 * subscription under the connection's inbox prefix.
 *
 * nats.js's `js.publish()` is a request: per call it builds a headers object, a reply token, a
 * deferred, a timer, and an Error that is thrown away when the answer arrives (`RequestOne`
 * rejects its settled promise with a new `RequestError('cancelled')`). At thousands of writes a
 * second that was a tenth of the engine's CPU. Here a publish is one `nc.publish()` with a reply
 * subject, a map entry, and one shared timer that expires what was not answered in time. Errors
 * are the ones nats.js gives for the same outcomes (`JetStreamApiError` and its codes, a
 * `TimeoutError`, "jetstream is not enabled" when nobody answered, the permission violation), so
 * callers decide on them as before.
 */
import { JetStreamApiError, type PubAck } from '@nats-io/jetstream';
import { createInbox, errors as coreErrors, headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from '@nats-io/nats-core';

export interface AckPublishOptions {
  /** `Nats-Msg-Id`: deduplicated by the stream within its duplicate window. */
  msgID?: string;
  /** `Nats-Expected-Last-Subject-Sequence`: compare-and-set on the subject (a KV update). */
  expectLastSubjectSequence?: number;
  /** More headers; the two above are set on these. */
  headers?: MsgHdrs;
  timeoutMs?: number;
}

interface Pending {
  subject: string;
  deadline: number;
  resolve(ack: PubAck): void;
  reject(e: Error): void;
}

const SWEEP_MS = 100;
const decoder = new TextDecoder();

export class AckPublisher {
  private readonly prefix: string;
  private readonly pending = new Map<number, Pending>();
  private readonly sub: Subscription;
  private next = 1;
  private sweeper: NodeJS.Timeout | undefined;
  private closedError: Error | undefined;

  constructor(
    private readonly nc: NatsConnection,
    inboxPrefix: string | undefined,
    private readonly defaultTimeoutMs: number,
  ) {
    this.prefix = `${createInbox(inboxPrefix)}.`;
    this.sub = nc.subscribe(`${this.prefix}*`, { callback: (err, m) => (err ? this.failAll(err) : this.answer(m)) });
    void this.sub.closed.then(() => this.failAll(new coreErrors.ClosedConnectionError()));
    void this.watchPermissions();
  }

  /** Publishes and resolves with the stream's acknowledgement. */
  publish(subject: string, data: Uint8Array, o: AckPublishOptions = {}): Promise<PubAck> {
    if (this.closedError) return Promise.reject(this.closedError);
    let h = o.headers;
    if (o.msgID !== undefined || o.expectLastSubjectSequence !== undefined) {
      h ??= natsHeaders();
      if (o.msgID !== undefined) h.set('Nats-Msg-Id', o.msgID);
      if (o.expectLastSubjectSequence !== undefined) h.set('Nats-Expected-Last-Subject-Sequence', String(o.expectLastSubjectSequence));
    }
    const id = this.next++;
    const answered = new Promise<PubAck>((resolve, reject) => {
      this.pending.set(id, { subject, deadline: Date.now() + (o.timeoutMs ?? this.defaultTimeoutMs), resolve, reject });
    });
    try {
      this.nc.publish(subject, data, h ? { reply: `${this.prefix}${id}`, headers: h } : { reply: `${this.prefix}${id}` });
    } catch (e) {
      this.settle(id)?.reject(e as Error);
      return answered;
    }
    this.sweeper ??= setInterval(() => this.sweep(), SWEEP_MS).unref();
    return answered;
  }

  /** Stops answering: what waits fails with a closed-connection error. */
  close(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.sub.unsubscribe();
    this.failAll(new coreErrors.ClosedConnectionError());
  }

  private answer(m: Msg): void {
    const p = this.settle(Number(m.subject.slice(this.prefix.length)));
    if (!p) return; // expired already
    if (m.data.length === 0 && m.headers?.code === 503) {
      // As nats.js reports a publish nobody answered (no stream takes the subject, or no JetStream).
      const e = new Error('jetstream is not enabled', { cause: new coreErrors.NoRespondersError(p.subject) });
      e.name = 'JetStreamNotEnabled';
      p.reject(e);
      return;
    }
    let v: PubAck & { error?: { code: number; err_code: number; description: string } };
    try {
      v = JSON.parse(decoder.decode(m.data)) as typeof v;
    } catch (e) {
      p.reject(new Error(`publish to '${p.subject}': unreadable acknowledgement (${(e as Error).message})`));
      return;
    }
    if (v.error) p.reject(new JetStreamApiError(v.error));
    else if (!v.stream) p.reject(new Error(`publish to '${p.subject}': invalid acknowledgement`));
    else p.resolve({ ...v, duplicate: v.duplicate ?? false });
  }

  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    return p;
  }

  /** Expires what waited too long; stops once nothing waits (not per answer: one publish at a time would set a timer each). */
  private sweep(): void {
    if (this.pending.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
      return;
    }
    const now = Date.now();
    for (const [id, p] of this.pending) {
      if (p.deadline <= now) {
        this.settle(id);
        p.reject(new coreErrors.TimeoutError());
      }
    }
  }

  private failAll(e: Error): void {
    this.closedError ??= e;
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(e);
  }

  /** A publish the server refused for permissions fails at once, as nats.js's requests do. */
  private async watchPermissions(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (this.closedError) return;
      const err = (s as { error?: unknown }).error;
      if (err instanceof coreErrors.PermissionViolationError && err.operation === 'publish') {
        for (const [id, p] of this.pending) {
          if (p.subject === err.subject) {
            this.settle(id);
            p.reject(err);
            break;
          }
        }
      }
    }
  }
}
