/**
 * The workflow versions a process knows, by name, each with the machine runner that computes
 * its steps. Child workflows registered with `childWorkflow()` are registered with their parent.
 */
import type { WorkflowDefinition } from '../define/definition.js';
import { ErrorCode, fail } from '../errors.js';
import { MachineRunner } from './runner.js';

export interface Registered {
  def: WorkflowDefinition;
  runner: MachineRunner;
}

export class Registry {
  private readonly byName = new Map<string, Map<number, Registered>>();
  private readonly listeners = new Set<(def: WorkflowDefinition) => void>();

  add(def: WorkflowDefinition): void {
    let versions = this.byName.get(def.name);
    if (!versions) this.byName.set(def.name, (versions = new Map()));
    const existing = versions.get(def.version);
    if (existing && existing.def !== def) {
      fail(
        ErrorCode.InvalidOptions,
        `workflow '${def.name}' version ${def.version} is registered twice with different definitions; give each change a new version`,
      );
    }
    if (existing) return;
    const runner = new MachineRunner(def.machine, def.security.secrets);
    versions.set(def.version, { def, runner });
    for (const l of this.listeners) l(def);
    // Child workflows it invokes run here too.
    for (const child of runner.children.values()) this.add(child);
  }

  /** Tells `listener` of every definition registered from now on. */
  onAdd(listener: (def: WorkflowDefinition) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  find(name: string, version: number): Registered | undefined {
    return this.byName.get(name)?.get(version);
  }

  /** The newest registered version of a workflow. */
  latest(name: string): Registered | undefined {
    let best: Registered | undefined;
    for (const r of this.byName.get(name)?.values() ?? []) if (!best || r.def.version > best.def.version) best = r;
    return best;
  }

  /** Registers `def` if it is new and returns its runner. */
  runnerFor(def: WorkflowDefinition): MachineRunner {
    this.add(def);
    return this.byName.get(def.name)!.get(def.version)!.runner;
  }

  /** Whether some version of `name` is registered here. */
  has(name: string): boolean {
    return this.byName.has(name);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  versions(name: string): Registered[] {
    return [...(this.byName.get(name)?.values() ?? [])];
  }

  /** The secret paths of a workflow: those of all its registered versions. */
  secretPaths(name: string): string[] {
    const all = new Set<string>();
    for (const { def } of this.versions(name)) for (const s of def.security.secrets) all.add(s);
    return [...all];
  }
}
