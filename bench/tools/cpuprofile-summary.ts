/**
 * Summarises a V8 .cpuprofile: self time by package, top self-time functions, and inclusive time
 * of functions whose url or name matches a pattern (default: the engine's own files).
 *
 *   npx tsx bench/tools/cpuprofile-summary.ts FILE.cpuprofile [top=25] [inclusivePattern=/engine/]
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  children?: number[];
  callFrame: { functionName: string; url: string; lineNumber: number };
}
const [file, topArg, patArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: cpuprofile-summary.ts FILE.cpuprofile [top] [inclusivePattern]');
  process.exit(2);
}
const top = Number(topArg ?? 25);
const pattern = new RegExp(patArg ?? '/engine/');
const p = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map<number, number>();
for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));

const label = (n: Node): string =>
  `${n.callFrame.functionName || '(anonymous)'}  ${n.callFrame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/(engine|bench|adapters)\//, '$1/')}:${n.callFrame.lineNumber + 1}`;
const category = (n: Node): string => {
  const { url, functionName } = n.callFrame;
  if (['(idle)', '(garbage collector)', '(program)'].includes(functionName)) return functionName;
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1]!;
  if (url.includes('/engine/')) return 'jetstate engine/';
  if (url.includes('/bench/')) return 'bench (measuring code)';
  return 'node internals / native';
};

const idle = [...self].filter(([id]) => byId.get(id)!.callFrame.functionName === '(idle)').reduce((s, [, t]) => s + t, 0);
const total = [...self.values()].reduce((a, b) => a + b, 0);
const busy = total - idle;
const ms = (us: number): string => `${(us / 1_000).toFixed(0).padStart(6)} ms ${((100 * us) / busy).toFixed(1).padStart(5)}%`;
console.log(
  `profile ${(total / 1_000).toFixed(0)} ms, idle ${(idle / 1_000).toFixed(0)} ms, busy ${(busy / 1_000).toFixed(0)} ms (percentages are of busy time)`,
);

const byCat = new Map<string, number>();
const byFn = new Map<string, number>();
for (const [id, t] of self) {
  const n = byId.get(id)!;
  if (n.callFrame.functionName === '(idle)') continue;
  byCat.set(category(n), (byCat.get(category(n)) ?? 0) + t);
  byFn.set(label(n), (byFn.get(label(n)) ?? 0) + t);
}
console.log('\n-- self time by package --');
for (const [k, t] of [...byCat].sort((a, b) => b[1] - a[1])) console.log(`${ms(t)}  ${k}`);
console.log('\n-- top self-time functions --');
for (const [k, t] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(t)}  ${k}`);

// Inclusive time; a frame under an ancestor with the same label (recursion) is not counted twice.
const incl = new Map<number, number>();
const inclusive = (id: number): number => {
  const cached = incl.get(id);
  if (cached !== undefined) return cached;
  let t = self.get(id) ?? 0;
  for (const c of byId.get(id)!.children ?? []) t += inclusive(c);
  incl.set(id, t);
  return t;
};
const byIncl = new Map<string, number>();
for (const n of p.nodes) {
  if (!pattern.test(`${n.callFrame.url} ${n.callFrame.functionName}`)) continue;
  const l = label(n);
  let a = parent.get(n.id);
  let nested = false;
  while (a !== undefined && !nested) {
    nested = label(byId.get(a)!) === l;
    a = parent.get(a);
  }
  if (!nested) byIncl.set(l, (byIncl.get(l) ?? 0) + inclusive(n.id));
}
console.log(`\n-- inclusive time (self + callees) of functions matching ${pattern} --`);
console.log('   (async functions: only the synchronous part of each resumption is counted)');
for (const [k, t] of [...byIncl].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(t)}  ${k}`);
