/** The example workflows that `jetstate dev` runs. */
import { approval } from './approval.js';
import { order } from './order.js';
import { payment } from './payment.js';

// The hybrid example needs the optional @aws-sdk/client-sfn: without it the others still load.
const hybridModule = await import('./hybrid.js').catch((e: unknown) => {
  if ((e as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && /@aws-sdk\//.test((e as Error).message)) return undefined;
  throw e;
});

/** The hybrid example (workflows/hybrid.ts), or undefined when `@aws-sdk/client-sfn` is not installed. */
export const hybrid = hybridModule?.hybrid;
export { approval, order, payment };
export const workflows = [order, approval, payment, ...(hybrid ? [hybrid] : [])];
