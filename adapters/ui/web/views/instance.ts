/**
 * One instance: its statechart with the active states highlighted, context, timers, tasks,
 * children, output, actions and history, all kept live by the server's event stream (the KV watch
 * of its record and its history subject, pushed as they change).
 */
import type { Chart, EventForm, InstanceDetail, Overview } from '../../protocol.js';
import { enc, follow, getJson } from '../api.js';
import { h, fill } from '../dom.js';
import { relative, stateText, time } from '../format.js';
import { jsonTree, openPaths } from '../json-tree.js';
import { drawChart, type DrawnChart } from '../statechart.js';
import { actionsPanel } from './actions-panel.js';
import { instanceHref, statusBadge } from './rows.js';
import { timeline } from './timeline.js';

interface ChartBundle {
  chart: Chart;
  forms: EventForm[];
}
const charts = new Map<string, Promise<ChartBundle>>();
const chartOf = (workflow: string, version: number): Promise<ChartBundle> => {
  const key = `${workflow}@${version}`;
  let p = charts.get(key);
  if (!p) {
    p = getJson<ChartBundle>(`/api/workflows/${enc(workflow)}/${version}/chart`);
    charts.set(key, p);
    p.catch(() => charts.delete(key));
  }
  return p;
};

const panel = (title: string, cls: string, ...body: Array<Node | null>): HTMLElement => h('section', { class: `panel ${cls}` }, h('h2', null, title), ...body);

