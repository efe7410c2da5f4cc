/**
 * Draws a workflow's statechart as SVG: ELK's layered layout (elkjs, in a web worker so a large
 * chart never blocks the page) places nested and parallel states, their initial markers, and the
 * transitions with their labels; the drawing is made once per workflow version, and a live update
 * only moves the highlight of the active states.
 */
import ELK from 'elkjs/lib/elk-api.js';
import type { ElkExtendedEdge, ElkNode } from 'elkjs/lib/elk-api.js';
import type { Chart, ChartEdge, ChartNode } from '../protocol.js';
import { s } from './dom.js';
import { relative } from './format.js';

const FONT = '13px system-ui, sans-serif';
const SMALL = '11px system-ui, sans-serif';
const LINE = 16;

let elk: InstanceType<typeof ELK> | undefined;
const measure = (() => {
  let ctx: CanvasRenderingContext2D | null = null;
  return (text: string, font: string): number => {
    ctx ??= document.createElement('canvas').getContext('2d');
    if (!ctx) return text.length * 7;
    ctx.font = font;
    return Math.ceil(ctx.measureText(text).width);
  };
})();

export interface DrawnChart {
  svg: SVGSVGElement;
  /** Marks the active state paths, the transitions they offer, and the pending timers. */
  highlight(active: string[], timers: Array<{ eventType: string; dueAtMs: number }>): void;
}

const edgeText = (e: ChartEdge): string => (e.guard ? `${e.label} [${e.guard}]` : e.label);
const detailLines = (n: ChartNode): string[] => [
  ...n.invokes.map((i) => `invoke ${i.src}`),
  ...n.entry.map((a) => `entry / ${a}`),
  ...n.exit.map((a) => `exit / ${a}`),
];
const isContainer = (n: ChartNode): boolean => n.children.length > 0;

/** Lays out and draws a chart. */
export async function drawChart(chart: Chart): Promise<DrawnChart> {
  elk ??= new ELK({ workerUrl: '/elk-worker.min.js' });
  const byId = new Map<string, ChartNode>();
  const parentOf = new Map<string, string>();
  const index = (n: ChartNode, parent: string): void => {
    byId.set(n.id, n);
    parentOf.set(n.id, parent);
    for (const c of n.children) index(c, n.id);
  };
  index(chart.root, '__top');
  const ancestors = (id: string): string[] => {
    const out: string[] = [];
    for (let p = parentOf.get(id); p !== undefined; p = parentOf.get(p)) out.unshift(p);
    return out;
  };
  const elkNodes = new Map<string, ElkNode>();
  const toElk = (n: ChartNode): ElkNode => {
    const lines = detailLines(n);
    const title = n.type === 'parallel' ? `${n.key} ∥` : n.key;
    const width = Math.max(64, measure(title, `bold ${FONT}`) + 28, ...lines.map((l) => measure(l, SMALL) + 24));
    const node: ElkNode = isContainer(n)
      ? {
          id: n.id,
          layoutOptions: {
            'elk.padding': `[top=${30 + lines.length * LINE},left=14,bottom=14,right=14]`,
            'elk.nodeSize.minimum': `(${width},40)`,
            'elk.nodeSize.constraints': 'MINIMUM_SIZE',
          },
          children: n.children.map(toElk),
          edges: [],
        }
      : { id: n.id, width, height: 30 + lines.length * LINE };
    if (n.initial && node.children) {
      node.children.unshift({ id: `${n.id}#~init`, width: 10, height: 10 });
      node.edges!.push({ id: `${n.id}#~initedge`, sources: [`${n.id}#~init`], targets: [n.initial] });
    }
    elkNodes.set(n.id, node);
    return node;
  };
  const top: ElkNode = {
    id: '__top',
    layoutOptions: {
      'elk.algorithm': 'layered',
      'elk.direction': 'RIGHT',
      'elk.hierarchyHandling': 'INCLUDE_CHILDREN',
      'elk.json.edgeCoords': 'ROOT',
      'elk.json.shapeCoords': 'ROOT',
      'elk.layered.spacing.nodeNodeBetweenLayers': '48',
      'elk.spacing.nodeNode': '28',
      'elk.spacing.edgeLabel': '4',
      'elk.layered.mergeEdges': 'false',
      'elk.edgeRouting': 'ORTHOGONAL',
    },
    children: [toElk(chart.root)],
    edges: [],
  };
  elkNodes.set('__top', top);
  for (const e of chart.edges) {
    const target = e.target ?? e.source;
    const a = ancestors(e.source);
    const b = ancestors(target);
    let container = '__top';
    for (let i = 0; i < Math.min(a.length, b.length) && a[i] === b[i]; i++) container = a[i]!;
    const text = edgeText(e);
    const edge: ElkExtendedEdge = { id: e.id, sources: [e.source], targets: [target], labels: [{ text, width: measure(text, SMALL) + 8, height: 15 }] };
    elkNodes.get(container)!.edges!.push(edge);
  }
  const laid = await elk.layout(top);
  return render(chart, laid, byId);
}

