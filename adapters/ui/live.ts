/**
 * Live pushes to open pages, over server-sent events: index ticks for the overview and the list
 * (throttled: a page fetches its view again at most a few times a second, however busy the
 * namespace), and the detail of each watched instance, computed once per change for all its
 * viewers. An instance's detail is refreshed when its record changes (the index's KV watch) and
 * when its history subject gets a message (a refused event changes the history only).
 */
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import type { Logger } from '../../engine/index.js';
import { EventStream } from './http.js';
import type { InstanceIndex } from './instance-index.js';
import type { IndexTick, InstanceDetail } from './protocol.js';

const TICK_MS = 250;

interface Watched {
  streams: Set<EventStream>;
  sub: Subscription;
  running: boolean;
  dirty: boolean;
  last: InstanceDetail | null | undefined;
}

export class LiveHub {
  private readonly indexStreams = new Set<EventStream>();
  private readonly watched = new Map<string, Watched>();
  private tickTimer: NodeJS.Timeout | undefined;
  private readonly unlisten: () => void;

  constructor(
    private readonly index: InstanceIndex,
    private readonly nc: NatsConnection,
    private readonly historySubject: (workflow: string, id: string) => string,
    private readonly load: (workflow: string, id: string) => Promise<InstanceDetail | null>,
    private readonly logger: Logger,
  ) {
    this.unlisten = index.onChange((key) => {
      this.scheduleTick();
      if (this.watched.has(key)) this.refresh(key);
    });
    void index.whenReady().then(() => this.scheduleTick());
  }

  /** Index ticks until the page goes away. */
  followIndex(stream: EventStream): void {
    this.indexStreams.add(stream);
    stream.send('index', this.tick());
    stream.onClose(() => this.indexStreams.delete(stream));
  }

  /** The instance's detail now and after every change, until the page goes away. */
  followInstance(stream: EventStream, workflow: string, id: string): void {
    const key = `${workflow}.${id}`;
    let w = this.watched.get(key);
    if (!w) {
      const sub = this.nc.subscribe(this.historySubject(workflow, id), { callback: () => this.refresh(key) });
      w = { streams: new Set(), sub, running: false, dirty: false, last: undefined };
      this.watched.set(key, w);
    }
    w.streams.add(stream);
    if (w.last !== undefined && !w.running) stream.send('instance', w.last);
    else this.refresh(key);
    stream.onClose(() => {
      const current = this.watched.get(key);
      if (!current) return;
      current.streams.delete(stream);
      if (current.streams.size === 0) {
        current.sub.unsubscribe();
        this.watched.delete(key);
      }
    });
  }

  close(): void {
    this.unlisten();
    clearTimeout(this.tickTimer);
    for (const s of this.indexStreams) s.close();
    for (const w of this.watched.values()) {
      w.sub.unsubscribe();
      for (const s of w.streams) s.close();
    }
    this.watched.clear();
  }

  private tick(): IndexTick {
    return { version: this.index.version, ready: this.index.ready, instances: this.index.size };
  }

  private scheduleTick(): void {
    if (this.tickTimer || this.indexStreams.size === 0) return;
    this.tickTimer = setTimeout(() => {
      this.tickTimer = undefined;
      const t = this.tick();
      for (const s of this.indexStreams) s.send('index', t);
    }, TICK_MS);
  }

  /** Loads the detail once for every viewer; changes that arrive meanwhile cause one more load. */
  private refresh(key: string): void {
    const w = this.watched.get(key);
    if (!w) return;
    if (w.running) {
      w.dirty = true;
      return;
    }
    w.running = true;
    const dot = key.indexOf('.');
    const [workflow, id] = [key.slice(0, dot), key.slice(dot + 1)];
    void (async () => {
      do {
        w.dirty = false;
        try {
          w.last = await this.load(workflow, id);
          for (const s of w.streams) s.send('instance', w.last ?? { missing: true });
        } catch (e) {
          this.logger.warn(`ui: could not read ${key}: ${(e as Error).message}`);
          for (const s of w.streams) s.send('problem', { message: (e as Error).message });
        }
      } while (w.dirty && this.watched.get(key) === w);
      w.running = false;
    })();
  }
}
