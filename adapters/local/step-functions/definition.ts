/**
 * Checking a state machine definition at CreateStateMachine, so what sfn-local cannot run as AWS
 * would is refused there with a clear `InvalidDefinition`, never run with a silently different
 * result; and preparing the copy the interpreter runs.
 *
 * The interpreter (`aws-local-stepfunctions`) runs JSONPath definitions: Pass, Task, Choice,
 * Wait, Succeed, Fail, Parallel and inline Map states, Retry and Catch, InputPath, Parameters,
 * ResultSelector, ResultPath, OutputPath and the intrinsic functions. Its validator accepts more
 * than that (JSONata, variables, distributed Map...), so those are refused here first.
 */
import { StateMachine, type StateMachineDefinition } from './interpreter.js';
import { sfnErrors } from './errors.js';

/**
 * What sfn-local refuses at CreateStateMachine, each with the reason, as listed in
 * docs/STEP-FUNCTIONS.md. Keys are definition fields (or `field: value`).
 */
export const REFUSED_FEATURES: ReadonlyArray<readonly [string, string]> = [
  ['QueryLanguage: JSONata', 'JSONata expressions are not evaluated; use JSONPath'],
  ['Assign', 'variables are not supported'],
  ['Arguments', 'a JSONata field; use Parameters'],
  ['Output', 'a JSONata field; use OutputPath/ResultSelector'],
  ['Items', 'a JSONata field; use ItemsPath'],
  ['Condition', 'a JSONata choice rule; use Variable with a comparison'],
  ['Credentials', 'cross-account task credentials are not supported'],
  ['ItemReader', 'distributed Map is not supported'],
  ['ItemBatcher', 'distributed Map is not supported'],
  ['ResultWriter', 'distributed Map is not supported'],
  ['ToleratedFailureCount', 'distributed Map is not supported'],
  ['ToleratedFailureCountPath', 'distributed Map is not supported'],
  ['ToleratedFailurePercentage', 'distributed Map is not supported'],
  ['ToleratedFailurePercentagePath', 'distributed Map is not supported'],
  ['Label', 'distributed Map is not supported'],
  ['ProcessorConfig.Mode: DISTRIBUTED', 'distributed Map is not supported; use Mode INLINE'],
  ['HeartbeatSecondsPath', 'use a fixed HeartbeatSeconds'],
  ['Wait longer than 24.8 days', 'timers of the interpreter cannot be that long'],
];

const REFUSED_FIELDS = new Map(REFUSED_FEATURES.filter(([k]) => !k.includes(':') && !k.includes(' ')).map(([k, why]) => [k, why]));

/** Node timers fire at once beyond 2^31-1 ms; longer timeouts are clamped to this. */
export const MAX_TIMER_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

/** A Task state as the runner needs it. */
export interface TaskStateInfo {
  name: string;
  resource: string;
  /** The definition's TimeoutSeconds, when a fixed number. */
  timeoutSeconds?: number | undefined;
  heartbeatSeconds?: number | undefined;
}

