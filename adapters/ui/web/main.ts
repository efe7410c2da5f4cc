/**
 * The page: a hash router over four views (workflows, instances, one instance, dead letters).
 * Each view renders into the main element and returns what stops its live updates.
 */
import { h, fill } from './dom.js';
import { overviewView } from './views/overview.js';
import { instancesView } from './views/instances.js';
import { instanceView } from './views/instance.js';
import { deadLettersView } from './views/dead-letters.js';

export type View = (root: HTMLElement, params: URLSearchParams, path: string[]) => () => void;

const main = document.getElementById('app')!;
let stop: (() => void) | undefined;

function route(): void {
  stop?.();
  const hash = location.hash.replace(/^#/, '') || '/';
  const [pathPart = '/', query = ''] = hash.split('?');
  const path = pathPart.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query);
  const view: View = path[0] === 'instances' ? instancesView : path[0] === 'i' ? instanceView : path[0] === 'deadletters' ? deadLettersView : overviewView;
  for (const a of document.querySelectorAll<HTMLAnchorElement>('nav a')) a.classList.toggle('current', a.dataset['view'] === (path[0] ?? 'overview'));
  fill(main);
  try {
    stop = view(main, params, path);
  } catch (e) {
    fill(main, h('p', { class: 'error' }, (e as Error).message));
    stop = undefined;
  }
}

window.addEventListener('hashchange', route);
route();
