/** The smallest workflow of the tests: `off`, and `on` after a FLIP. */
import { setup } from 'xstate';
import { z } from 'zod';
import { defineWorkflow } from '../engine/index.js';

export const toggle = defineWorkflow({
  name: 'toggle',
  version: 1,
  input: z.object({}),
  events: { FLIP: z.object({}) },
  machine: setup({}).createMachine({ initial: 'off', states: { off: { on: { FLIP: 'on' } }, on: {} } }),
});