export interface PreparedDefinition {
  /** The definition as given (DescribeStateMachine returns it unchanged). */
  text: string;
  /** The copy the interpreter runs: AWS's default Task timeout, heartbeat catchers mapped. */
  runnable: StateMachineDefinition;
  /** Every Task state, nested ones included, by state name (names are unique in a definition). */
  tasks: Map<string, TaskStateInfo>;
  /** The definition's TimeoutSeconds, if any. */
  timeoutSeconds?: number | undefined;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Calls `visit` on every state of the definition, nested Parallel branches and Map processors included. */
function walkStates(machine: Json, path: string, visit: (name: string, state: Json, path: string) => void): void {
  const states = machine['States'];
  if (!isObject(states)) return;
  for (const [name, state] of Object.entries(states)) {
    if (!isObject(state)) continue;
    const here = `${path}/States/${name}`;
    visit(name, state, here);
    if (Array.isArray(state['Branches'])) state['Branches'].forEach((b, i) => isObject(b) && walkStates(b, `${here}/Branches/${i}`, visit));
    for (const key of ['Iterator', 'ItemProcessor']) {
      const inner = state[key];
      if (isObject(inner)) walkStates(inner, `${here}/${key}`, visit);
    }
  }
}

function refuseUnsupported(definition: Json): void {
  const refuse = (where: string, what: string, why: string): never => {
    throw sfnErrors.invalidDefinition(`SCHEMA_VALIDATION_FAILED: ${what} at ${where || '/'} is not supported by sfn-local (${why})`);
  };
  if (definition['QueryLanguage'] === 'JSONata') refuse('/', 'QueryLanguage "JSONata"', 'JSONata expressions are not evaluated; use JSONPath');
  walkStates(definition, '', (_name, state, path) => {
    if (state['QueryLanguage'] === 'JSONata') refuse(path, 'QueryLanguage "JSONata"', 'JSONata expressions are not evaluated; use JSONPath');
    for (const [field, why] of REFUSED_FIELDS) if (field in state) refuse(path, `field '${field}'`, why);
    if (Array.isArray(state['Choices'])) {
      state['Choices'].forEach(
        (c, i) =>
          isObject(c) && 'Condition' in c && refuse(`${path}/Choices/${i}`, "field 'Condition'", 'a JSONata choice rule; use Variable with a comparison'),
      );
    }
    const processor = state['ItemProcessor'];
    if (isObject(processor) && isObject(processor['ProcessorConfig']) && processor['ProcessorConfig']['Mode'] === 'DISTRIBUTED') {
      refuse(`${path}/ItemProcessor/ProcessorConfig`, 'Mode "DISTRIBUTED"', 'distributed Map is not supported; use Mode INLINE');
    }
    if (state['Type'] === 'Wait' && typeof state['Seconds'] === 'number' && state['Seconds'] > MAX_TIMER_SECONDS) {
      refuse(path, `Wait of ${state['Seconds']} s`, `sfn-local waits at most ${MAX_TIMER_SECONDS} s`);
    }
  });
}

/** The interpreter's copy: Tasks get AWS's default of no timeout and heartbeat catchers match. */
function makeRunnable(definition: Json, tasks: Map<string, TaskStateInfo>): StateMachineDefinition {
  const copy = structuredClone(definition);
  if (typeof copy['TimeoutSeconds'] === 'number') copy['TimeoutSeconds'] = Math.min(copy['TimeoutSeconds'], MAX_TIMER_SECONDS);
  walkStates(copy, '', (name, state) => {
    if (state['Type'] !== 'Task') return;
    const resource = String(state['Resource']);
    const timeout = state['TimeoutSeconds'];
    const heartbeat = state['HeartbeatSeconds'];
    tasks.set(name, {
      name,
      resource,
      timeoutSeconds: typeof timeout === 'number' ? timeout : undefined,
      heartbeatSeconds: typeof heartbeat === 'number' ? heartbeat : undefined,
    });
    // The interpreter times Tasks out after 60 s by default; AWS waits for ever (99999999 s).
    if (typeof timeout === 'number') state['TimeoutSeconds'] = Math.min(timeout, MAX_TIMER_SECONDS);
    else if (state['TimeoutSecondsPath'] === undefined) state['TimeoutSeconds'] = MAX_TIMER_SECONDS;
    // A missed heartbeat fails the task with States.Timeout, which AWS also lets a
    // States.HeartbeatTimeout catcher match.
    for (const key of ['Retry', 'Catch']) {
      const list = state[key];
      if (!Array.isArray(list)) continue;
      for (const rule of list) {
        if (isObject(rule) && Array.isArray(rule['ErrorEquals'])) {
          rule['ErrorEquals'] = rule['ErrorEquals'].map((e) => (e === 'States.HeartbeatTimeout' ? 'States.Timeout' : e));
        }
      }
    }
  });
  return copy as unknown as StateMachineDefinition;
}

/**
 * Parses and checks a definition; throws `InvalidDefinition` with the reason when it is not
 * valid ASL or uses a feature sfn-local does not run.
 */
export function prepareDefinition(text: string): PreparedDefinition {
  let definition: unknown;
  try {
    definition = JSON.parse(text);
  } catch (e) {
    throw sfnErrors.invalidDefinition(`INVALID_JSON_DESCRIPTION: ${(e as Error).message}`);
  }
  if (!isObject(definition)) throw sfnErrors.invalidDefinition('SCHEMA_VALIDATION_FAILED: the definition must be a JSON object with StartAt and States');
  refuseUnsupported(definition);
  try {
    // Validates the ASL (schema, reachable states, unique names, JSONPaths, task ARNs).
    new StateMachine(definition as unknown as StateMachineDefinition, { validationOptions: { checkPaths: true, checkArn: true } });
  } catch (e) {
    const message = (e as Error).message.replace(/^State machine definition is invalid, see error\(s\) below:\s*/, '').trim();
    throw sfnErrors.invalidDefinition(message.replace(/\n/g, '; '));
  }
  const tasks = new Map<string, TaskStateInfo>();
  const runnable = makeRunnable(definition, tasks);
  const timeout = definition['TimeoutSeconds'];
  return { text, runnable, tasks, timeoutSeconds: typeof timeout === 'number' ? timeout : undefined };
}
