import * as convert from "./convert.js";
import { TidingsError, toError } from "./errors.js";
import { LocalBackend, type Backend } from "./backend.js";
import { TabGroup, canShare } from "./tabs.js";
import type {
  Ack,
  Channel,
  ChannelEvents,
  ClientEvents,
  ClientOptions,
  ConnectionState,
  PendingMessage,
  Publication,
  StateName,
  Stats,
  SubscribedInfo,
  SubscriptionStateName,
  TidingsClient,
  TidingsEvent,
  Unsubscribe,
} from "./types.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** A minimal typed event emitter; a throwing listener does not stop the others. */
export class Emitter<E extends { [K in keyof E]: (...args: any[]) => void }> {
  private listeners = new Map<keyof E, Set<(...args: any[]) => void>>();

  on<K extends keyof E>(event: K, listener: E[K]): Unsubscribe {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => {
      set!.delete(listener);
    };
  }

  has(event: keyof E): boolean {
    return (this.listeners.get(event)?.size ?? 0) > 0;
  }

  emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (e) {
        console.error("tidings: a listener threw", e);
      }
    }
  }
}

export function matches(name: string, channel: string): boolean {
  return name.endsWith("*") ? channel.startsWith(name.slice(0, -1)) : name === channel;
}

class ChannelImpl implements Channel {
  readonly events = new Emitter<ChannelEvents>();
  state: SubscriptionStateName = "unsubscribed";
  /** Wanted by this tab (subscribe() called, unsubscribe() not). */
  wanted = false;

  constructor(
    readonly name: string,
    private client: ClientImpl,
  ) {}

  subscribe(): Promise<void> {
    this.wanted = true;
    if (this.state === "unsubscribed" || this.state === "failed") this.setState("subscribing");
    return this.client.backendCall((b) => b.subscribe(this.name)).then(
      // Joining a subscription the shared socket already has brings no state event.
      () => {
        if (this.wanted) this.setState("subscribed");
      },
      (e: TidingsError) => {
        if (this.wanted && e.code !== "closed") {
          this.wanted = false;
          this.setState("failed", e);
        }
        throw e;
      },
    );
  }

  unsubscribe(): Promise<void> {
    this.wanted = false;
    this.setState("unsubscribed");
    return this.client.backendCall((b) => b.unsubscribe(this.name));
  }

  publish<T = unknown>(event: string, data: T): Promise<Ack> {
    return this.client.publish(this.name, event, data);
  }

  on<K extends keyof ChannelEvents>(event: K, listener: ChannelEvents[K]): Unsubscribe {
    return this.events.on(event, listener);
  }

  setState(state: SubscriptionStateName, error?: TidingsError): void {
    if (this.state === state && !error) return;
    this.state = state;
    this.events.emit("state", state, error);
  }

  [Symbol.asyncIterator](): AsyncIterator<Publication[]> {
    const queue: Publication[][] = [];
    let waiting: ((r: IteratorResult<Publication[]>) => void) | undefined;
    let done = false;
    let batch: Publication[] | undefined;
    const offPublication = this.events.on("publication", (p) => {
      if (!batch) {
        batch = [];
        // One batch per flush: everything delivered in this synchronous dispatch.
        queueMicrotask(() => {
          const b = batch!;
          batch = undefined;
          if (waiting) {
            const w = waiting;
            waiting = undefined;
            w({ value: b, done: false });
          } else queue.push(b);
        });
      }
      batch.push(p);
    });
    const finish = (): IteratorResult<Publication[]> => {
      done = true;
      offPublication();
      offClose();
      if (waiting) waiting({ value: undefined, done: true });
      waiting = undefined;
      return { value: undefined, done: true };
    };
    const offClose = this.client.onClose(finish);
    return {
      next: () => {
        if (queue.length) return Promise.resolve({ value: queue.shift()!, done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (waiting = resolve));
      },
      return: () => Promise.resolve(finish()),
    };
  }
}

type Change = "online" | "offline" | "suspended" | "resumed";

export class ClientImpl implements TidingsClient {
  private emitter = new Emitter<ClientEvents>();
  private channels = new Map<string, ChannelImpl>();
  private seen = new Map<string, { epoch: string; offset: number }>();
  /** Last position received per channel, also of channels only other tabs want. */
  private received = new Map<string, { epoch: string; offset: number }>();
  private backend?: Backend;
  private group?: TabGroup;
  private local?: LocalBackend;
  private wantConnected = false;
  private closed = false;
  private closers = new Set<() => void>();
  private cleanup: (() => void)[] = [];
  connection: ConnectionState = { state: "disconnected" };
  readonly ready: Promise<void>;

  constructor(private options: ClientOptions) {
    if (!options || typeof options.url !== "string") {
      throw new TidingsError("bad_request", "createClient needs { url }");
    }
    this.ready = this.start();
    this.ready.catch((e) => this.emitter.emit("error", toError(e)));
    if (options.autoConnect !== false) {
      this.wantConnected = true;
      this.connect().catch(() => {});
    }
    if (options.lifecycle !== false) this.listen();
  }

