// History messages on the real stream: an engine publishes the entries of a journal that are not
// already on their way, so two messages may share their first and last entries and differ in
// between. The stream's deduplication must not take one for the other and drop an entry.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ClientOptionsSchema, parseOptions } from '../../engine/options.js';
import { HistoryKind, type HistoryEntry } from '../../engine/protocol/record.js';
import { publishHistory, readHistory } from '../../engine/store/history.js';
import { openRuntime, type Runtime } from '../../engine/store/runtime.js';
import { startNats, uniqueNamespace } from '../helpers.js';

const entry = (revision: number): HistoryEntry => ({
  kind: HistoryKind.Event,
  revision,
  seq: revision,
  event: { type: 'ADD' },
  from: 'a',
  to: 'a',
  status: 'running',
  timeMs: 0,
});

describe('history messages', () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let rt: Runtime;
  before(async () => {
    nats = await startNats();
    rt = await openRuntime(parseOptions(ClientOptionsSchema, 'test', { servers: nats.url, namespace: uniqueNamespace('histmsg') }), { engine: true });
  });
  after(async () => {
    await rt?.nc.close();
    await nats?.dispose();
  });

  it('keeps an entry that only the second of two messages with the same ends holds', async () => {
    // Revision 3 was on its way (left out), then its publish failed and the next journal has it.
    await publishHistory(rt, { workflow: 'w', id: 'i' }, [entry(2), entry(4)]);
    await publishHistory(rt, { workflow: 'w', id: 'i' }, [entry(2), entry(3), entry(4)]);
    const { entries } = await readHistory(rt, 'w', 'i');
    assert.deepEqual(
      entries.map((e) => e.revision),
      [2, 3, 4],
    );
  });

  it('stores a message published twice once', async () => {
    await publishHistory(rt, { workflow: 'w', id: 'j' }, [entry(2), entry(3)]);
    await publishHistory(rt, { workflow: 'w', id: 'j' }, [entry(2), entry(3)]);
    const all = await rt.jsm.streams.info(rt.names.historyStream, { subjects_filter: rt.names.historySubject('w', 'j') });
    assert.equal(all.state.subjects?.[rt.names.historySubject('w', 'j')], 1, 'one message');
  });
});
