/** The JSON API of the UI server, one handler per route. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { JetStreamManager } from '@nats-io/jetstream';
import type { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Client, DeadLetter, WorkflowDefinition } from '../../engine/index.js';
import { availableActions, runOptionalAction, sendAndObserve, OPTIONAL_ACTIONS, type OptionalAction } from './actions.js';
import type { WorkflowCatalog } from './catalog.js';
import { eventFormsOf } from './event-forms.js';
import { EventStream, HttpError, readJson, sendJson } from './http.js';
import type { DetailSources } from './instance-detail.js';
import { instanceDetail } from './instance-detail.js';
import type { InstanceIndex } from './instance-index.js';
import type { LiveHub } from './live.js';
import type { ResolvedUiServerOptions } from './options.js';
import type { ActionRequest, DeadLettersView, Overview, SendRequest, WorkflowSummary } from './protocol.js';
import { statechartOf } from './statechart-graph.js';
import { pendingExecutions } from './step-functions-view.js';

export interface ApiContext {
  options: ResolvedUiServerOptions;
  nc: NatsConnection;
  jsm: JetStreamManager;
  kvm: Kvm;
  reader: Client;
  actor: Client;
  index: InstanceIndex;
  catalog: WorkflowCatalog;
  sources: DetailSources;
  live: LiveHub;
  historySubject: (workflow: string, id: string) => string;
  deadLetterCache: { atMs: number; letters: Promise<DeadLetter[]> } | null;
}

const NAME = /^[A-Za-z0-9_-]{1,128}$/;
const DEAD_LETTERS_SCANNED = 1_000;

function name(value: string | undefined, what: string): string {
  const v = decodeURIComponent(value ?? '');
  if (!NAME.test(v)) throw new HttpError(400, 'INVALID_ID', `${what} ${JSON.stringify(v)} is not valid: use 1-128 of A-Z a-z 0-9 _ -`);
  return v;
}

const param = (url: URL, key: string): string | undefined => {
  const v = url.searchParams.get(key);
  return v === null || v === '' ? undefined : v;
};

/** The newest dead letters, read at most every 5 s however many pages ask. */
function deadLetters(ctx: ApiContext): Promise<DeadLetter[]> {
  const now = Date.now();
  if (!ctx.deadLetterCache || now - ctx.deadLetterCache.atMs > 5_000) {
    const letters = ctx.reader.deadLetters({ limit: DEAD_LETTERS_SCANNED });
    ctx.deadLetterCache = { atMs: now, letters };
    letters.catch(() => (ctx.deadLetterCache = null));
  }
  return ctx.deadLetterCache.letters;
}

async function overview(ctx: ApiContext): Promise<Overview> {
  const letters = await deadLetters(ctx).catch(() => [] as DeadLetter[]);
  const byName = new Map<string, WorkflowSummary>();
  const summary = (n: string): WorkflowSummary => {
    let s = byName.get(n);
    if (!s) byName.set(n, (s = { name: n, versions: [], counts: {}, ...ctx.index.rate(n), deadLetters: letters.filter((l) => l.workflow === n).length }));
    return s;
  };
  for (const def of ctx.catalog.all()) summary(def.name).versions.push({ version: def.version, registered: true, counts: {} });
  for (const { workflow, version, counts } of ctx.index.countsByVersion()) {
    const s = summary(workflow);
    let v = s.versions.find((x) => x.version === version);
    if (!v) s.versions.push((v = { version, registered: false, counts: {} }));
    v.counts = counts;
    for (const [status, n] of Object.entries(counts)) s.counts[status] = (s.counts[status] ?? 0) + n;
  }
  const workflows = [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const w of workflows) w.versions.sort((a, b) => a.version - b.version);
  return {
    namespace: ctx.options.namespace,
    ready: ctx.index.ready,
    instances: ctx.index.size,
    workflows,
    recent: ctx.index.recent().map(({ key: _k, paths: _p, ...row }) => row),
    statuses: ctx.index.statuses(),
    deadLettersScanned: DEAD_LETTERS_SCANNED,
    actions: availableActions(ctx.actor),
    reveal: ctx.options.reveal,
  };
}

