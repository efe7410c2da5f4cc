/**
 * jetstate's web view (`jetstate ui`, and `jetstate dev` opens it): a local page on 127.0.0.1
 * with the workflows of a namespace, a live searchable list of instances, each instance's
 * statechart, context, timers, tasks, children and history, and actions through the client API.
 */
export { createUiServer, UiServer } from './server.js';
export { DEFAULT_UI_PORT } from './options.js';
export type { UiServerOptions } from './options.js';
export type * from './protocol.js';
