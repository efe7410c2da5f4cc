/**
 * OpenTelemetry for the CLI, which is a host application: it sets up `@opentelemetry/sdk-node`
 * from the standard `OTEL_*` environment variables (OTLP over HTTP by default), so
 * `OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 jetstate dev` sends traces and metrics to
 * Jaeger, Tempo or any collector. Without an endpoint or exporter configured, or with
 * `OTEL_SDK_DISABLED=true`, nothing is set up and the engine's tracing stays a no-op.
 *
 * The SDK is an optional peer dependency: the library needs only `@opentelemetry/api`, and the
 * SDK brings some 70 packages (gRPC, protobuf) that an embedding service does not want. When
 * OTEL_* asks for export and the SDK is not installed, the CLI says so once and runs untraced.
 */
const CONFIGURING = ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_TRACES_EXPORTER'];
const TIMEOUTS = ['OTEL_EXPORTER_OTLP_TIMEOUT', 'OTEL_EXPORTER_OTLP_TRACES_TIMEOUT', 'OTEL_EXPORTER_OTLP_METRICS_TIMEOUT'];

/**
 * How long a one-shot command's exporter waits for the collector. Its spans are exported once, at
 * exit; the SDK's default (10 s, with retries) made every command hang that long when no
 * collector listened. A collector on the same network answers in milliseconds.
 */
export const ONE_SHOT_EXPORT_TIMEOUT_MS = 500;

/** How long `shutdown()` waits for the SDK before giving up on what is still buffered. */
const SHUTDOWN_DEADLINE_MS = 1_500;

export interface CliTelemetry {
  /**
   * Flushes what is buffered and stops the exporters; says once on stderr if the collector did
   * not answer. 'late' when the SDK had not finished by the deadline (its requests may still be open).
   */
  shutdown(): Promise<'done' | 'failed' | 'late'>;
}

export interface TelemetryOptions {
  /** A command that exits after one action: its exporters time out after {@link ONE_SHOT_EXPORT_TIMEOUT_MS}. */
  oneShot: boolean;
}

const endpointOf = (env: NodeJS.ProcessEnv): string =>
  env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] || env['OTEL_EXPORTER_OTLP_ENDPOINT'] || 'http://localhost:4318 (the default)';

/** True when `e` says the SDK package itself is not installed (not a module inside it that failed). */
function sdkMissing(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  return (err?.code === 'ERR_MODULE_NOT_FOUND' || err?.code === 'MODULE_NOT_FOUND') && /['"]@opentelemetry\/sdk-node['"]/.test(err.message ?? '');
}

export async function startTelemetry(options: TelemetryOptions, env: NodeJS.ProcessEnv = process.env): Promise<CliTelemetry | undefined> {
  if (env['OTEL_SDK_DISABLED']?.toLowerCase() === 'true') return undefined;
  const asking = CONFIGURING.find((k) => env[k]);
  if (!asking) return undefined;
  let sdkModule: typeof import('@opentelemetry/sdk-node');
  try {
    sdkModule = await import('@opentelemetry/sdk-node');
  } catch (e) {
    if (!sdkMissing(e)) throw e;
    process.stderr.write(
      `jetstate: ${asking} is set, but @opentelemetry/sdk-node is not installed, so nothing is exported; ` +
        `install it beside jetstate (npm install @opentelemetry/sdk-node) or unset ${asking}\n`,
    );
    return undefined;
  }
  // Metrics follow traces to the same endpoint unless told otherwise; without an endpoint they stay off.
  if (!env['OTEL_METRICS_EXPORTER'] && !env['OTEL_EXPORTER_OTLP_ENDPOINT'] && !env['OTEL_EXPORTER_OTLP_METRICS_ENDPOINT'])
    env['OTEL_METRICS_EXPORTER'] = 'none';
  if (!env['OTEL_LOGS_EXPORTER']) env['OTEL_LOGS_EXPORTER'] = 'none';
  // A timeout the user set wins; a one-shot command otherwise gives up quickly on a silent collector.
  if (options.oneShot && !TIMEOUTS.some((k) => env[k])) env['OTEL_EXPORTER_OTLP_TIMEOUT'] = String(ONE_SHOT_EXPORT_TIMEOUT_MS);
  const { NodeSDK, resources } = sdkModule;
  const sdk = new NodeSDK({
    serviceName: env['OTEL_SERVICE_NAME'] || 'jetstate',
    // Not the process detector: it exports the command line, and `jetstate start --input` and
    // `send` carry payloads there. The process attributes that say nothing of the input are kept.
    resourceDetectors: [resources.envDetector, resources.hostDetector, resources.osDetector],
    resource: resources.resourceFromAttributes({
      'process.pid': process.pid,
      'process.runtime.name': 'nodejs',
      'process.runtime.version': process.versions.node,
    }),
  });
  sdk.start();
  return {
    shutdown: async () => {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), SHUTDOWN_DEADLINE_MS)));
      try {
        const outcome = await Promise.race([sdk.shutdown().then(() => 'done' as const), deadline]);
        if (outcome === 'late')
          process.stderr.write(`jetstate: the OpenTelemetry collector at ${endpointOf(env)} did not answer in time; what was not exported yet is dropped\n`);
        return outcome;
      } catch (e) {
        process.stderr.write(
          `jetstate: the OpenTelemetry collector at ${endpointOf(env)} did not answer (${(e as Error).message}); this command's traces were not exported\n`,
        );
        return 'failed';
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
