/**
 * `sendToInstance`: an XState action that sends an event to another instance's inbox (its event
 * stream), after the sender's state is written, at least once and deduplicated by a stable
 * message id.
 */
import type { EventObject } from 'xstate';
import { isWorkflowDefinition, type WorkflowDefinition } from './definition.js';
import { ErrorCode, JetstateError } from '../errors.js';

export const SEND_ACTION = 'jetstate.send';
const RESOLVE = Symbol.for('jetstate.send.resolve');

export interface InstanceAddress {
  workflow: string | WorkflowDefinition;
  id: string;
}

type ArgsOf<TContext, TEvent> = { context: TContext; event: TEvent };
type Dynamic<T, TContext, TEvent> = T | ((args: ArgsOf<TContext, TEvent>) => T);

/** What the step resolves a send to. */
export interface ResolvedSend {
  workflow: string;
  id: string;
  event: EventObject;
  /** A parent's send to its child (`sendTo` a child): the invoke id, so only that child takes it. */
  toChild?: string;
}

/**
 * An action that sends `event` to the instance `target` (a workflow and an instance id, or a
 * function of context and event that returns them).
 *
 * @example
 * ```ts
 * on: { SHIPPED: { actions: sendToInstance(({ context }) => ({ workflow: 'invoice', id: context.invoiceId }), { type: 'ORDER_SHIPPED' }) } }
 * ```
 */
export function sendToInstance<TContext = any, TEvent extends EventObject = any>(
  target: Dynamic<InstanceAddress, TContext, TEvent>,
  event: Dynamic<EventObject, TContext, TEvent>,
): (args: ArgsOf<TContext, TEvent>) => void {
  const resolve = (args: ArgsOf<TContext, TEvent>): ResolvedSend => {
    const to = typeof target === 'function' ? target(args) : target;
    const ev = typeof event === 'function' ? event(args) : event;
    const workflow = isWorkflowDefinition(to.workflow) ? to.workflow.name : to.workflow;
    if (typeof workflow !== 'string' || typeof to.id !== 'string' || typeof ev?.type !== 'string') {
      throw new JetstateError(
        ErrorCode.InvalidEvent,
        `sendToInstance: the target must be { workflow, id } and the event an object with a type; got ${JSON.stringify({ to, ev })}`,
      );
    }
    return { workflow, id: to.id, event: ev };
  };
  // XState calls a function action by its name: the step recognises this one and resolves it.
  const action = (): void => {};
  Object.defineProperty(action, 'name', { value: SEND_ACTION });
  Object.defineProperty(action, RESOLVE, { value: resolve });
  return action;
}

export function sendResolverOf(fn: unknown): ((args: unknown) => ResolvedSend) | undefined {
  return typeof fn === 'function' ? (fn as { [RESOLVE]?: (args: unknown) => ResolvedSend })[RESOLVE] : undefined;
}
