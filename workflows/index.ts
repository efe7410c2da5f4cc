/** The example workflows that `jetstate dev` runs. */
import { order } from './order.js';

export { order };
export const workflows = [order];
