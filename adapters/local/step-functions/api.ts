/**
 * The Step Functions actions of the loopback endpoint, over in-memory state: state machines,
 * activities, executions and their tasks. Requests are checked with zod as AWS checks them and
 * answered with AWS's field names; dates are epoch seconds as the JSON protocol carries them.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { activityArn, checkName, executionArn, parseArn, stateMachineArn, type Scope } from './arns.js';
import { prepareDefinition, type PreparedDefinition } from './definition.js';
import { sfnErrors, SfnApiError } from './errors.js';
import { EXECUTION_STATUSES } from './events.js';
import { MAX_PAYLOAD_BYTES, orderedHistory, runExecution, type ExecutionRecord, type RunningExecution, type TaskHandler } from './execution.js';
import { TaskBoard } from './tasks.js';

interface MachineRecord {
  arn: string;
  name: string;
  roleArn: string;
  type: 'STANDARD';
  creationDate: Date;
  updateDate?: Date | undefined;
  prepared: PreparedDefinition;
}

interface ActivityRecord {
  arn: string;
  name: string;
  creationDate: Date;
}

export interface ServiceOptions {
  scope: Scope;
  taskHandlers: Record<string, TaskHandler>;
  activityPollTimeoutMs: number;
  /** Called on RUNNING and on each terminal status. */
  onStatus(record: ExecutionRecord): void;
}

const epoch = (d: Date): number => d.getTime() / 1000;
const ROLE_ARN = /^arn:aws:iam::\d{12}:role\/[\w+=,.@/-]+$/;
const DEFAULT_PAGE = 100;

const Arn = z.string().min(1).max(256);
const Page = { maxResults: z.number().int().min(0).max(1000).optional(), nextToken: z.string().min(1).max(1024).optional() };
const TaskToken = z.string().min(1).max(2048);

const schemas = {
  CreateStateMachine: z.object({
    name: z.string(),
    definition: z.string().min(1).max(1_048_576),
    roleArn: Arn,
    type: z.enum(['STANDARD', 'EXPRESS']).optional(),
  }),
  DescribeStateMachine: z.object({ stateMachineArn: Arn }),
  UpdateStateMachine: z.object({ stateMachineArn: Arn, definition: z.string().min(1).max(1_048_576).optional(), roleArn: Arn.optional() }),
  DeleteStateMachine: z.object({ stateMachineArn: Arn }),
  ListStateMachines: z.object(Page),
  CreateActivity: z.object({ name: z.string() }),
  DescribeActivity: z.object({ activityArn: Arn }),
  DeleteActivity: z.object({ activityArn: Arn }),
  ListActivities: z.object(Page),
  StartExecution: z.object({ stateMachineArn: Arn, name: z.string().optional(), input: z.string().optional(), traceHeader: z.string().max(256).optional() }),
  DescribeExecution: z.object({ executionArn: Arn }),
  StopExecution: z.object({ executionArn: Arn, error: z.string().max(256).optional(), cause: z.string().max(32_768).optional() }),
  ListExecutions: z.object({ stateMachineArn: Arn, statusFilter: z.enum(EXECUTION_STATUSES).optional(), ...Page }),
  GetExecutionHistory: z.object({ executionArn: Arn, reverseOrder: z.boolean().optional(), includeExecutionData: z.boolean().optional(), ...Page }),
  SendTaskSuccess: z.object({ taskToken: TaskToken, output: z.string() }),
  SendTaskFailure: z.object({ taskToken: TaskToken, error: z.string().max(256).optional(), cause: z.string().max(32_768).optional() }),
  SendTaskHeartbeat: z.object({ taskToken: TaskToken }),
  GetActivityTask: z.object({ activityArn: Arn, workerName: z.string().max(80).optional() }),
};

export type SfnAction = keyof typeof schemas;
export const SFN_ACTIONS = Object.keys(schemas) as SfnAction[];

function parse<A extends SfnAction>(action: A, body: unknown): z.infer<(typeof schemas)[A]> {
  const result = schemas[action].safeParse(body ?? {});
  if (result.success) return result.data as z.infer<(typeof schemas)[A]>;
  const issue = result.error.issues[0]!;
  const at = issue.path.join('.') || 'request';
  const detail = issue.code === 'invalid_type' && issue.input === undefined ? 'Member must not be null' : issue.message;
  throw sfnErrors.validation(`1 validation error detected: Value at '${at}' failed to satisfy constraint: ${detail}`);
}

function checkJson(text: string, what: 'input' | 'output'): unknown {
  const bytes = Buffer.byteLength(text);
  const fail = what === 'input' ? sfnErrors.invalidExecutionInput : sfnErrors.invalidOutput;
  if (bytes > MAX_PAYLOAD_BYTES) throw fail(`the ${what} is ${bytes} bytes; the limit is ${MAX_PAYLOAD_BYTES} (256 KiB)`);
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw fail(`the ${what} is not valid JSON (${(e as Error).message})`);
  }
}

