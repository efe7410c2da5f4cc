/**
 * Runs jobs (a case, a sequence, a mode) against jetstate and the reference, many at a time:
 * `each` and `burst` jobs share one engine in this process; a job with a stall gets an engine of
 * its own (it holds that engine's clock); `kill` jobs run in batches against an engine process
 * that is SIGKILLed mid-batch and replaced.
 */
import type { WorkflowDefinition } from '../../engine/index.js';
import { definitionOf, corpusWorkflows } from './corpus.js';
import { runSequence, warningsAbout, workflowsOf } from './harness.js';
import { InProcessTarget, ProcessTarget, type Target } from './targets.js';
import { hasStall, killStep, type Divergence, type FidelityCase, type KnownDivergence, type Mode, type Step } from './types.js';

export interface Job {
  c: FidelityCase;
  steps: readonly Step[];
  mode: Mode;
  /** 'fixed 1', 'generated 7'. */
  label: string;
}

export interface JobResult {
  job: Job;
  /** Divergences, with the engine's warnings about the workflow. */
  divergences: Divergence[];
  /** How late jetstate fired its latest timer (not a divergence). */
  maxLatenessMs: number;
  durationMs: number;
}

let runCounter = 0;
const nextRun = (c: FidelityCase): string => `${c.name.slice(0, 12)}${(runCounter++).toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

/**
 * The known divergences that explain every divergence of a run, or undefined when one is not
 * explained (or there is none). A case's note explains the kinds it names (all when it names none).
 * (Timers overdue together used to fire in the order the timer service got them back; the step
 * fires them by due time now, so a timer fired out of order is a divergence like any other.)
 */
export function explain(job: Job, divergences: readonly Divergence[]): KnownDivergence[] | undefined {
  if (divergences.length === 0) return undefined;
  const applicable = (job.c.known ?? []).filter((k) => (!k.modes || k.modes.includes(job.mode)) && (!k.needs || k.needs(job.steps)));
  const used = new Set<KnownDivergence>();
  for (const d of divergences) {
    const k = applicable.find((x) => !x.kinds || x.kinds.includes(d.kind));
    if (!k) return undefined;
    used.add(k);
  }
  return [...used];
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

async function attempt(target: Target, job: Job, def: WorkflowDefinition): Promise<JobResult> {
  const killAt = job.mode === 'kill' ? killStep(job.steps) : undefined;
  const r = await runSequence(target, { c: job.c, def, steps: job.steps, mode: job.mode, run: nextRun(job.c), ...(killAt !== undefined ? { killAt } : {}) });
  return { job, divergences: [...r.divergences, ...warningsAbout(target, def.name)], maxLatenessMs: r.maxLatenessMs, durationMs: r.durationMs };
}

export interface RunOptions {
  /** Jobs running at once on the shared engine. */
  concurrency?: number;
  /** Kill jobs per engine process. */
  killBatch?: number;
  /** Engine processes of kill jobs running at once (each with its batch). */
  killLanes?: number;
  onResult?: (r: JobResult) => void;
}

/** Runs the jobs; results in the order of the jobs. Refused cases yield no result. */
export async function runJobs(url: string, jobs: readonly Job[], options: RunOptions = {}): Promise<JobResult[]> {
  const runnable = jobs.filter((j) => !(definitionOf(j.c) instanceof Error));
  const shared = runnable.filter((j) => j.mode !== 'kill' && !hasStall(j.steps));
  const alone = runnable.filter((j) => j.mode !== 'kill' && hasStall(j.steps));
  const kills = runnable.filter((j) => j.mode === 'kill');
  const results = new Map<Job, JobResult>();
  const done = (r: JobResult): JobResult => {
    results.set(r.job, r);
    options.onResult?.(r);
    return r;
  };
  // Every workflow the jobs run, the corpus's and any other (a planted case): an engine serves
  // only the workflows it registers.
  const byName = new Map(corpusWorkflows().map((w) => [w.name, w]));
  for (const j of runnable) {
    const d = definitionOf(j.c);
    if (!(d instanceof Error)) workflowsOf(d, byName);
  }
  const workflows = [...byName.values()];
  const runShared = async (): Promise<void> => {
    if (shared.length === 0) return;
    const target = await InProcessTarget.open(url, workflows);
    try {
      await mapLimit(shared, options.concurrency ?? 12, async (j) => done(await attempt(target, j, definitionOf(j.c) as WorkflowDefinition)));
    } finally {
      await target.close();
    }
  };
  const runAlone = (): Promise<unknown> =>
    mapLimit(alone, 2, async (j) => {
      const def = definitionOf(j.c) as WorkflowDefinition;
      const target = await InProcessTarget.open(url, workflows, 'fidelitystall');
      try {
        return done(await attempt(target, j, def));
      } finally {
        await target.close();
      }
    });
  const runKills = async (): Promise<void> => {
    const size = options.killBatch ?? 8;
    const batches = Array.from({ length: Math.ceil(kills.length / size) }, (_, i) => kills.slice(i * size, (i + 1) * size));
    await mapLimit(batches, options.killLanes ?? 1, async (batch) => {
      const target = await ProcessTarget.open(url);
      try {
        await Promise.all(batch.map(async (j) => done(await attempt(target, j, definitionOf(j.c) as WorkflowDefinition))));
      } finally {
        await target.close();
      }
    });
  };
  await Promise.all([runShared(), runAlone(), runKills()]);
  return jobs.flatMap((j) => {
    const r = results.get(j);
    return r ? [r] : [];
  });
}
