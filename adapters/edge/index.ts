/** jetstate/adapters/edge: engines of edge sites on NATS leaf nodes (docs/EDGE.md). */
export * from './relay.js';
export * from './read-view.js';
