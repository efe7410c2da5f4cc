/** The history of an instance as a timeline: from, to, event, who sent it, and its trace. */
import type { HistoryRow } from '../../protocol.js';
import { h } from '../dom.js';
import { stateText, time } from '../format.js';
import { jsonTree } from '../json-tree.js';

function identity(row: HistoryRow): HTMLElement | null {
  const i = row.identity;
  if (!i) return null;
  return h(
    'span',
    { class: 'identity', title: `${i.method} identity from ${i.issuer}` },
    `by ${i.subject}`,
    i.roles.length ? h('span', { class: 'muted' }, ` (${i.roles.join(', ')})`) : null,
  );
}

export function timeline(rows: HistoryRow[]): HTMLElement {
  if (rows.length === 0) return h('p', { class: 'muted' }, 'no history yet');
  return h(
    'ol',
    { class: 'timeline', reversed: true },
    ...[...rows]
      .reverse()
      .map((r) =>
        h(
          'li',
          { class: `entry ${r.kind}`, 'data-revision': r.revision, 'data-seq': r.seq, 'data-kind': r.kind, 'data-label': r.label },
          h(
            'div',
            { class: 'entry-head' },
            h('span', { class: 'rev', title: 'revision after this entry' }, r.kind === 'rejected' ? '✕' : `#${r.revision}`),
            h('strong', { class: 'event' }, r.label),
            r.kind === 'rejected'
              ? h('span', { class: 'move rejected' }, 'rejected')
              : h(
                  'span',
                  { class: 'move' },
                  r.from === null || r.from === undefined ? '' : `${stateText(r.from)} → `,
                  h('span', { class: 'to' }, stateText(r.to)),
                ),
            identity(r),
            h('time', { datetime: new Date(r.timeMs).toISOString() }, time(r.timeMs)),
            r.seq ? h('span', { class: 'muted seq' }, `seq ${r.seq}`) : null,
            r.traceId
              ? r.traceUrl
                ? h('a', { class: 'trace', href: r.traceUrl, target: '_blank', rel: 'noopener noreferrer' }, `trace ${r.traceId.slice(0, 8)}…`)
                : h('span', { class: 'trace muted', title: r.traceId }, `trace ${r.traceId.slice(0, 8)}…`)
              : null,
          ),
          r.reason ? h('div', { class: 'reason' }, r.reason) : null,
          r.kind !== 'start' && r.event && typeof r.event === 'object' && Object.keys(r.event).length > 1
            ? h('details', { class: 'payload' }, h('summary', null, 'event'), jsonTree(r.event))
            : null,
        ),
      ),
  );
}