/** Opaque page tokens; a token is only good for the listing it came from. */
function pageToken(scope: string, position: number): string {
  return Buffer.from(JSON.stringify({ s: scope, p: position })).toString('base64url');
}
function readPageToken(token: string | undefined, scope: string): number | null {
  if (token === undefined) return null;
  try {
    const t = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { s?: unknown; p?: unknown };
    if (t.s === scope && typeof t.p === 'number') return t.p;
  } catch {
    // falls through to the error
  }
  throw sfnErrors.invalidToken('nextToken is not valid for this request; pass the one the previous page returned with the same filters');
}

function paginate<T>(items: T[], maxResults: number | undefined, nextToken: string | undefined, scope: string): { page: T[]; nextToken?: string } {
  const from = readPageToken(nextToken, scope) ?? 0;
  const size = maxResults || DEFAULT_PAGE;
  const page = items.slice(from, from + size);
  return from + size < items.length ? { page, nextToken: pageToken(scope, from + size) } : { page };
}

/**
 * The service behind the endpoint. `call` runs one action and returns its response body, or
 * throws an {@link SfnApiError}.
 */
export class SfnLocalService {
  readonly board = new TaskBoard();
  private readonly machines = new Map<string, MachineRecord>();
  private readonly activities = new Map<string, ActivityRecord>();
  private readonly executions = new Map<string, ExecutionRecord>();
  private readonly running = new Map<string, RunningExecution>();
  private seq = 0;
  private closed = false;

  constructor(private readonly options: ServiceOptions) {}

  get scope(): Scope {
    return this.options.scope;
  }

  async call(action: string, body: unknown, signal: AbortSignal): Promise<unknown> {
    if (action === 'GetActivityTask') {
      const req = parse('GetActivityTask', body);
      this.activity(req.activityArn);
      const task = this.closed ? null : await this.board.poll(req.activityArn, req.workerName, this.options.activityPollTimeoutMs, signal);
      return task ?? {};
    }
    return this.callSync(action, body);
  }

