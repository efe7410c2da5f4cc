/** The instance table shared by the list and the overview. */
import type { InstanceRow } from '../../protocol.js';
import { enc } from '../api.js';
import { h } from '../dom.js';
import { time } from '../format.js';

export const instanceHref = (workflow: string, id: string): string => `#/i/${enc(workflow)}/${enc(id)}`;

export function statusBadge(status: string): HTMLElement {
  return h('span', { class: `badge status-${status.replace(/[^a-z0-9_-]/gi, '')}` }, status);
}

export function instanceRows(rows: InstanceRow[], updated: (r: InstanceRow) => string = (r) => time(r.updatedAtMs)): HTMLElement {
  return h(
    'table',
    { class: 'grid instances' },
    h(
      'thead',
      null,
      h(
        'tr',
        null,
        h('th', null, 'Workflow'),
        h('th', null, 'Instance'),
        h('th', null, 'Status'),
        h('th', null, 'State'),
        h('th', { class: 'num' }, 'Revision'),
        h('th', null, 'Updated'),
      ),
    ),
    h(
      'tbody',
      null,
      ...rows.map((r) =>
        h(
          'tr',
          { 'data-key': `${r.workflow}.${r.id}` },
          h('td', null, `${r.workflow} v${r.version}`),
          h('td', null, h('a', { href: instanceHref(r.workflow, r.id) }, r.id)),
          h('td', null, statusBadge(r.status)),
          h('td', { class: 'state' }, r.state),
          h('td', { class: 'num' }, String(r.revision)),
          h('td', null, updated(r)),
        ),
      ),
    ),
  );
}
