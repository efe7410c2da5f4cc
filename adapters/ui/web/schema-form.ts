/**
 * A form built from an event's JSON Schema (what zod 4's `z.toJSONSchema` gives): text, number,
 * checkbox and select inputs for the simple fields, nested fieldsets for objects, JSON text for
 * anything else. Secret fields are password inputs. The server validates with the zod schema
 * itself, so the form only has to be helpful, not exact.
 */
import { h } from './dom.js';

type Schema = {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  description?: string;
  items?: Schema;
  anyOf?: Schema[];
  minimum?: number;
  exclusiveMinimum?: number;
  maximum?: number;
  pattern?: string;
};

export interface SchemaForm {
  element: HTMLElement;
  /** The payload the form holds now; throws with a plain message when a JSON field is not JSON. */
  read(): Record<string, unknown>;
}

type Reader = () => { set: boolean; value?: unknown };

const typeOf = (s: Schema): string | undefined => {
  if (Array.isArray(s.type)) return s.type.find((t) => t !== 'null');
  if (s.type) return s.type;
  if (s.enum) return 'enum';
  const nonNull = s.anyOf?.filter((x) => x.type !== 'null');
  if (nonNull?.length === 1) return typeOf(nonNull[0]!);
  return undefined;
};

function field(name: string, path: string, schema: Schema, required: boolean, secrets: Set<string>): { el: HTMLElement; read: Reader } {
  const id = `f-${path.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const label = h('label', { for: id }, name, required ? h('span', { class: 'req', title: 'required' }, ' *') : null);
  const hint = schema.description ? h('small', { class: 'hint' }, schema.description) : null;
  const type = typeOf(schema);
  const dflt = schema.default;
  if (schema.enum) {
    const select = h(
      'select',
      { id, name: path },
      required ? null : h('option', { value: '' }, '(none)'),
      ...schema.enum.map((v) => h('option', { value: JSON.stringify(v), selected: JSON.stringify(v) === JSON.stringify(dflt) }, String(v))),
    );
    return {
      el: h('div', { class: 'field' }, label, select, hint),
      read: () => (select.value === '' ? { set: false } : { set: true, value: JSON.parse(select.value) }),
    };
  }
  if (type === 'boolean') {
    const box = h('input', { id, name: path, type: 'checkbox', checked: dflt === true });
    return { el: h('div', { class: 'field check' }, box, label, hint), read: () => ({ set: true, value: box.checked }) };
  }
  if (type === 'number' || type === 'integer') {
    const input = h('input', {
      id,
      name: path,
      type: 'number',
      step: type === 'integer' ? '1' : 'any',
      placeholder: dflt === undefined ? '' : String(dflt),
      required,
    });
    return {
      el: h('div', { class: 'field' }, label, input, hint),
      read: () => (input.value === '' ? { set: false } : { set: true, value: Number.isNaN(input.valueAsNumber) ? input.value : input.valueAsNumber }),
    };
  }
  if (type === 'string') {
    const secret = secrets.has(path);
    const input = h('input', {
      id,
      name: path,
      type: secret ? 'password' : 'text',
      autocomplete: 'off',
      placeholder: dflt === undefined ? (schema.pattern ? `matches ${schema.pattern}` : '') : String(dflt),
      required,
    });
    return {
      el: h('div', { class: 'field' }, label, input, secret ? h('small', { class: 'hint' }, 'secret: encrypted before it leaves this server') : hint),
      read: () => (input.value === '' ? { set: false } : { set: true, value: input.value }),
    };
  }
  if (type === 'object' && schema.properties) {
    const inner = fields(schema, path, secrets);
    return {
      el: h('fieldset', { class: 'field' }, h('legend', null, name, required ? ' *' : ''), ...inner.els),
      read: () => {
        const v = inner.read();
        return Object.keys(v).length === 0 && !required ? { set: false } : { set: true, value: v };
      },
    };
  }
  // Arrays, unions, anything else: JSON.
  const area = h('textarea', { id, name: path, rows: 2, placeholder: dflt === undefined ? 'JSON' : JSON.stringify(dflt), spellcheck: false });
  return {
    el: h('div', { class: 'field' }, label, area, hint ?? h('small', { class: 'hint' }, 'JSON')),
    read: () => {
      if (area.value.trim() === '') return { set: false };
      try {
        return { set: true, value: JSON.parse(area.value) };
      } catch {
        throw new Error(`${path} is not valid JSON`);
      }
    },
  };
}

function fields(schema: Schema, prefix: string, secrets: Set<string>): { els: HTMLElement[]; read: () => Record<string, unknown> } {
  const required = new Set(schema.required ?? []);
  const parts = Object.entries(schema.properties ?? {}).map(([k, sub]) => ({ k, ...field(k, prefix ? `${prefix}.${k}` : k, sub, required.has(k), secrets) }));
  return {
    els: parts.map((p) => p.el),
    read: () => {
      const out: Record<string, unknown> = {};
      for (const p of parts) {
        const r = p.read();
        if (r.set) out[p.k] = r.value;
      }
      return out;
    },
  };
}

/** The form of one event's payload. `secrets` are the workflow's secret paths (`card.number`). */
export function schemaForm(schema: Record<string, unknown>, secrets: string[]): SchemaForm {
  const s = schema as Schema;
  const secretSet = new Set(secrets);
  if (typeOf(s) === 'object' || s.properties) {
    const f = fields(s, '', secretSet);
    return { element: h('div', { class: 'schema-form' }, ...(f.els.length ? f.els : [h('small', { class: 'hint' }, 'no payload')])), read: f.read };
  }
  const area = h('textarea', { rows: 4, spellcheck: false, placeholder: '{ }' });
  return {
    element: h('div', { class: 'schema-form' }, area),
    read: () => {
      try {
        return area.value.trim() ? (JSON.parse(area.value) as Record<string, unknown>) : {};
      } catch {
        throw new Error('the payload is not valid JSON');
      }
    },
  };
}
