/** The hub and leaf node of the edge tests (see adapters/nats-server/edge-topology.ts). */
import { startEdgeTopology, type EdgeTopology } from '../../adapters/nats-server/edge-topology.js';

export type Topology = EdgeTopology & { dispose(): Promise<void> };

export async function startTopology(options: { leafJetStream: boolean }): Promise<Topology> {
  const topology = await startEdgeTopology(options);
  return Object.assign(topology, { dispose: () => topology.stop() });
}
