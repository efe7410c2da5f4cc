/**
 * OpenTelemetry for the CLI, which is a host application: it sets up `@opentelemetry/sdk-node`
 * from the standard `OTEL_*` environment variables (OTLP over HTTP by default), so
 * `OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 jetstate dev` sends traces and metrics to
 * Jaeger, Tempo or any collector. Without an endpoint or exporter configured, or with
 * `OTEL_SDK_DISABLED=true`, nothing is set up and the engine's tracing stays a no-op.
 */
const CONFIGURING = ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_TRACES_EXPORTER'];

export interface CliTelemetry {
  /** Flushes what is buffered and stops the exporters. */
  shutdown(): Promise<void>;
}

export async function startTelemetry(env: NodeJS.ProcessEnv = process.env): Promise<CliTelemetry | undefined> {
  if (env['OTEL_SDK_DISABLED']?.toLowerCase() === 'true') return undefined;
  if (!CONFIGURING.some((k) => env[k])) return undefined;
  // Metrics follow traces to the same endpoint unless told otherwise; without an endpoint they stay off.
  if (!env['OTEL_METRICS_EXPORTER'] && !env['OTEL_EXPORTER_OTLP_ENDPOINT'] && !env['OTEL_EXPORTER_OTLP_METRICS_ENDPOINT']) env['OTEL_METRICS_EXPORTER'] = 'none';
  if (!env['OTEL_LOGS_EXPORTER']) env['OTEL_LOGS_EXPORTER'] = 'none';
  const { NodeSDK, resources } = await import('@opentelemetry/sdk-node');
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
      try {
        await sdk.shutdown();
      } catch (e) {
        process.stderr.write(`jetstate: telemetry shutdown: ${(e as Error).message}\n`);
      }
    },
  };
}
