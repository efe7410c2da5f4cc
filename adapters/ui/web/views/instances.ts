/**
 * Instances: a searchable, paged list (by workflow, status, state, id prefix), answered from the
 * server's index and fetched again when the index changes.
 */
import type { InstancePage, Overview } from '../../protocol.js';
import { follow, getJson } from '../api.js';
import { h, fill } from '../dom.js';
import { instanceRows } from './rows.js';

const FILTERS = ['workflow', 'status', 'state', 'prefix'] as const;

export function instancesView(root: HTMLElement, params: URLSearchParams): () => void {
  const workflow = h('select', { name: 'workflow', 'aria-label': 'workflow' }, h('option', { value: '' }, 'all workflows'));
  const status = h('select', { name: 'status', 'aria-label': 'status' }, h('option', { value: '' }, 'any status'));
  const state = h('input', { name: 'state', placeholder: 'state, e.g. paid or shipping.packed', 'aria-label': 'state' });
  const prefix = h('input', { name: 'prefix', placeholder: 'id prefix', 'aria-label': 'id prefix' });
  const summary = h('span', { class: 'muted summary' });
  const prev = h('button', { type: 'button', class: 'prev' }, '‹ Previous');
  const next = h('button', { type: 'button', class: 'next' }, 'Next ›');
  const first = h('button', { type: 'button', class: 'first' }, '« First');
  const table = h('div', { class: 'list' }, h('p', { class: 'muted' }, 'loading…'));
  fill(
    root,
    h('h1', null, 'Instances'),
    h('form', { class: 'filters', role: 'search' }, workflow, status, state, prefix),
    table,
    h('div', { class: 'pager' }, first, prev, next, summary),
  );

  const inputs = { workflow, status, state, prefix };
  for (const k of FILTERS) inputs[k].value = params.get(k) ?? '';
  let cursor: { after?: string; before?: string } = {};
  if (params.get('after')) cursor.after = params.get('after')!;
  if (params.get('before')) cursor.before = params.get('before')!;
  let page: InstancePage | undefined;

  const query = (): URLSearchParams => {
    const q = new URLSearchParams();
    for (const k of FILTERS) if (inputs[k].value.trim()) q.set(k, inputs[k].value.trim());
    if (cursor.after) q.set('after', cursor.after);
    if (cursor.before) q.set('before', cursor.before);
    return q;
  };
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
        const q = query();
        history.replaceState(null, '', `#/instances?${q}`);
        q.set('limit', '50');
        page = await getJson<InstancePage>(`/api/instances?${q}`);
        fill(table, page.rows.length ? instanceRows(page.rows) : h('p', { class: 'muted empty' }, page.ready ? 'no instance matches' : 'reading the bucket…'));
        summary.textContent = `${page.total.toLocaleString('en')} match${page.total === 1 ? 'es' : ''}${page.ready ? '' : ' so far'}`;
        prev.disabled = page.prev === null;
        next.disabled = page.next === null;
        first.disabled = !cursor.after && !cursor.before;
      } while (again);
    } catch (e) {
      fill(table, h('p', { class: 'error' }, (e as Error).message));
    } finally {
      inFlight = false;
    }
  };

  void getJson<Overview>('/api/overview').then((o) => {
    for (const w of o.workflows) workflow.appendChild(h('option', { value: w.name }, w.name));
    for (const s of o.statuses) status.appendChild(h('option', { value: s }, s));
    workflow.value = params.get('workflow') ?? '';
    status.value = params.get('status') ?? '';
  });
  let debounce: number | undefined;
  const changed = (): void => {
    cursor = {};
    clearTimeout(debounce);
    debounce = window.setTimeout(() => void load(), 150);
  };
  workflow.addEventListener('change', changed);
  status.addEventListener('change', changed);
  state.addEventListener('input', changed);
  prefix.addEventListener('input', changed);
  root.querySelector('form')!.addEventListener('submit', (e) => e.preventDefault());
  prev.addEventListener('click', () => {
    if (page?.prev) cursor = { before: page.prev };
    void load();
  });
  next.addEventListener('click', () => {
    if (page?.next) cursor = { after: page.next };
    void load();
  });
  first.addEventListener('click', () => {
    cursor = {};
    void load();
  });
  void load();
  const close = follow('/api/stream', { index: () => void load() });
  return () => {
    clearTimeout(debounce);
    close();
  };
}
