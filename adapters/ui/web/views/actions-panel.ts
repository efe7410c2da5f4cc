/**
 * Actions on one instance: send an event (a form per declared event, from its schema), verify,
 * and cancel or terminate when the server's client has them. The token field is passed with each
 * action as `{ token }`; the client and the engine decide, and their words are shown as they are.
 */
import type { EventForm, SendOutcome } from '../../protocol.js';
import { ApiFailure, enc, postJson } from '../api.js';
import { h, fill } from '../dom.js';
import { stateText } from '../format.js';
import { schemaForm, type SchemaForm } from '../schema-form.js';

/** Kept for the session of this page (never stored): one token for every instance viewed. */
let token = '';

const failure = (e: unknown): HTMLElement =>
  h('div', { class: 'result refused', role: 'alert' }, e instanceof ApiFailure ? `${e.code}: ${e.message}` : (e as Error).message);

export function actionsPanel(workflow: string, id: string, forms: EventForm[], actions: string[]): HTMLElement {
  const base = `/api/instances/${enc(workflow)}/${enc(id)}`;
  const tokenInput = h('input', {
    type: 'password',
    name: 'token',
    autocomplete: 'off',
    placeholder: 'identity token (OIDC JWT), if the workflow asks for one',
    value: token,
  });
  tokenInput.addEventListener('input', () => (token = tokenInput.value.trim()));
  const withToken = <T extends object>(body: T): T & { token?: string } => (token ? { ...body, token } : body);

  const typeSelect = h('select', { name: 'type', 'aria-label': 'event type' }, ...forms.map((f) => h('option', { value: f.type }, f.type)));
  const formHost = h('div', { class: 'event-form' });
  const sendResult = h('div', { class: 'send-result', 'aria-live': 'polite' });
  let current: SchemaForm | undefined;
  const pick = (): void => {
    const f = forms.find((x) => x.type === typeSelect.value);
    current = f ? schemaForm(f.schema, f.secrets) : undefined;
    fill(formHost, current?.element);
  };
  typeSelect.addEventListener('change', pick);
  pick();
  const sendButton = h('button', { type: 'submit', class: 'primary' }, 'Send');
  const sendForm = h('form', { class: 'send' }, h('label', null, 'Event ', typeSelect), formHost, sendButton, sendResult);
  sendForm.addEventListener('submit', (e) => {
    e.preventDefault();
    void (async () => {
      sendButton.disabled = true;
      fill(sendResult, h('div', { class: 'result muted' }, 'sending…'));
      try {
        const payload = current?.read() ?? {};
        const r = await postJson<SendOutcome>(`${base}/send`, withToken({ event: { ...payload, type: typeSelect.value } }));
        fill(
          sendResult,
          r.outcome === 'rejected'
            ? h('div', { class: 'result refused', role: 'alert', 'data-outcome': r.outcome }, `refused by the engine: ${r.reason ?? ''}`)
            : r.outcome === 'applied'
              ? h(
                  'div',
                  { class: 'result ok', 'data-outcome': r.outcome },
                  `applied${r.to !== undefined ? `: now ${stateText(r.to)}` : ''} (seq ${r.seq}${r.duplicate ? ', already accepted before' : ''})`,
                )
              : h('div', { class: 'result muted', 'data-outcome': r.outcome }, `accepted (seq ${r.seq}); no engine applied it yet: is one running?`),
        );
      } catch (err) {
        fill(sendResult, failure(err));
      } finally {
        sendButton.disabled = false;
      }
    })();
  });

  const verifyResult = h('div', { class: 'verify-result', 'aria-live': 'polite' });
  const verifyButton = h('button', { type: 'button' }, 'Verify');
  verifyButton.addEventListener('click', () => {
    void (async () => {
      verifyButton.disabled = true;
      try {
        const r = await postJson<{ ok: boolean; replayed: number; revision: number; problems: string[] }>(`${base}/verify`, {});
        fill(
          verifyResult,
          r.ok
            ? h('div', { class: 'result ok' }, `ok: replaying ${r.replayed} events reproduces revision ${r.revision}`)
            : h('div', { class: 'result refused' }, 'MISMATCH', h('ul', null, ...r.problems.map((p) => h('li', null, p)))),
        );
      } catch (err) {
        fill(verifyResult, failure(err));
      } finally {
        verifyButton.disabled = false;
      }
    })();
  });

  const optional = actions.filter((a) => a === 'cancel' || a === 'terminate');
  const reason = h('input', { name: 'reason', placeholder: 'reason (optional)' });
  const optionalResult = h('div', { class: 'action-result', 'aria-live': 'polite' });
  const optionalButtons = optional.map((a) => {
    const b = h('button', { type: 'button', class: a === 'terminate' ? 'danger' : '', 'data-action': a }, a === 'cancel' ? 'Cancel instance' : 'Terminate');
    b.addEventListener('click', () => {
      if (!confirm(`${a} ${workflow} ${id}?`)) return;
      void postJson(`${base}/${a}`, withToken({ ...(reason.value ? { reason: reason.value } : {}) }))
        .then(() => fill(optionalResult, h('div', { class: 'result ok' }, `${a}: done`)))
        .catch((err: unknown) => fill(optionalResult, failure(err)));
    });
    return b;
  });

  return h(
    'div',
    { class: 'actions' },
    h('label', { class: 'token' }, 'Token ', tokenInput),
    forms.length ? sendForm : h('p', { class: 'muted' }, 'this workflow declares no events'),
    h('div', { class: 'row' }, verifyButton, verifyResult),
    optional.length ? h('div', { class: 'row lifecycle' }, reason, ...optionalButtons, optionalResult) : null,
  );
}
