/**
 * `jetstate ui`: the web view of a namespace on 127.0.0.1, until Ctrl-C. `jetstate dev` starts
 * the same beside its engine (unless --no-ui).
 */
import { ErrorCode, JetstateError, type WorkflowDefinition } from '../../engine/index.js';
import { createUiServer, DEFAULT_UI_PORT, type UiServer } from '../ui/index.js';
import { keyRingText, loadWorkflows, serverOf, type CliValues } from './commands.js';

export function portOf(values: CliValues): number | undefined {
  if (values.port === undefined) return undefined;
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535)
    throw new JetstateError(ErrorCode.InvalidOptions, `--port must be a port number 0-65535 (0 picks a free one), got '${values.port}'`);
  return port;
}

/** Starts the web view with the CLI's flags; --reveal needs the key ring, as for `get --reveal`. */
export async function startUi(
  values: CliValues,
  url: string,
  workflows: WorkflowDefinition[],
  options: { fallbackToFreePort?: boolean } = {},
): Promise<UiServer> {
  const keyRing = keyRingText();
  if (values.reveal && !keyRing) throw new JetstateError(ErrorCode.InvalidOptions, '--reveal needs the key ring in JETSTATE_KEYS');
  const base = {
    servers: url,
    workflows,
    ...(values.namespace ? { namespace: values.namespace } : {}),
    ...(values.domain ? { jsDomain: values.domain } : {}),
    ...(keyRing ? { keyRing } : {}),
    reveal: values.reveal === true,
    ...(values['trace-url'] ? { traceUrl: values['trace-url'] } : {}),
  };
  const port = portOf(values);
  try {
    return await createUiServer({ ...base, port: port ?? DEFAULT_UI_PORT });
  } catch (e) {
    // `jetstate dev` should not fail because the default port is taken: it takes a free one.
    if (options.fallbackToFreePort && port === undefined && e instanceof JetstateError && /in use/.test(e.message)) return createUiServer({ ...base, port: 0 });
    throw e;
  }
}

export async function runUi(values: CliValues): Promise<number> {
  const workflows = await loadWorkflows(values.workflows);
  const ui = await startUi(values, serverOf(values), workflows);
  process.stdout.write(`jetstate ui: ${ui.url} (namespace ${values.namespace ?? 'jetstate'}${values.reveal ? ', secrets revealed' : ''}); Ctrl-C to stop\n`);
  await new Promise<void>((done) => {
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  await ui.close();
  return 0;
}
