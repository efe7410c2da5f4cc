// An event the engine does not apply leaves a trace: it is refused and copied to the dead-letter
// stream (`client.deadLetters()`) with the reason, and the instance it names is left untouched.
// Covered here: an event published on another partition's subject than its instance's, an event
// on a partition the namespace does not have, and a timer fire or a start's kick for an instance
// whose record is gone. Events are published raw, as a sender outside jetstate could.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { jetstream } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { createClient, createEngine, partitionOf, type Client, type DeadLetter, type Engine } from '../../engine/index.js';
import { eventually, startNats, uniqueNamespace } from '../helpers.js';
import { counter, type CounterContext } from '../recovery/counter-workflow.js';
import { alarm } from '../recovery/alarm-workflow.js';
import { eventSubject, instanceKey, instancesBucketOf } from '../recovery/streams.js';

const PARTITIONS = 4;
/** How long a refused event may take to reach the dead-letter stream (generous: a shared machine). */
const DEAD_LETTER_WITHIN_MS = 30_000;

const workflows = [counter, alarm];

describe('dead letters: refused events are kept with their reason', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let nc: NatsConnection;
  const opened: Array<{ close(): Promise<void> }> = [];

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
  });
  after(async () => {
    for (const c of opened.splice(0).reverse()) await c.close().catch(() => {});
    await nc?.close().catch(() => {});
    await nats?.dispose();
  });

  async function open(label: string, withEngine = true): Promise<{ namespace: string; client: Client; engine: Engine | undefined }> {
    const namespace = uniqueNamespace(label);
    const client = await createClient({ servers: nats.url, namespace, partitions: PARTITIONS, workflows });
    opened.push(client);
    const engine = withEngine ? await createEngine({ servers: nats.url, namespace, partitions: PARTITIONS, workflows, leaseTtlMs: 1_000 }) : undefined;
    if (engine) opened.push(engine);
    return { namespace, client, engine };
  }

  async function deadLettersOf(client: Client, workflow: string, id: string): Promise<DeadLetter[]> {
    return (await client.deadLetters({ limit: 1_000 })).filter((d) => d.workflow === workflow && d.id === id);
  }

  it("an event on another partition than its instance's is refused, dead-lettered, and the instance's own events all apply", { timeout: 90_000 }, async () => {
    // The events wait in the stream until the engine starts, so the partitions' workers race for
    // the instance: the refused event must neither be applied nor hide the instance's own events.
    const { namespace, client } = await open('wrongpart', false);
    const id = 'w';
    await client.start(counter, { id, input: { label: id } });
    const right = partitionOf('counter', id, PARTITIONS);
    const wrong = (right + 1) % PARTITIONS;
    const wrongSubject = eventSubject(namespace, wrong, 'counter', id);
    const js = jetstream(nc);
    const legit: number[] = [];
    for (let k = 0; k < 50; k++) {
      if (k === 25) {
        // A valid event for an existing instance, on the wrong partition's subject.
        await js.publish(wrongSubject, new TextEncoder().encode(JSON.stringify({ type: 'ADD', k: 999 })), { msgID: `wrong-${namespace}` });
      }
      await client.send(counter, id, { type: 'ADD', k }, { idempotencyKey: `w-${k}` });
      legit.push(k);
    }
    opened.push(await createEngine({ servers: nats.url, namespace, partitions: PARTITIONS, workflows, leaseTtlMs: 1_000 }));
    const inst = await eventually(
      async () => {
        const i = await client.get(counter, id);
        const log = (i?.context as CounterContext | undefined)?.log ?? [];
        assert.equal(log.filter((k) => k !== 999).length, legit.length, `every legitimate event applied; the instance's log: ${JSON.stringify(log)}`);
        assert.ok(i);
        return i;
      },
      DEAD_LETTER_WITHIN_MS,
      250,
    );
    assert.deepEqual((inst.context as CounterContext).log, legit, 'exactly the 50 legitimate events, in order, and not the refused one');
    assert.equal(inst.revision, 1 + legit.length);
    assert.equal((await client.verify(counter, id)).ok, true);
    const letters = await eventually(
      async () => {
        const found = (await deadLettersOf(client, 'counter', id)).filter((d) => d.subject === wrongSubject);
        assert.equal(found.length, 1, `a dead letter for the event on '${wrongSubject}'`);
        return found;
      },
      DEAD_LETTER_WITHIN_MS,
      250,
    );
    assert.match(letters[0]!.reason, /partition/i, `the reason names the partition: '${letters[0]!.reason}'`);
  });

  it('an event on a partition the namespace does not have is refused at publish or dead-lettered', { timeout: 90_000 }, async () => {
    const { namespace, client } = await open('nopart');
    const id = 'x';
    await client.start(counter, { id, input: { label: id } });
    const subject = eventSubject(namespace, PARTITIONS, 'counter', id);
    let refused: Error | undefined;
    try {
      await jetstream(nc).publish(subject, new TextEncoder().encode(JSON.stringify({ type: 'ADD', k: 7 })), { msgID: `beyond-${namespace}`, timeout: 5_000 });
    } catch (e) {
      refused = e as Error;
    }
    if (!refused) {
      // Accepted by a stream: then it must not vanish unread.
      const letters = await eventually(
        async () => {
          const found = (await deadLettersOf(client, 'counter', id)).filter((d) => d.subject === subject);
          assert.equal(found.length, 1, `the event on partition ${PARTITIONS} of ${PARTITIONS} (accepted by the server) is dead-lettered`);
          return found;
        },
        DEAD_LETTER_WITHIN_MS,
        250,
      );
      assert.ok(letters[0]!.reason.length > 0, 'with a reason');
    }
    // Either way the instance is untouched.
    await client.send(counter, id, { type: 'ADD', k: 1 });
    const inst = await client.waitFor(counter, id, (s) => (s.context as CounterContext).log.length > 0, { timeoutMs: 20_000 });
    assert.deepEqual((inst.context as CounterContext).log, [1]);
  });

  it('a timer that fires for an instance whose record was deleted is dead-lettered with its reason', { timeout: 90_000 }, async () => {
    const { namespace, client } = await open('gonetimer');
    const id = 'gone';
    await client.start(alarm, { id, input: { delayMs: 2_000 } });
    await client.waitFor(alarm, id, () => true, { timeoutMs: 10_000 });
    const kv = await new Kvm(nc).open(instancesBucketOf(namespace, 'alarm', id, PARTITIONS));
    await kv.delete(instanceKey('alarm', id));
    const subject = eventSubject(namespace, partitionOf('alarm', id, PARTITIONS), 'alarm', id);
    const letters = await eventually(
      async () => {
        const found = await deadLettersOf(client, 'alarm', id);
        assert.equal(found.length, 1, `the fire of the deleted instance's timer is dead-lettered`);
        return found;
      },
      DEAD_LETTER_WITHIN_MS,
      250,
    );
    assert.equal(letters[0]!.subject, subject);
    assert.match(letters[0]!.reason, /exist|missing|not found/i, `the reason says the instance is missing: '${letters[0]!.reason}'`);
    assert.equal(await client.get(alarm, id), null, 'nothing recreated the instance');
  });

  it('an event for an instance that never existed is dead-lettered with its reason', { timeout: 90_000 }, async () => {
    const { namespace, client } = await open('neverwas');
    const id = 'nobody';
    const subject = eventSubject(namespace, partitionOf('counter', id, PARTITIONS), 'counter', id);
    await jetstream(nc).publish(subject, new TextEncoder().encode(JSON.stringify({ type: 'ADD', k: 1 })), { msgID: `nobody-${namespace}` });
    const letters = await eventually(
      async () => {
        const found = await deadLettersOf(client, 'counter', id);
        assert.equal(found.length, 1, 'the event is dead-lettered');
        return found;
      },
      DEAD_LETTER_WITHIN_MS,
      250,
    );
    assert.equal(letters[0]!.subject, subject);
    assert.match(letters[0]!.reason, /exist|missing|not found/i);
  });
});
