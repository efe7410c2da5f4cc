/**
 * The workflow definitions the UI knows: the ones it was given, and the child workflows their
 * machines invoke (registered with `childWorkflow()`), by name and version.
 */
import type { AnyStateMachine } from 'xstate';
import { isWorkflowDefinition, type WorkflowDefinition } from '../../engine/index.js';

/** The key `childWorkflow()` leaves on a child's machine (engine/child.ts). */
const CHILD = Symbol.for('jetstate.child');

export class WorkflowCatalog {
  private readonly byName = new Map<string, Map<number, WorkflowDefinition>>();

  constructor(workflows: readonly WorkflowDefinition[]) {
    for (const w of workflows) this.add(w);
  }

  private add(def: WorkflowDefinition): void {
    let versions = this.byName.get(def.name);
    if (!versions) this.byName.set(def.name, (versions = new Map()));
    if (versions.has(def.version)) return;
    versions.set(def.version, def);
    const actors = ((def.machine as AnyStateMachine).implementations?.actors ?? {}) as Record<string, unknown>;
    for (const logic of Object.values(actors)) {
      const child = (logic as { [CHILD]?: unknown } | null)?.[CHILD];
      if (isWorkflowDefinition(child)) this.add(child);
    }
  }

  /** Every definition, by name then version. */
  all(): WorkflowDefinition[] {
    return [...this.byName.keys()].sort().flatMap((n) => [...this.byName.get(n)!.values()].sort((a, b) => a.version - b.version));
  }

  /** The exact version, if loaded. */
  find(name: string, version: number): WorkflowDefinition | undefined {
    return this.byName.get(name)?.get(version);
  }

  /** The newest loaded version of a workflow. */
  newest(name: string): WorkflowDefinition | undefined {
    let best: WorkflowDefinition | undefined;
    for (const d of this.byName.get(name)?.values() ?? []) if (!best || d.version > best.version) best = d;
    return best;
  }

  /** The version asked for, else the newest (a record of an unloaded version is drawn with it). */
  resolve(name: string, version: number | undefined): WorkflowDefinition | undefined {
    return (version !== undefined ? this.find(name, version) : undefined) ?? this.newest(name);
  }
}