  /** Every action but the long poll GetActivityTask answers at once. */
  callSync(action: string, body: unknown): unknown {
    switch (action as Exclude<SfnAction, 'GetActivityTask'>) {
      case 'CreateStateMachine':
        return this.createStateMachine(parse('CreateStateMachine', body));
      case 'DescribeStateMachine':
        return this.describeStateMachine(this.machine(parse('DescribeStateMachine', body).stateMachineArn));
      case 'UpdateStateMachine':
        return this.updateStateMachine(parse('UpdateStateMachine', body));
      case 'DeleteStateMachine':
        return this.deleteStateMachine(parse('DeleteStateMachine', body).stateMachineArn);
      case 'ListStateMachines': {
        const req = parse('ListStateMachines', body);
        const all = [...this.machines.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
        const { page, nextToken } = paginate(all, req.maxResults, req.nextToken, 'state-machines');
        return { stateMachines: page.map((m) => ({ stateMachineArn: m.arn, name: m.name, type: m.type, creationDate: epoch(m.creationDate) })), nextToken };
      }
      case 'CreateActivity':
        return this.createActivity(parse('CreateActivity', body).name);
      case 'DescribeActivity': {
        const a = this.activity(parse('DescribeActivity', body).activityArn);
        return { activityArn: a.arn, name: a.name, creationDate: epoch(a.creationDate) };
      }
      case 'DeleteActivity': {
        const arn = parse('DeleteActivity', body).activityArn;
        parseArn(arn, 'activity');
        this.activities.delete(arn);
        return {};
      }
      case 'ListActivities': {
        const req = parse('ListActivities', body);
        const all = [...this.activities.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
        const { page, nextToken } = paginate(all, req.maxResults, req.nextToken, 'activities');
        return { activities: page.map((a) => ({ activityArn: a.arn, name: a.name, creationDate: epoch(a.creationDate) })), nextToken };
      }
      case 'StartExecution':
        return this.startExecution(parse('StartExecution', body));
      case 'DescribeExecution':
        return this.describeExecution(this.execution(parse('DescribeExecution', body).executionArn));
      case 'StopExecution': {
        const req = parse('StopExecution', body);
        const e = this.execution(req.executionArn);
        this.running.get(e.executionArn)?.stop(req.error, req.cause);
        return { stopDate: epoch(e.stopDate ?? new Date()) };
      }
      case 'ListExecutions':
        return this.listExecutions(parse('ListExecutions', body));
      case 'GetExecutionHistory':
        return this.history(parse('GetExecutionHistory', body));
      case 'SendTaskSuccess': {
        const req = parse('SendTaskSuccess', body);
        checkJson(req.output, 'output');
        this.board.succeed(req.taskToken, req.output);
        return {};
      }
      case 'SendTaskFailure': {
        const req = parse('SendTaskFailure', body);
        this.board.fail(req.taskToken, req.error ?? '', req.cause ?? '');
        return {};
      }
      case 'SendTaskHeartbeat':
        this.board.heartbeat(parse('SendTaskHeartbeat', body).taskToken);
        return {};
      default:
        throw sfnErrors.unknownOperation(`AWSStepFunctions.${action}`);
    }
  }

  /** Stops every running execution without reporting it, and releases waiting polls. */
  close(): void {
    this.closed = true;
    this.board.closeAll();
    for (const [arn, run] of this.running) {
      this.running.delete(arn);
      run.stop('SfnLocal.Closed', 'sfn-local closed');
    }
  }

  private machine(arn: string): MachineRecord {
    parseArn(arn, 'stateMachine');
    const m = this.machines.get(arn);
    if (!m) throw sfnErrors.stateMachineDoesNotExist(arn);
    return m;
  }

  private activity(arn: string): ActivityRecord {
    parseArn(arn, 'activity');
    const a = this.activities.get(arn);
    if (!a) throw sfnErrors.activityDoesNotExist(arn);
    return a;
  }

  private execution(arn: string): ExecutionRecord {
    parseArn(arn, 'execution');
    const e = this.executions.get(arn);
    if (!e) throw sfnErrors.executionDoesNotExist(arn);
    return e;
  }

  private createStateMachine(req: z.infer<typeof schemas.CreateStateMachine>): unknown {
    checkName(req.name);
    if (req.type === 'EXPRESS') throw sfnErrors.stateMachineTypeNotSupported('EXPRESS');
    if (!ROLE_ARN.test(req.roleArn)) throw sfnErrors.invalidArn(req.roleArn, 'IAM role');
    const arn = stateMachineArn(this.scope, req.name);
    const existing = this.machines.get(arn);
    if (existing) {
      if (existing.prepared.text === req.definition && existing.roleArn === req.roleArn)
        return { stateMachineArn: arn, creationDate: epoch(existing.creationDate) };
      throw sfnErrors.stateMachineAlreadyExists(arn);
    }
    const prepared = prepareDefinition(req.definition);
    const machine: MachineRecord = { arn, name: req.name, roleArn: req.roleArn, type: 'STANDARD', creationDate: new Date(), prepared };
    this.machines.set(arn, machine);
    return { stateMachineArn: arn, creationDate: epoch(machine.creationDate) };
  }

  private describeStateMachine(m: MachineRecord): unknown {
    return {
      stateMachineArn: m.arn,
      name: m.name,
      status: 'ACTIVE',
      definition: m.prepared.text,
      roleArn: m.roleArn,
      type: m.type,
      creationDate: epoch(m.creationDate),
      loggingConfiguration: { level: 'OFF', includeExecutionData: false },
      tracingConfiguration: { enabled: false },
    };
  }

  private updateStateMachine(req: z.infer<typeof schemas.UpdateStateMachine>): unknown {
    const m = this.machine(req.stateMachineArn);
    if (req.definition === undefined && req.roleArn === undefined) {
      throw new SfnApiError('MissingRequiredParameter', 'Missing Required Parameter: pass definition or roleArn (or both)');
    }
    if (req.roleArn !== undefined && !ROLE_ARN.test(req.roleArn)) throw sfnErrors.invalidArn(req.roleArn, 'IAM role');
    // Running executions keep the definition they started with.
    if (req.definition !== undefined) m.prepared = prepareDefinition(req.definition);
    if (req.roleArn !== undefined) m.roleArn = req.roleArn;
    m.updateDate = new Date();
    return { updateDate: epoch(m.updateDate), revisionId: randomUUID() };
  }

  private deleteStateMachine(arn: string): unknown {
    parseArn(arn, 'stateMachine');
    if (!this.machines.delete(arn)) return {};
    for (const e of this.executions.values()) {
      if (e.stateMachineArn === arn && e.status === 'RUNNING') this.running.get(e.executionArn)?.stop('States.Runtime', 'the state machine was deleted');
    }
    return {};
  }

  private createActivity(name: string): unknown {
    checkName(name);
    const arn = activityArn(this.scope, name);
    const existing = this.activities.get(arn) ?? { arn, name, creationDate: new Date() };
    this.activities.set(arn, existing);
    return { activityArn: arn, creationDate: epoch(existing.creationDate) };
  }

  private startExecution(req: z.infer<typeof schemas.StartExecution>): unknown {
    const machine = this.machine(req.stateMachineArn);
    const name = checkName(req.name ?? randomUUID());
    const inputText = req.input ?? '{}';
    const input = checkJson(inputText, 'input');
    const arn = executionArn(this.scope, machine.name, name);
    const existing = this.executions.get(arn);
    if (existing) {
      // AWS's idempotency: the same name and input while it runs is the same execution.
      if (existing.status === 'RUNNING' && existing.input === inputText) return { executionArn: arn, startDate: epoch(existing.startDate) };
      throw sfnErrors.executionAlreadyExists(arn);
    }
    const record: ExecutionRecord = {
      seq: ++this.seq,
      executionArn: arn,
      stateMachineArn: machine.arn,
      stateMachineName: machine.name,
      roleArn: machine.roleArn,
      name,
      status: 'RUNNING',
      startDate: new Date(),
      input: inputText,
      traceHeader: req.traceHeader,
      history: [],
    };
    record.history.push({
      timestampMs: record.startDate.getTime(),
      source: 'execution',
      seq: 0,
      type: 'ExecutionStarted',
      details: { executionStartedEventDetails: { input: inputText, inputDetails: { truncated: false }, roleArn: machine.roleArn } },
    });
    this.executions.set(arn, record);
    this.options.onStatus(record);
    const run = runExecution(
      {
        scope: this.scope,
        board: this.board,
        taskHandlers: this.options.taskHandlers,
        activityExists: (a) => this.activities.has(a),
        onFinished: (r) => {
          this.running.delete(r.executionArn);
          if (!this.closed) this.options.onStatus(r);
        },
      },
      record,
      { name: machine.name, arn: machine.arn, prepared: machine.prepared },
      input,
    );
    if (record.status === 'RUNNING') this.running.set(arn, run);
    return { executionArn: arn, startDate: epoch(record.startDate) };
  }

  private describeExecution(e: ExecutionRecord): unknown {
    const out: Record<string, unknown> = {
      executionArn: e.executionArn,
      stateMachineArn: e.stateMachineArn,
      name: e.name,
      status: e.status,
      startDate: epoch(e.startDate),
      input: e.input,
      inputDetails: { included: true },
      redriveCount: 0,
      redriveStatus: 'NOT_REDRIVABLE',
    };
    if (e.stopDate) out['stopDate'] = epoch(e.stopDate);
    if (e.output !== undefined) {
      out['output'] = e.output;
      out['outputDetails'] = { included: true };
    }
    if (e.error !== undefined) out['error'] = e.error;
    if (e.cause !== undefined) out['cause'] = e.cause;
    if (e.traceHeader !== undefined) out['traceHeader'] = e.traceHeader;
    return out;
  }

  private listExecutions(req: z.infer<typeof schemas.ListExecutions>): unknown {
    const machine = this.machine(req.stateMachineArn);
    const scope = `executions:${machine.arn}:${req.statusFilter ?? ''}`;
    const before = readPageToken(req.nextToken, scope) ?? Number.POSITIVE_INFINITY;
    const size = req.maxResults || DEFAULT_PAGE;
    // Newest first, paged by creation order so executions started meanwhile do not shift pages.
    const matching = [...this.executions.values()]
      .filter((e) => e.stateMachineArn === machine.arn && e.seq < before && (!req.statusFilter || e.status === req.statusFilter))
      .sort((a, b) => b.seq - a.seq);
    const page = matching.slice(0, size);
    const last = page[page.length - 1];
    return {
      executions: page.map((e) => {
        const item: Record<string, unknown> = {
          executionArn: e.executionArn,
          stateMachineArn: e.stateMachineArn,
          name: e.name,
          status: e.status,
          startDate: epoch(e.startDate),
        };
        if (e.stopDate) item['stopDate'] = epoch(e.stopDate);
        return item;
      }),
      nextToken: matching.length > size && last ? pageToken(scope, last.seq) : undefined,
    };
  }

  private history(req: z.infer<typeof schemas.GetExecutionHistory>): unknown {
    const e = this.execution(req.executionArn);
    // Each event follows the one before it in its own run (an iteration or branch), as in AWS, so a
    // task's events lead back to its state's entry past other iterations' events.
    const lastOfRun = new Map<number, number>();
    const ordered = orderedHistory(e.history).map((h, i) => {
      const id = i + 1;
      const previousEventId = (h.run !== undefined ? lastOfRun.get(h.run) : undefined) ?? i;
      if (h.run !== undefined) lastOfRun.set(h.run, id);
      return { timestamp: h.timestampMs / 1000, type: h.type, id, previousEventId, ...h.details };
    });
    if (req.reverseOrder) ordered.reverse();
    const { page, nextToken } = paginate(ordered, req.maxResults, req.nextToken, `history:${e.executionArn}:${req.reverseOrder ? 'r' : 'f'}`);
    return { events: page, nextToken };
  }
}