export function instanceView(root: HTMLElement, _params: URLSearchParams, path: string[]): () => void {
  const workflow = path[1] ?? '';
  const id = path[2] ?? '';
  const title = h(
    'h1',
    null,
    h('a', { href: `#/instances?workflow=${enc(workflow)}` }, workflow),
    ' / ',
    h('span', { class: 'instance-id' }, id),
    ' ',
    h('span', { class: 'status' }),
  );
  const meta = h('p', { class: 'meta muted' });
  const problem = h('div', { class: 'problem', role: 'status' });
  const chartHost = h('div', { class: 'chart-wrap' }, h('p', { class: 'muted' }, 'drawing…'));
  const context = h('div', { class: 'context' });
  const actionsHost = h('div', { class: 'actions-host' });
  const timers = h('div', { class: 'timers' });
  const tasks = h('div', { class: 'tasks' });
  const children = h('div', { class: 'children' });
  const outcome = h('div', { class: 'outcome' });
  const history = h('div', { class: 'history' });
  const live = h('span', { class: 'live-dot', title: 'live' });
  fill(
    root,
    h('div', { class: 'instance-head' }, title, live),
    meta,
    problem,
    panel('Statechart', 'chart-panel', chartHost),
    h('div', { class: 'columns' }, panel('Context', 'context-panel', context, outcome), panel('Actions', 'actions-panel', actionsHost)),
    h(
      'div',
      { class: 'columns three' },
      panel('Timers', 'timers-panel', timers),
      panel('Tasks', 'tasks-panel', tasks),
      panel('Children', 'children-panel', children),
    ),
    panel('History', 'history-panel', history),
  );

  let drawn: DrawnChart | undefined;
  let drawnVersion: number | undefined;
  let latest: InstanceDetail | undefined;
  let stopped = false;
  const actionsReady = getJson<Overview>('/api/overview').then((o) => o.actions);

  const ensureChart = async (d: InstanceDetail): Promise<void> => {
    if (drawnVersion === d.version) return;
    drawnVersion = d.version;
    try {
      const bundle = await chartOf(d.workflow, d.version);
      if (stopped) return;
      drawn = await drawChart(bundle.chart);
      if (stopped) return;
      fill(chartHost, drawn.svg);
      fill(actionsHost, actionsPanel(workflow, id, bundle.forms, await actionsReady));
      if (latest) drawn.highlight(latest.active, latest.timers);
    } catch (e) {
      fill(chartHost, h('p', { class: 'error' }, (e as Error).message));
    }
  };

  const render = (d: InstanceDetail | { missing: true }): void => {
    if ('missing' in d) {
      fill(problem, h('p', { class: 'error' }, `${workflow} ${id} does not exist (or was deleted)`));
      return;
    }
    latest = d;
    fill(title.querySelector('.status')!, statusBadge(d.status));
    fill(
      meta,
      `version ${d.version} · revision ${d.revision} · state ${stateText(d.value)} · created ${time(d.createdAtMs)} · updated ${time(d.updatedAtMs)}`,
      d.parent
        ? h(
            'span',
            null,
            ' · child of ',
            h('a', { href: instanceHref(d.parent.workflow, d.parent.id) }, `${d.parent.workflow} ${d.parent.id}`),
            ` (invoke ${d.parent.invokeId})`,
          )
        : null,
      d.trace
        ? h(
            'span',
            null,
            ' · last transition ',
            d.trace.url
              ? h('a', { href: d.trace.url, target: '_blank', rel: 'noopener noreferrer', class: 'trace' }, `trace ${d.trace.traceId}`)
              : h('span', { class: 'trace' }, `trace ${d.trace.traceId}`),
          )
        : null,
    );
    fill(problem, d.problem ? h('p', { class: 'warn' }, d.problem) : null);
    const open = openPaths(context.querySelector('.json-tree'));
    fill(context, d.context === null ? h('p', { class: 'muted' }, 'context not readable here') : jsonTree(d.context, open));
    fill(
      outcome,
      d.output !== undefined ? h('div', null, h('h3', null, 'Output'), jsonTree(d.output)) : null,
      d.error !== undefined ? h('div', { class: 'error' }, h('h3', null, 'Error'), d.error) : null,
    );
    fill(
      timers,
      d.timers.length === 0
        ? h('p', { class: 'muted' }, 'none pending')
        : h(
            'ul',
            null,
            ...d.timers.map((t) =>
              h(
                'li',
                { 'data-timer': t.id },
                h('code', null, t.eventType.replace(/^xstate\.after\./, 'after ')),
                h('br'),
                `due ${time(t.dueAtMs)} (${relative(t.dueAtMs)})`,
              ),
            ),
          ),
    );
    fill(
      tasks,
      d.tasks.length === 0
        ? h('p', { class: 'muted' }, 'none running')
        : h(
            'ul',
            null,
            ...d.tasks.map((t) =>
              h(
                'li',
                { 'data-task': t.id },
                h('strong', null, t.src),
                ` (${t.id}) since ${time(t.startedAtMs)}`,
                t.attempt ? h('div', { class: 'warn' }, `attempt ${t.attempt} failed: ${t.lastError ?? ''}`) : null,
              ),
            ),
          ),
      d.executions?.length
        ? h(
            'div',
            { class: 'executions' },
            h('h3', null, 'Step Functions'),
            h(
              'ul',
              null,
              ...d.executions.map((x) =>
                h(
                  'li',
                  null,
                  `${x.invokeId}: running since ${time(x.startedAtMs)} `,
                  h('a', { href: x.consoleUrl, target: '_blank', rel: 'noopener noreferrer', title: x.executionArn }, 'open in the AWS console'),
                ),
              ),
            ),
          )
        : null,
    );
    fill(
      children,
      d.children.length === 0
        ? h('p', { class: 'muted' }, 'none')
        : h(
            'ul',
            null,
            ...d.children.map((c) =>
              h(
                'li',
                null,
                h('a', { href: instanceHref(c.workflow, c.id) }, `${c.workflow} ${c.id}`),
                ` (invoke ${c.invokeId})`,
                c.status ? h('span', null, ' ', statusBadge(c.status), ` ${c.state ?? ''}`) : null,
              ),
            ),
          ),
    );
    fill(history, timeline(d.history));
    drawn?.highlight(d.active, d.timers);
    void ensureChart(d);
  };

  const close = follow(
    `/api/instances/${enc(workflow)}/${enc(id)}/stream`,
    {
      instance: (d) => render(d as InstanceDetail | { missing: true }),
      problem: (p) => fill(problem, h('p', { class: 'error' }, (p as { message: string }).message)),
    },
    (open) => live.classList.toggle('on', open),
  );
  return () => {
    stopped = true;
    close();
  };
}