function render(chart: Chart, laid: ElkNode, byId: Map<string, ChartNode>): DrawnChart {
  const width = Math.ceil(laid.width ?? 400) + 2;
  const height = Math.ceil(laid.height ?? 200) + 2;
  const svg = s('svg', {
    class: 'chart',
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: 'img',
    'aria-label': `statechart of ${chart.workflow} version ${chart.version}`,
  }) as SVGSVGElement;
  svg.appendChild(
    s(
      'defs',
      null,
      s(
        'marker',
        { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
        s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }),
      ),
    ),
  );
  const nodeLayer = s('g', { class: 'nodes' });
  const edgeLayer = s('g', { class: 'edges' });
  const labelLayer = s('g', { class: 'labels' });
  svg.append(nodeLayer, edgeLayer, labelLayer);
  const nodeEls = new Map<string, SVGElement>();
  const edgeEls: Array<{ edge: ChartEdge; el: SVGElement; title: SVGElement }> = [];
  const walk = (n: ElkNode, parent: ChartNode | undefined): void => {
    const c = byId.get(n.id);
    if (n.id.endsWith('#~init')) {
      nodeLayer.appendChild(s('circle', { class: 'initial', cx: (n.x ?? 0) + 5, cy: (n.y ?? 0) + 5, r: 5 }));
      return;
    }
    if (c) {
      const [x, y, w, hgt] = [n.x ?? 0, n.y ?? 0, n.width ?? 0, n.height ?? 0];
      const region = parent?.type === 'parallel';
      const g = s('g', {
        class: `node ${c.type}${isContainer(c) ? ' container' : ''}${region ? ' region' : ''}`,
        'data-path': c.path.join('.'),
        'data-id': c.id,
      });
      g.appendChild(s('rect', { x, y, width: w, height: hgt, rx: isContainer(c) ? 8 : 12 }));
      if (c.type === 'final') g.appendChild(s('rect', { class: 'inner', x: x + 3, y: y + 3, width: w - 6, height: hgt - 6, rx: 9 }));
      const title = c.type === 'parallel' ? `${c.key} ∥` : c.key;
      g.appendChild(
        s('text', { class: 'title', x: isContainer(c) ? x + 10 : x + w / 2, y: y + 19, 'text-anchor': isContainer(c) ? 'start' : 'middle' }, title),
      );
      detailLines(c).forEach((line, i) =>
        g.appendChild(
          s(
            'text',
            { class: 'detail', x: isContainer(c) ? x + 10 : x + w / 2, y: y + 19 + (i + 1) * LINE, 'text-anchor': isContainer(c) ? 'start' : 'middle' },
            line,
          ),
        ),
      );
      g.appendChild(s('title', null, `${c.id} (${c.type})`));
      nodeLayer.appendChild(g);
      nodeEls.set(c.path.join('.'), g);
    }
    for (const child of n.children ?? []) walk(child, c);
  };
  walk(laid, undefined);
  const edgesOf = (n: ElkNode): ElkExtendedEdge[] => [...(n.edges ?? []), ...(n.children ?? []).flatMap(edgesOf)];
  const chartEdges = new Map(chart.edges.map((e) => [e.id, e]));
  for (const e of edgesOf(laid)) {
    const points = (e.sections ?? []).flatMap((sec) => [sec.startPoint, ...(sec.bendPoints ?? []), sec.endPoint]);
    if (points.length === 0) continue;
    const d = points.map((p, i) => `${i === 0 ? 'M' : 'L'} ${p.x} ${p.y}`).join(' ');
    const ce = chartEdges.get(e.id);
    if (!ce) {
      edgeLayer.appendChild(s('path', { class: 'edge initial-edge', d, 'marker-end': 'url(#arrow)' }));
      continue;
    }
    const title = s('title', null, `${ce.eventType || 'always'}${ce.guard ? ` if ${ce.guard}` : ''}${ce.actions.length ? ` / ${ce.actions.join(', ')}` : ''}`);
    const g = s('g', { class: `edge ${ce.kind}`, 'data-event': ce.eventType, 'data-source': ce.source }, s('path', { d, 'marker-end': 'url(#arrow)' }), title);
    edgeLayer.appendChild(g);
    for (const l of e.labels ?? []) {
      const lx = l.x ?? 0;
      const ly = l.y ?? 0;
      labelLayer.appendChild(
        s(
          'g',
          { class: `edge-label ${ce.kind}`, 'data-event': ce.eventType },
          s('rect', { x: lx - 2, y: ly - 1, width: (l.width ?? 0) + 2, height: (l.height ?? 0) + 1, rx: 3 }),
          s('text', { x: lx + 2, y: ly + 11 }, l.text ?? ''),
        ),
      );
    }
    edgeEls.push({ edge: ce, el: g, title });
  }
  const pathOf = new Map([...byId.values()].map((n) => [n.id, n.path.join('.')]));
  return {
    svg,
    highlight(active, timers) {
      const on = new Set(active);
      // The machine itself is always active: only its states are marked.
      for (const [path, el] of nodeEls) el.classList.toggle('active', path !== '' && on.has(path));
      on.add('');
      const due = new Map(timers.map((t) => [t.eventType, t.dueAtMs]));
      for (const { edge, el, title } of edgeEls) {
        el.classList.toggle('live', on.has(pathOf.get(edge.source) ?? '#~'));
        const dueAt = due.get(edge.eventType);
        el.classList.toggle('timer-pending', dueAt !== undefined);
        title.textContent =
          dueAt !== undefined
            ? `${edge.eventType}: due ${new Date(dueAt).toISOString()} (${relative(dueAt)})`
            : `${edge.eventType || 'always'}${edge.guard ? ` if ${edge.guard}` : ''}`;
      }
      svg.dataset['active'] = [...on].filter(Boolean).sort().join(' ');
    },
  };
}
