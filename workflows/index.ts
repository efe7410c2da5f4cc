/** The example workflows that `jetstate dev` runs. */
import { approval } from './approval.js';
import { order } from './order.js';

export { approval, order };
export const workflows = [order, approval];
