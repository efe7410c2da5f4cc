/**
 * The vocabulary of the XState fidelity test: a case (one machine, its definition and its event
 * sequences), the steps of a sequence, the modes a sequence runs in, and what a divergence is.
 */
import type { AnyStateMachine } from 'xstate';
import type { WorkflowDefinition } from '../../engine/index.js';

/** An event as a sender gives it to `send()`. */
export type SentEvent = { type: string } & Record<string, unknown>;

/**
 * One step of a sequence:
 * - `send`: an event to the instance (or, with `to`, to the child workflow it invoked under that id);
 * - `wait`: real time passes while the engine runs (timers fire when due);
 * - `stall`: time passes while no timer can fire (the engine clock is held, as when every engine
 *   was down), then they all come due at once.
 */
export type Step = { send: SentEvent; to?: string } | { wait: number } | { stall: number };

/**
 * How a sequence reaches jetstate:
 * - `each`: one event at a time, each applied (and compared) before the next;
 * - `burst`: the events between two waits are sent back to back and applied in batches;
 * - `kill`: one event at a time against an engine process that is SIGKILLed (right after a state
 *   write) mid-sequence and replaced by a new one.
 */
export type Mode = 'each' | 'burst' | 'kill';
export const MODES: readonly Mode[] = ['each', 'burst', 'kill'];

/** What a comparison found different; the kind is what the summary counts. */
export type DivergenceKind =
  'value' | 'context' | 'status' | 'output' | 'timers' | 'children' | 'effects' | 'derived' | 'verify' | 'log' | 'failed' | 'refused';

export interface Divergence {
  kind: DivergenceKind;
  /** Where: 'start', 'step 3', 'end'. */
  at: string;
  detail: string;
}

/** A divergence jetstate has today: the test of that case and mode is a `todo` until it is fixed. */
export interface KnownDivergence {
  /** Names the divergence, e.g. 'overdue timers fire in scheduling order, not by due time'. */
  note: string;
  /** The modes it shows in; all modes when absent. */
  modes?: readonly Mode[];
  /** Which sequences show it (e.g. only those with a stall); all when absent. */
  needs?: (steps: readonly Step[]) => boolean;
  /** The kinds of divergence it explains; every divergence of the run when absent. */
  kinds?: readonly DivergenceKind[];
}

export interface FidelityCase {
  /** The workflow's name. */
  name: string;
  /** The XState features the case exercises (for the corpus list). */
  covers: readonly string[];
  /**
   * The durable definition. A thunk, because a machine jetstate cannot make durable must make
   * `defineWorkflow` throw (then `refused` says so).
   */
  define: () => WorkflowDefinition;
  /** Input besides `run` (every corpus machine copies `input.run` into `context.run`). */
  input?: Record<string, unknown>;
  /** Events for generated sequences (each may be picked any number of times, in any order). */
  alphabet: readonly Step[];
  /** Fixed sequences, each run in every mode. */
  sequences: readonly (readonly Step[])[];
  /** Child workflows the machine invokes, by invoke id (the value is the workflow name): compared too. */
  children?: Readonly<Record<string, string>>;
  /** `defineWorkflow` must refuse the machine; the text its error must contain. */
  refused?: string;
  /**
   * A machine whose steps the engine cannot make durable at run time (a `Date` in context, `spawn`
   * inside `assign`): the engine must fail the instance with an error containing this text, and
   * `verify` must replay that. It is not compared with XState, which runs on in memory.
   */
  failsWith?: string;
  /** Divergences jetstate has today. */
  known?: readonly KnownDivergence[];
  /**
   * The machine the reference runs instead of the definition's (only for the harness's own test,
   * which plants a divergence to show that a comparison can fail).
   */
  reference?: () => AnyStateMachine;
  /** Take part in the generated sequences of the in-suite run (a subset keeps it short). */
  generatedInSuite?: boolean;
  /** Take part in the in-suite SIGKILL run. */
  killInSuite?: boolean;
}

export const send = (type: string, payload: Record<string, unknown> = {}, to?: string): Step =>
  to ? { send: { type, ...payload }, to } : { send: { type, ...payload } };
export const wait = (ms: number): Step => ({ wait: ms });
export const stall = (ms: number): Step => ({ stall: ms });

/**
 * The send step in the middle of a sequence: where the kill mode crashes the engine, right after
 * its state write. A sequence with a stall has its engine down there already (no crash besides).
 */
export function killStep(steps: readonly Step[]): number | undefined {
  if (steps.some((s) => 'stall' in s)) return undefined;
  const sends = steps.flatMap((s, i) => ('send' in s && !s.to ? [i] : []));
  return sends[Math.floor(sends.length / 2)];
}

export const hasStall = (steps: readonly Step[]): boolean => steps.some((s) => 'stall' in s);

export function describeStep(s: Step): string {
  if ('send' in s) return `${s.to ? `${s.to}<-` : ''}${s.send.type}${Object.keys(s.send).length > 1 ? JSON.stringify({ ...s.send, type: undefined }) : ''}`;
  if ('wait' in s) return `wait ${s.wait}`;
  return `stall ${s.stall}`;
}
