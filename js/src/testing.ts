// An in-memory test double of the client: no server, no WebAssembly, no IndexedDB.
// Clients made from one `TestServer` see each other's publications; `server.publish`
// plays the app back end; `client.setOnline(false)` queues publishes until it is back.
import { ClientImpl, Emitter, matches } from "./client.js";
import { TidingsError } from "./errors.js";
import type { Backend } from "./backend.js";
import type { Ack, ClientOptions, TidingsClient } from "./types.js";

export { TidingsError } from "./errors.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

interface Stored {
  channel: string;
  epoch: string;
  offset: number;
  id: string;
  event: string;
  data: unknown;
  ts: number;
  publisher: { user: string; client?: string };
}

/** A fake server shared by test clients. */
export class TestServer {
  private offsets = new Map<string, number>();
  readonly history: Stored[] = [];
  /** @internal */
  readonly backends = new Set<TestBackend>();
  private nextClient = 1;

  /** A client connected to this server (`user` defaults to `"test"`). */
  createClient(options: Partial<ClientOptions> & { user?: string } = {}): TestClient {
    const user = options.user ?? "test";
    const backend = new TestBackend(this, user, `c-${this.nextClient++}`);
    const client = new ClientImpl({
      url: "test://",
      user,
      shareConnection: false,
      lifecycle: false,
      ...options,
      backend,
    } as any) as unknown as TestClient;
    backend.attach((json) => (client as any).onBatch(json));
    Object.assign(client, { setOnline: (online: boolean) => backend.setOnline(online), server: this });
    return client;
  }

  /** Publishes as the app back end (`publisher.user` is `"server"`). */
  publish(channel: string, event: string, data: unknown): Stored {
    return this.store(channel, event, data, { user: "server" }, "srv-" + Math.random().toString(36).slice(2));
  }

  /** @internal */
  store(channel: string, event: string, data: unknown, publisher: Stored["publisher"], id: string): Stored {
    const offset = (this.offsets.get(channel) ?? 0) + 1;
    this.offsets.set(channel, offset);
    const p: Stored = { channel, epoch: "test", offset, id, event, data, ts: Date.now(), publisher };
    this.history.push(p);
    for (const b of this.backends) b.deliver(p);
    return p;
  }
}

/** A test client: the full client API plus test controls. */
export interface TestClient extends TidingsClient {
  /** Go offline (publishes queue) or back online (they are sent). */
  setOnline(online: boolean): void;
  readonly server: TestServer;
}

let defaultServer: TestServer | undefined;

/**
 * An in-memory client for unit tests of app code: same API as `createClient`, no server.
 * Clients created without `server` share one default `TestServer`.
 */
export function createTestClient(
  options: Partial<ClientOptions> & { user?: string; server?: TestServer } = {},
): TestClient {
  const server = options.server ?? (defaultServer ??= new TestServer());
  return server.createClient(options);
}

/** A fresh fake server (isolates tests from each other). */
export function createTestServer(): TestServer {
  return new TestServer();
}

class TestBackend implements Backend {
  private sink: (json: string) => void = () => {};
  private subs = new Set<string>();
  private online = true;
  private connected = false;
  private state: any = { state: "disconnected" };
  private queue: {
    msgId: string;
    channel: string;
    event: string;
    data: any;
    resolve: (a: Ack) => void;
    reject: (e: unknown) => void;
    createdAt: number;
  }[] = [];
  private pending: any[] = [];
  private next = 1;
  /** Where in the server's history this client went offline (what it missed since). */
  private missedFrom?: number;
  private events = new Emitter<{ flush: () => void }>();

  constructor(
    private server: TestServer,
    private user: string,
    private clientId: string,
  ) {}

  attach(sink: (json: string) => void): void {
    this.sink = sink;
  }

  private emit(event: any): void {
    this.pending.push(event);
    if (this.pending.length === 1) {
      queueMicrotask(() => {
        const batch = this.pending;
        this.pending = [];
        this.sink(JSON.stringify(batch));
        this.events.emit("flush");
      });
    }
  }

  private setState(state: any, reason: string): void {
    if (JSON.stringify(state) === JSON.stringify(this.state)) return;
    this.emit({ type: "state", old: this.state, new: state, reason });
    this.state = state;
  }

  setOnline(online: boolean): void {
    if (online === this.online) return;
    this.online = online;
    if (!this.connected) return;
    if (online) {
      this.setState({ state: "connected" }, "online");
      // Like the real client: resubscribed, with what was published meanwhile recovered.
      const missed = this.server.history.slice(this.missedFrom ?? this.server.history.length);
      this.missedFrom = undefined;
      for (const ch of this.subs) {
        this.emit({ type: "subscription", channel: ch, state: { state: "subscribed" } });
        this.emit({ type: "subscribed", channel: ch, recovered: true, needs_reload: false });
      }
      for (const p of missed) this.deliver(p);
      this.flushQueue();
    } else {
      this.missedFrom = this.server.history.length;
      this.setState({ state: "reconnecting", attempt: 1, retry_in_ms: null }, "offline");
    }
  }

