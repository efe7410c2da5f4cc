/**
 * The send form of each event a workflow declares: its zod schema as JSON Schema (zod 4's
 * `z.toJSONSchema`, input side, so defaulted fields are optional), from which the page builds the
 * form. The client validates again with the zod schema itself when the event is sent, so a form
 * that allows too much only costs an error message, never a bad event.
 */
import { z } from 'zod';
import type { WorkflowDefinition } from '../../engine/index.js';
import type { EventForm } from './protocol.js';

const cache = new WeakMap<WorkflowDefinition, EventForm[]>();

/** The forms of a workflow's events, in declaration order. */
export function eventFormsOf(workflow: WorkflowDefinition): EventForm[] {
  let forms = cache.get(workflow);
  if (!forms) {
    forms = Object.entries(workflow.events).map(([type, schema]) => ({
      type,
      schema: jsonSchemaOf(schema),
      secrets: [...workflow.security.secrets],
    }));
    cache.set(workflow, forms);
  }
  return forms;
}

function jsonSchemaOf(schema: z.ZodType): Record<string, unknown> {
  try {
    // Unrepresentable parts (dates, transforms) become `{}`: the page offers JSON for them.
    return z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  } catch {
    return {};
  }
}