  private async start(): Promise<void> {
    const o = this.options;
    const injected = (o as any).backend as Backend | undefined;
    if (injected) {
      // The in-memory test double (testing.ts).
      this.backend = injected;
      this.local = {} as LocalBackend;
      return;
    }
    let token = o.token;
    let user = o.user ?? convert.tokenSubject(token);
    // Storage (and the tab group) is per user: with only a token provider, ask it first,
    // again with backoff until it answers (a flaky network at page load must not leave a
    // dead client).
    for (let attempt = 0; !user && !token && o.getToken && !this.closed; attempt++) {
      try {
        token = await o.getToken();
        if (typeof token !== "string") throw new Error("the token provider must return a string");
        user = convert.tokenSubject(token);
      } catch (e) {
        token = undefined;
        this.emitter.emit("error", new TidingsError("token_provider", `token provider failed: ${(e as Error)?.message ?? e}`));
        const ceiling = Math.min(30000, 1000 * 2 ** attempt);
        await new Promise((resolve) => setTimeout(resolve, ceiling / 2 + (Math.random() * ceiling) / 2));
      }
    }
    const core = convert.coreOptions({ ...o, token, user });
    const json = JSON.stringify(core);
    const config = {
      options: json,
      getToken: o.getToken,
      storage: o.storage,
      delivery: o.delivery,
      wasm: o.wasm,
    };
    if (this.closed) return;
    if (o.shareConnection !== false && canShare()) {
      const namespace = `tidings|${o.url}|${user ?? "anonymous"}`;
      this.group = new TabGroup(namespace, config, {
        onBatch: (j) => this.onBatch(j),
        onWelcome: (state) => {
          if (this.wantConnected) this.setConnection(convert.state(state));
        },
        onLeader: (isLeader) => this.emitter.emit("leader", isLeader),
        wanted: () => ({
          subs: [...this.channels.values()].filter((c) => c.wanted).map((c) => c.name),
          connect: this.wantConnected,
        }),
        received: () => Object.fromEntries(this.received),
      });
      this.backend = this.group;
    } else {
      this.local = new LocalBackend({ ...config, onBatch: (j) => this.onBatch(j) });
      this.backend = this.local;
      await this.local.ready;
      this.emitter.emit("leader", true);
    }
  }

  /** Runs a backend call once the backend exists. */
  async backendCall<T>(f: (b: Backend) => Promise<T> | T): Promise<T> {
    try {
      if (this.closed) throw new TidingsError("closed", "client is closed");
      if (!this.backend) await this.ready;
      if (!this.backend) throw new TidingsError("closed", "client is closed");
      return await f(this.backend);
    } catch (e) {
      throw toError(e);
    }
  }

  /** Runs `f` when the client closes; returns a function that forgets it. */
  onClose(f: () => void): () => void {
    this.closers.add(f);
    return () => this.closers.delete(f);
  }

  get state(): StateName {
    return this.connection.state;
  }

  get isLeader(): boolean {
    return this.group ? this.group.isLeader : !!this.local;
  }

  on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): Unsubscribe {
    return this.emitter.on(event, listener);
  }

  connect(): Promise<void> {
    if (this.closed) return Promise.reject(new TidingsError("closed", "client is closed"));
    this.wantConnected = true;
    if (this.connection.state === "disconnected") {
      this.setConnection({ state: "connecting" }, "connect_called");
    }
    return this.backendCall((b) => b.connect()).then(() => {
      // A tab joining a socket that is already live hears no state change: catch up.
      if (this.group && this.connection.state !== "connected") {
        this.setConnection({ state: "connected" }, "connected");
      }
    });
  }

  disconnect(): void {
    this.wantConnected = false;
    this.backendCall((b) => b.disconnect()).catch(() => {});
    // With a shared socket other tabs may keep it open; this tab is disconnected anyway.
    if (this.group) this.setConnection({ state: "disconnected" }, "disconnect_called");
  }

  channel(name: string): Channel {
    let channel = this.channels.get(name);
    if (!channel) this.channels.set(name, (channel = new ChannelImpl(name, this)));
    return channel;
  }

  publish<T = unknown>(channel: string, event: string, data: T): Promise<Ack> {
    let json: string;
    try {
      json = JSON.stringify(data === undefined ? null : data);
    } catch (e) {
      return Promise.reject(new TidingsError("bad_request", "data is not JSON-serializable: " + e));
    }
    return this.backendCall((b) => b.publish(channel, event, json));
  }

  async outbox(): Promise<PendingMessage[]> {
    const raw = await this.backendCall((b) => b.outbox());
    return raw.map(convert.pending);
  }

  cancel(msgId: string): Promise<void> {
    return this.backendCall((b) => b.cancel(msgId));
  }

  async stats(): Promise<Stats> {
    return convert.stats(await this.backendCall((b) => b.stats()));
  }

  setToken(token: string): void {
    this.backendCall((b) => b.setToken(token)).catch(() => {});
  }

  async clear(): Promise<void> {
    for (const c of this.channels.values()) {
      c.wanted = false;
      c.setState("unsubscribed");
    }
    this.seen.clear();
    this.received.clear();
    await this.backendCall((b) => b.clear());
  }