  private live(): boolean {
    return this.connected && this.online;
  }

  deliver(p: Stored): void {
    if (!this.live()) return;
    for (const s of this.subs) {
      if (matches(s, p.channel)) {
        this.emit({ type: "publication", ...p });
        return;
      }
    }
  }

  private flushQueue(): void {
    if (!this.live()) return;
    const queue = this.queue;
    this.queue = [];
    for (const m of queue) {
      this.emit({ type: "message", msg_id: m.msgId, channel: m.channel, status: { status: "sent" } });
      const p = this.server.store(m.channel, m.event, m.data, { user: this.user, client: this.clientId }, m.msgId);
      this.emit({ type: "message", msg_id: m.msgId, channel: m.channel, status: { status: "acked", epoch: p.epoch, offset: p.offset } });
      m.resolve({ msgId: m.msgId, epoch: p.epoch, offset: p.offset });
    }
  }

  async connect(): Promise<void> {
    this.connected = true;
    this.server.backends.add(this);
    this.setState(this.online ? { state: "connected" } : { state: "reconnecting", attempt: 1, retry_in_ms: null }, "connect_called");
    if (this.online) this.flushQueue();
  }
  disconnect(): void {
    this.connected = false;
    this.server.backends.delete(this);
    this.setState({ state: "disconnected" }, "disconnect_called");
  }
  async clear(): Promise<void> {
    this.disconnect();
    for (const m of this.queue) {
      m.reject(new TidingsError("cancelled", "message cancelled"));
      this.emit({ type: "message", msg_id: m.msgId, channel: m.channel, status: { status: "failed", error: { code: "cancelled", message: "message cancelled", temporary: false } } });
    }
    this.queue = [];
    this.subs.clear();
  }
  async subscribe(channel: string): Promise<void> {
    if (this.subs.has(channel)) return;
    this.subs.add(channel);
    this.emit({ type: "subscription", channel, state: { state: "subscribing" } });
    if (this.live()) {
      this.emit({ type: "subscription", channel, state: { state: "subscribed" } });
      this.emit({ type: "subscribed", channel, recovered: false, needs_reload: false });
    }
  }
  async unsubscribe(channel: string): Promise<void> {
    if (this.subs.delete(channel)) this.emit({ type: "subscription", channel, state: { state: "unsubscribed" } });
  }
  publish(channel: string, event: string, json: string): Promise<Ack> {
    if (!channel || channel.endsWith("*")) {
      return Promise.reject(new TidingsError("publish_to_pattern", `cannot publish to ${JSON.stringify(channel)}`));
    }
    return new Promise((resolve, reject) => {
      const msgId = `test-${this.next++}`;
      this.queue.push({ msgId, channel, event, data: JSON.parse(json), resolve, reject, createdAt: Date.now() });
      this.emit({ type: "message", msg_id: msgId, channel, status: { status: "queued" } });
      queueMicrotask(() => this.flushQueue());
    });
  }
  async cancel(msgId: string): Promise<void> {
    const i = this.queue.findIndex((m) => m.msgId === msgId);
    if (i < 0) throw new TidingsError("unknown_message", `no pending message ${msgId}`);
    const [m] = this.queue.splice(i, 1);
    m!.reject(new TidingsError("cancelled", "message cancelled"));
    this.emit({ type: "message", msg_id: msgId, channel: m!.channel, status: { status: "failed", error: { code: "cancelled", message: "message cancelled", temporary: false } } });
  }
  async outbox(): Promise<any[]> {
    return this.queue.map((m) => ({
      msg_id: m.msgId,
      channel: m.channel,
      event: m.event,
      data: m.data,
      created_at_ms: m.createdAt,
      user: this.user,
      status: { status: "queued" },
    }));
  }
  async stats(): Promise<any> {
    return {
      state: this.state.state,
      rtt_ms: 0,
      reconnects: 0,
      queue_depth: this.queue.length,
      subscriptions: this.subs.size,
      recoveries_succeeded: 0,
      recoveries_failed: 0,
      publications_delivered: 0,
      duplicates_dropped: 0,
      messages_acked: 0,
      client_id: this.clientId,
      session_id: this.clientId,
    };
  }
  lifecycle(): void {}
  setToken(): void {}
  close(): void {
    this.disconnect();
  }
}
