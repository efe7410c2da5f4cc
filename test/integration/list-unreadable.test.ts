// list() read records 64 at a time, and one it could not read (a status a newer engine wrote, a
// record whose secrets' key was shredded, damage) made the whole list fail: the others were never
// returned. Now such a record is left out and said as a warning naming it; the rest are listed.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Kvm } from '@nats-io/kv';
import { createClient, createEngine, type Client, type Engine } from '../../engine/index.js';
import { order } from '../../workflows/order.js';
import { memoryLogger, natsForSuite, uniqueNamespace } from '../helpers.js';

describe('list() with a record it cannot read', () => {
  const suite = natsForSuite();
  let engine: Engine;
  let client: Client;
  const logger = memoryLogger();
  const namespace = uniqueNamespace('listbad');
  before(async () => {
    engine = await createEngine({ servers: suite.nats.url, namespace, workflows: [order], logger: memoryLogger() });
    client = await createClient({ servers: suite.nats.url, namespace, workflows: [order], logger });
  });
  after(async () => {
    await client?.close();
    await engine?.close();
  });

  it('lists the others, and names the one it left out', async () => {
    for (const id of ['a', 'b', 'c', 'd']) await engine.start(order, { id, input: { orderId: id, customer: 'x', amount: 10 } });
    // 'b' as a newer engine might write it: a status this version does not know.
    const kv = await new Kvm(suite.nc).open(client.recordBucketOf('order', 'b'));
    const stored = JSON.parse(new TextDecoder().decode((await kv.get('order.b'))!.value)) as Record<string, unknown>;
    await kv.put('order.b', JSON.stringify({ ...stored, status: 'paused' }));
    const seen: string[] = [];
    for await (const i of client.list(order)) seen.push(i.id);
    assert.deepEqual(seen, ['a', 'c', 'd']);
    assert.ok(
      logger.lines.some((l) => l.startsWith('warn:') && l.includes("'order.b'") && l.includes('left out')),
      logger.lines.join('\n'),
    );
  });
});
