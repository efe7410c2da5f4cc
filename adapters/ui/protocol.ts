/**
 * What the UI server and the page say to each other: the JSON bodies of the `/api` routes and of
 * the server-sent events. Type-only, so the browser bundle imports it without pulling server code.
 */

/** One instance as the list shows it, from the in-memory index (never from a KV read). */
export interface InstanceRow {
  workflow: string;
  id: string;
  version: number;
  /** Any status string the record carries ('running', 'done', 'failed', 'stopped', ...). */
  status: string;
  /** The state value in words: `paid`, or `shipping.packed, billing.sent` for parallel states. */
  state: string;
  revision: number;
  createdAtMs: number;
  updatedAtMs: number;
}

export interface InstancePage {
  rows: InstanceRow[];
  /** Cursor of the next page (the last row's key), when there is one. */
  next: string | null;
  /** Cursor of the previous page (the first row's key), when there is one. */
  prev: string | null;
  /** Instances matching the filter in all pages. */
  total: number;
  /** False while the index is still reading the bucket at start-up. */
  ready: boolean;
}

export interface WorkflowSummary {
  name: string;
  /** Each version loaded or found in records; `registered` is false for versions only records name. */
  versions: Array<{ version: number; registered: boolean; counts: Record<string, number> }>;
  /** Instances by status over every version. */
  counts: Record<string, number>;
  /** Events applied per second over the last 10 seconds (revision increments seen by the watch). */
  eventsPerSecond: number;
  /** Instances started per second over the last 10 seconds. */
  startsPerSecond: number;
  /** Among the newest dead letters read (`deadLettersScanned`), those of this workflow. */
  deadLetters: number;
}

export interface Overview {
  namespace: string;
  ready: boolean;
  instances: number;
  workflows: WorkflowSummary[];
  /** The most recently changed instances, newest first. */
  recent: InstanceRow[];
  statuses: string[];
  /** Newest dead letters read (at most this many are counted per workflow). */
  deadLettersScanned: number;
  /** Client methods this server can call (send, verify, and cancel/terminate once the client has them). */
  actions: string[];
  reveal: boolean;
}

/** A state node of a statechart, drawn by the page. */
export interface ChartNode {
  /** XState state node id, e.g. `order.paid`. */
  id: string;
  key: string;
  /** Path from the root: the keys that `value` names, e.g. ['shipping', 'packed']. */
  path: string[];
  type: 'atomic' | 'compound' | 'parallel' | 'final' | 'history';
  /** Id of the initial child of a compound state. */
  initial: string | null;
  invokes: Array<{ id: string; src: string }>;
  /** Entry and exit action names, for the node's label. */
  entry: string[];
  exit: string[];
  children: ChartNode[];
}

export interface ChartEdge {
  id: string;
  source: string;
  /** Null for a transition without target (it stays in the source). */
  target: string | null;
  /** What the page prints on the edge: `PAY`, `after paymentWindow`, `done: provision`, `always`. */
  label: string;
  kind: 'event' | 'after' | 'always' | 'done' | 'error';
  /** The XState event type (an `after` edge's is the timer id the record keeps). */
  eventType: string;
  guard: string | null;
  actions: string[];
}

export interface Chart {
  workflow: string;
  version: number;
  root: ChartNode;
  edges: ChartEdge[];
}

/** A JSON Schema (draft 2020-12 as zod 4 emits it), with the workflow's secret paths marked. */
export interface EventForm {
  type: string;
  schema: Record<string, unknown>;
  /** Dotted paths of fields the workflow encrypts: the form shows them as password inputs. */
  secrets: string[];
}

export interface HistoryRow {
  kind: string;
  revision: number;
  seq: number;
  timeMs: number;
  /** The event's type in words: `PAY`, `timer xstate.after...`, `task provision done`. */
  label: string;
  event: unknown;
  from: unknown;
  to: unknown;
  status: string;
  reason?: string;
  identity?: { method: string; subject: string; issuer: string; roles: string[] };
  /** Trace id of this transition, where the engine recorded one (the last transition's, today). */
  traceId?: string;
  traceUrl?: string;
}

export interface InstanceDetail {
  workflow: string;
  id: string;
  version: number;
  status: string;
  value: unknown;
  /** Context as the client read it: secrets `[encrypted:<kid>]` unless the server reveals them. */
  context: unknown;
  output?: unknown;
  error?: string;
  revision: number;
  createdAtMs: number;
  updatedAtMs: number;
  /** Active state node paths, dotted (`shipping`, `shipping.packed`). */
  active: string[];
  timers: Array<{ id: string; dueAtMs: number; eventType: string }>;
  tasks: Array<{ id: string; src: string; startedAtMs: number; attempt?: number; lastError?: string }>;
  children: Array<{ invokeId: string; workflow: string; id: string; status: string | null; state: string | null }>;
  parent: { workflow: string; id: string; invokeId: string } | null;
  trace: { traceparent: string; traceId: string; url: string | null } | null;
  history: HistoryRow[];
  /** Step Functions executions this instance waits for, with their console links. */
  executions?: PendingExecution[];
  /** Set when the client could not read the record (unknown status, unregistered version ...). */
  problem?: string;
  /** Whether this page was served with secrets revealed. */
  revealed: boolean;
}

export interface SendRequest {
  event: { type: string } & Record<string, unknown>;
  token?: string;
  idempotencyKey?: string;
}

/** What became of an event the page sent. */
export interface SendOutcome {
  seq: number;
  duplicate: boolean;
  /** `applied` or `rejected` once history shows it; `accepted` when no engine applied it in time. */
  outcome: 'applied' | 'rejected' | 'accepted';
  reason?: string;
  to?: unknown;
}

export interface ActionRequest {
  reason?: string;
  token?: string;
}

/** Every error the API answers: the engine's code and message, shown as they are. */
export interface ApiError {
  error: { code: string; message: string };
}

export interface DeadLetterRow {
  workflow: string;
  id: string;
  seq: number;
  subject: string;
  reason: string;
  timeMs: number;
  size: number;
}

export interface PendingExecution {
  key: string;
  workflow: string;
  id: string;
  invokeId: string;
  executionArn: string;
  region: string;
  startedAtMs: number;
  consoleUrl: string;
}

export interface DeadLettersView {
  deadLetters: DeadLetterRow[];
  /** Null when the namespace has no `<ns>_sfn` bucket (no Step Functions stage ran). */
  executions: PendingExecution[] | null;
}

/** Pushed on `/api/stream`: the index changed (throttled); pages that show it fetch again. */
export interface IndexTick {
  version: number;
  ready: boolean;
  instances: number;
}
