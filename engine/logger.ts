/** Where jetstate writes what it has to say; the default writes warnings and errors to stderr. */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export const consoleLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: (m, f) => console.error(`jetstate warn: ${m}`, f ?? ''),
  error: (m, f) => console.error(`jetstate error: ${m}`, f ?? ''),
};