  close(): void {
    if (this.closed) return;
    this.wantConnected = false;
    this.setConnection({ state: "disconnected" }, "closed");
    this.closed = true;
    this.backend?.close();
    for (const f of this.cleanup) f();
    for (const f of [...this.closers]) f();
  }

  /** Where the page lifecycle goes: the socket holder's core, or the tab group. */
  private lifecycle(change: Change): void {
    if (this.closed) return;
    const group = this.group;
    if (group) {
      if (change === "suspended") group.suspend();
      else if (change === "resumed") group.resume();
    }
    this.backend?.lifecycle(change);
  }

  private listen(): void {
    const g = globalThis as any;
    if (typeof g.addEventListener !== "function") return;
    const on = (target: any, name: string, f: (e: any) => void) => {
      target.addEventListener(name, f);
      this.cleanup.push(() => target.removeEventListener(name, f));
    };
    on(g, "online", () => this.lifecycle("online"));
    on(g, "offline", () => this.lifecycle("offline"));
    const doc = g.document;
    if (doc && typeof doc.addEventListener === "function") {
      on(doc, "visibilitychange", () => {
        if (doc.visibilityState === "visible") this.lifecycle("resumed");
      });
      on(doc, "freeze", () => this.lifecycle("suspended"));
      on(doc, "resume", () => this.lifecycle("resumed"));
    }
    on(g, "pagehide", (e) => {
      if (e.persisted) this.lifecycle("suspended");
      else this.close();
    });
    on(g, "pageshow", (e) => {
      if (e.persisted) this.lifecycle("resumed");
    });
  }

  private setConnection(state: ConnectionState, reason = "leader"): void {
    const previous = this.connection.state;
    this.connection = state;
    if (previous !== state.state || state.state === "reconnecting") {
      this.emitter.emit("state", { ...state, previous, reason });
    }
  }

  /** One flushed batch from the core (this tab's or the leader's). */
  onBatch(json: string): void {
    if (this.closed) return;
    let raw: any[];
    try {
      raw = JSON.parse(json);
    } catch {
      return;
    }
    const events: TidingsEvent[] = [];
    for (const r of raw) {
      const e = convert.event(r);
      if (!e) continue;
      if (e.type === "publication") {
        const last = this.received.get(e.channel);
        if (!last || last.epoch !== e.epoch || e.offset > last.offset) {
          this.received.set(e.channel, { epoch: e.epoch, offset: e.offset });
        }
        if (!this.accept(e)) continue;
      } else if (e.type === "subscription" || e.type === "subscribed") {
        const c = this.channels.get(e.channel);
        if (!c || !c.wanted) continue;
      }
      events.push(e);
    }
    if (events.length === 0) return;
    this.emitter.emit("batch", events);
    for (const e of events) this.dispatch(e);
  }

  /** This tab wants it and has not seen it: per-tab exactly-once by (channel, offset). */
  private accept(p: Publication): boolean {
    // A tab that called disconnect() on a shared socket other tabs keep open hears nothing.
    if (this.group && !this.wantConnected) return false;
    let wanted = false;
    for (const c of this.channels.values()) {
      if (c.wanted && matches(c.name, p.channel)) {
        wanted = true;
        break;
      }
    }
    if (!wanted) return false;
    const last = this.seen.get(p.channel);
    if (last && last.epoch === p.epoch && p.offset <= last.offset) return false;
    this.seen.set(p.channel, { epoch: p.epoch, offset: p.offset });
    return true;
  }

  private dispatch(e: TidingsEvent): void {
    switch (e.type) {
      case "state": {
        const { type: _t, previous: _p, reason, ...state } = e;
        if (!this.wantConnected && this.group && state.state !== "disconnected") return;
        this.setConnection(state, reason);
        break;
      }
      case "publication": {
        const { type: _t, ...p } = e;
        this.emitter.emit("publication", p);
        for (const c of this.channels.values()) {
          if (c.wanted && matches(c.name, p.channel)) c.events.emit("publication", p);
        }
        break;
      }
      case "subscription":
        this.channels.get(e.channel)?.setState(e.state, e.error);
        break;
      case "subscribed": {
        const info: SubscribedInfo = {
          channel: e.channel,
          recovered: e.recovered,
          needsReload: e.needsReload,
        };
        this.emitter.emit("subscribed", info);
        this.channels.get(e.channel)?.events.emit("subscribed", info);
        break;
      }
      case "message":
        this.emitter.emit("message", { msgId: e.msgId, channel: e.channel, status: e.status });
        break;
      case "error":
        this.emitter.emit("error", e.error);
        break;
      case "storeWarning":
        this.emitter.emit("storeWarning", e.message);
        break;
    }
  }
}

/**
 * Creates a client. It loads the WebAssembly core lazily (nothing runs at import time, so
 * importing is safe under server-side rendering and in workers) and, unless
 * `autoConnect: false`, connects at once.
 */
export function createClient(options: ClientOptions): TidingsClient {
  return new ClientImpl(options);
}
