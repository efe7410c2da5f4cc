/** A workflow that is done at once: an instance that can be deleted right after its start. */
import { setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow } from '../engine/index.js';

export const oneShot = defineWorkflow({
  name: 'oneshot',
  version: 1,
  input: z.object({}),
  events: {},
  machine: setup({}).createMachine({ initial: 'done', states: { done: { type: 'final' } } }),
});
