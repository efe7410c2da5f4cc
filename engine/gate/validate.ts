/**
 * Schema checks of what senders send: an event against the workflow's declared events, a start
 * input against its input schema. Used by the client (to refuse at once) and by the event gate
 * (the authority). The verified identity is the engine's to set: a `$identity` in a payload is
 * removed.
 */
import { z } from 'zod';
import type { WorkflowDefinition } from '../define/definition.js';
import { IDENTITY_FIELD } from '../protocol/identity.js';

export type Checked<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Checks an event against the workflow's declared events; the value is the event to apply. */
export function checkEvent(workflow: WorkflowDefinition, id: string, event: unknown): Checked<{ type: string } & Record<string, unknown>> {
  const where = `workflow '${workflow.name}' instance '${id}'`;
  if (typeof event !== 'object' || event === null || Array.isArray(event)) {
    return { ok: false, reason: `${where}: an event must be an object like { type: 'PAY', ... }` };
  }
  const { type, [IDENTITY_FIELD]: _identity, ...payload } = event as Record<string, unknown>;
  if (typeof type !== 'string') return { ok: false, reason: `${where}: the event has no string 'type'` };
  const schema = workflow.events[type];
  if (!schema || !Object.hasOwn(workflow.events, type)) {
    return { ok: false, reason: `${where}: event type '${type}' is not declared; declared types: ${Object.keys(workflow.events).join(', ') || '(none)'}` };
  }
  const parsed = schema.safeParse(payload);
  if (!parsed.success) return { ok: false, reason: `${where}: payload of '${type}' is not valid:\n${z.prettifyError(parsed.error)}` };
  const value: { type: string } & Record<string, unknown> = { ...(parsed.data as Record<string, unknown>), type };
  // A loose schema (z.looseObject, z.record) may let a `$identity` through its parse: drop it again.
  delete value[IDENTITY_FIELD];
  return { ok: true, value };
}

/** Checks a start input against the workflow's input schema; the value is the parsed input. */
export function checkInput(workflow: WorkflowDefinition, id: string, input: unknown): Checked<unknown> {
  const parsed = workflow.input.safeParse(input);
  if (!parsed.success) return { ok: false, reason: `workflow '${workflow.name}' instance '${id}': input is not valid:\n${z.prettifyError(parsed.error)}` };
  return { ok: true, value: parsed.data };
}
