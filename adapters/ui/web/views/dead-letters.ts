/** Dead letters with their reasons, and the pending Step Functions executions of the namespace. */
import type { DeadLettersView } from '../../protocol.js';
import { getJson } from '../api.js';
import { h, fill } from '../dom.js';
import { relative, time } from '../format.js';
import { instanceHref } from './rows.js';

export function deadLettersView(root: HTMLElement): () => void {
  const body = h('div', null, h('p', { class: 'muted' }, 'loading…'));
  const reload = h('button', { type: 'button' }, 'Reload');
  fill(root, h('h1', null, 'Dead letters ', reload), body);
  const load = async (): Promise<void> => {
    try {
      const v = await getJson<DeadLettersView>('/api/deadletters?limit=200');
      fill(
        body,
        h(
          'p',
          { class: 'muted' },
          'Events the engine refused (kept a week), newest first, with the reason. Payloads are not shown: they may be hostile or hold secrets.',
        ),
        v.deadLetters.length === 0
          ? h('p', { class: 'muted' }, 'no dead letters')
          : h(
              'table',
              { class: 'grid deadletters' },
              h(
                'thead',
                null,
                h(
                  'tr',
                  null,
                  h('th', null, 'Time'),
                  h('th', null, 'Instance'),
                  h('th', { class: 'num' }, 'Seq'),
                  h('th', null, 'Reason'),
                  h('th', { class: 'num' }, 'Bytes'),
                ),
              ),
              h(
                'tbody',
                null,
                ...v.deadLetters.map((d) =>
                  h(
                    'tr',
                    null,
                    h('td', null, time(d.timeMs)),
                    h('td', null, h('a', { href: instanceHref(d.workflow, d.id) }, `${d.workflow} ${d.id}`)),
                    h('td', { class: 'num' }, String(d.seq)),
                    h('td', { class: 'reason' }, d.reason),
                    h('td', { class: 'num' }, String(d.size)),
                  ),
                ),
              ),
            ),
        h('h2', null, 'Step Functions executions pending'),
        v.executions === null
          ? h('p', { class: 'muted' }, 'no Step Functions stage has run in this namespace')
          : v.executions.length === 0
            ? h('p', { class: 'muted' }, 'none pending')
            : h(
                'table',
                { class: 'grid executions' },
                h('thead', null, h('tr', null, h('th', null, 'Instance'), h('th', null, 'Invoke'), h('th', null, 'Started'), h('th', null, 'Execution'))),
                h(
                  'tbody',
                  null,
                  ...v.executions.map((x) =>
                    h(
                      'tr',
                      null,
                      h('td', null, h('a', { href: instanceHref(x.workflow, x.id) }, `${x.workflow} ${x.id}`)),
                      h('td', null, x.invokeId),
                      h('td', null, `${time(x.startedAtMs)} (${relative(x.startedAtMs)})`),
                      h('td', null, h('a', { href: x.consoleUrl, target: '_blank', rel: 'noopener noreferrer' }, x.executionArn)),
                    ),
                  ),
                ),
              ),
      );
    } catch (e) {
      fill(body, h('p', { class: 'error' }, (e as Error).message));
    }
  };
  reload.addEventListener('click', () => void load());
  void load();
  return () => {};
}
