/** Workflows: each workflow and version with counts by status, rates and dead letters; recent changes. */
import type { Overview } from '../../protocol.js';
import { follow, getJson, enc } from '../api.js';
import { h, fill } from '../dom.js';
import { rate, relative } from '../format.js';
import { instanceRows } from './rows.js';

export function overviewView(root: HTMLElement): () => void {
  const body = h('div', { class: 'overview' }, h('p', { class: 'muted' }, 'loading…'));
  fill(root, h('h1', null, 'Workflows'), body);
  let inFlight = false;
  let again = false;
  const load = async (): Promise<void> => {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      do {
        again = false;
        render(body, await getJson<Overview>('/api/overview'));
      } while (again);
    } catch (e) {
      fill(body, h('p', { class: 'error' }, (e as Error).message));
    } finally {
      inFlight = false;
    }
  };
  void load();
  return follow('/api/stream', { index: () => void load() });
}

function render(body: HTMLElement, o: Overview): void {
  const statuses = o.statuses;
  const link = (workflow: string, status?: string): string => `#/instances?workflow=${enc(workflow)}${status ? `&status=${enc(status)}` : ''}`;
  const rows = o.workflows.flatMap((w) =>
    w.versions.map((v, i) =>
      h(
        'tr',
        { 'data-workflow': w.name, 'data-version': v.version },
        i === 0 ? h('td', { rowspan: w.versions.length }, h('a', { href: link(w.name) }, w.name)) : null,
        h(
          'td',
          null,
          `v${v.version}`,
          v.registered
            ? null
            : h('span', { class: 'badge warn', title: 'records of this version exist, but the loaded workflows module does not define it' }, 'not loaded'),
        ),
        ...statuses.map((s) => {
          const n = v.counts[s] ?? 0;
          return h('td', { class: `num status-${s}`, 'data-status': s }, n ? h('a', { href: link(w.name, s) }, String(n)) : '0');
        }),
        i === 0 ? h('td', { class: 'num', rowspan: w.versions.length, title: 'events applied per second, last 10 s' }, rate(w.eventsPerSecond)) : null,
        i === 0 ? h('td', { class: 'num', rowspan: w.versions.length, title: 'instances started per second, last 10 s' }, rate(w.startsPerSecond)) : null,
        i === 0 ? h('td', { class: 'num', rowspan: w.versions.length }, w.deadLetters ? h('a', { href: '#/deadletters' }, String(w.deadLetters)) : '0') : null,
      ),
    ),
  );
  fill(
    body,
    h(
      'p',
      { class: 'muted' },
      `namespace ${o.namespace} · ${o.instances.toLocaleString('en')} instances`,
      o.ready ? null : h('span', { class: 'badge warn' }, ' reading the bucket…'),
      o.reveal ? h('span', { class: 'badge danger', title: 'started with --reveal: secret fields are shown in clear' }, 'secrets revealed') : null,
    ),
    h(
      'table',
      { class: 'grid workflows' },
      h(
        'thead',
        null,
        h(
          'tr',
          null,
          h('th', null, 'Workflow'),
          h('th', null, 'Version'),
          ...statuses.map((s) => h('th', { class: 'num' }, s)),
          h('th', { class: 'num' }, 'events/s'),
          h('th', { class: 'num' }, 'starts/s'),
          h('th', { class: 'num', title: `among the newest ${o.deadLettersScanned}` }, 'dead letters'),
        ),
      ),
      h('tbody', null, ...rows),
    ),
    h('h2', null, 'Recently changed'),
    o.recent.length === 0 ? h('p', { class: 'muted' }, 'nothing changed since this server started') : instanceRows(o.recent, (r) => relative(r.updatedAtMs)),
  );
}
