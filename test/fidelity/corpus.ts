/**
 * The corpus of the XState fidelity test: machines covering XState v5's statechart semantics and
 * the actions and actors users bring, each as a durable definition with its fixed sequences and
 * an alphabet for generated ones. See docs/XSTATE.md for what each shows.
 */
import type { WorkflowDefinition } from '../../engine/index.js';
import { workflowsOf } from './harness.js';
import { actorCases } from './corpus/actors.js';
import { coreCases } from './corpus/core.js';
import { divergenceCases } from './corpus/divergences.js';
import { timerCases } from './corpus/timers.js';
import type { FidelityCase } from './types.js';

export const corpus: readonly FidelityCase[] = [...coreCases, ...timerCases, ...actorCases, ...divergenceCases];

/** A case's definition, or the error `defineWorkflow` threw. */
export function defineCase(c: FidelityCase): WorkflowDefinition | Error {
  try {
    return c.define();
  } catch (e) {
    return e as Error;
  }
}

const defined = new Map<string, WorkflowDefinition | Error>();

/** Each case is defined once per process (engines and tests must share the same definitions). */
export function definitionOf(c: FidelityCase): WorkflowDefinition | Error {
  let d = defined.get(c.name);
  if (!d) defined.set(c.name, (d = defineCase(c)));
  return d;
}

/** Every workflow the corpus defines (children included), for an engine to register. */
export function corpusWorkflows(): WorkflowDefinition[] {
  const all = new Map<string, WorkflowDefinition>();
  for (const c of corpus) {
    const d = definitionOf(c);
    if (!(d instanceof Error)) workflowsOf(d, all);
  }
  return [...all.values()];
}