/** The definition to act with: the instance's own version when loaded, else the newest. */
function definitionFor(ctx: ApiContext, workflow: string, id: string): WorkflowDefinition {
  const def = ctx.catalog.resolve(workflow, ctx.index.get(`${workflow}.${id}`)?.version);
  if (!def)
    throw new HttpError(
      404,
      'WORKFLOW_NOT_REGISTERED',
      `workflow '${workflow}' is not among the loaded workflows; pass the module that defines it with --workflows`,
    );
  return def;
}

export async function route(req: IncomingMessage, res: ServerResponse, url: URL, ctx: ApiContext): Promise<void> {
  const parts = url.pathname.split('/').slice(2); // after /api/
  const method = req.method ?? 'GET';
  const get = method === 'GET';
  const post = method === 'POST';
  if (get && parts[0] === 'overview' && parts.length === 1) return sendJson(res, 200, await overview(ctx));
  if (get && parts[0] === 'stream' && parts.length === 1) return ctx.live.followIndex(new EventStream(res));
  if (get && parts[0] === 'deadletters' && parts.length === 1) {
    const limit = Math.max(1, Math.min(1_000, Number(param(url, 'limit') ?? 200) || 200));
    const view: DeadLettersView = {
      deadLetters: (await ctx.reader.deadLetters({ limit })).reverse(),
      executions: await pendingExecutions(ctx.jsm, ctx.kvm, ctx.options.namespace),
    };
    return sendJson(res, 200, view);
  }
  if (get && parts[0] === 'workflows' && parts.length === 4 && parts[3] === 'chart') {
    const wf = name(parts[1], 'workflow');
    const def = ctx.catalog.resolve(wf, Number(parts[2]));
    if (!def)
      throw new HttpError(
        404,
        'WORKFLOW_NOT_REGISTERED',
        `workflow '${wf}' is not among the loaded workflows; pass the module that defines it with --workflows`,
      );
    return sendJson(res, 200, { chart: statechartOf(def), forms: eventFormsOf(def) });
  }
  if (parts[0] === 'instances') {
    if (get && parts.length === 1) {
      const workflow = param(url, 'workflow');
      return sendJson(
        res,
        200,
        ctx.index.query({
          workflow: workflow === undefined ? undefined : name(workflow, 'workflow'),
          status: param(url, 'status'),
          state: param(url, 'state'),
          prefix: param(url, 'prefix'),
          after: param(url, 'after'),
          before: param(url, 'before'),
          limit: Number(param(url, 'limit') ?? 50) || 50,
        }),
      );
    }
    const wf = name(parts[1], 'workflow');
    const id = name(parts[2], 'instance id');
    if (get && parts.length === 3) {
      const detail = await instanceDetail(ctx.sources, wf, id);
      if (!detail) throw new HttpError(404, 'INSTANCE_NOT_FOUND', `workflow '${wf}' instance '${id}' does not exist`);
      return sendJson(res, 200, detail);
    }
    if (get && parts.length === 4 && parts[3] === 'stream') return ctx.live.followInstance(new EventStream(res), wf, id);
    if (post && parts.length === 4) {
      const action = parts[3]!;
      const def = definitionFor(ctx, wf, id);
      if (action === 'send') {
        const body = (await readJson(req)) as SendRequest;
        return sendJson(res, 200, await sendAndObserve(ctx.nc, ctx.historySubject(wf, id), ctx.actor, ctx.reader, def, id, body, ctx.options.sendWaitMs));
      }
      if (action === 'verify') {
        await readJson(req);
        // A mismatch shows the snapshots, secret values redacted unless the view reveals them.
        return sendJson(res, 200, await ctx.actor.verify(def, id, { reveal: ctx.options.reveal }));
      }
      if ((OPTIONAL_ACTIONS as readonly string[]).includes(action)) {
        const body = (await readJson(req)) as ActionRequest;
        return sendJson(res, 200, await runOptionalAction(ctx.actor, action as OptionalAction, def, id, body));
      }
    }
  }
  throw new HttpError(404, 'NOT_FOUND', `no API route ${method} ${url.pathname}`);
}
