// The browser driver of the wasm core: it owns the WebSocket, the timers, the IndexedDB
// store, the token provider calls and the promises, and does what the core's outputs say.
// The core (Rust, `sdk-wasm`) decides everything: states, backoff, heartbeats, recovery,
// the outbox. One `poll()` per input returns every output as one JSON array.
//
// Events are queued here and handed to the app once per animation frame (a timer where
// frames do not run), after the core call returned, so a listener may call the client.

/* eslint-disable @typescript-eslint/no-explicit-any */
import { TidingsError, toError } from "./errors.js";
import { Store, type PersistKind } from "./store.js";
import type { Ack } from "./types.js";
import { Core } from "../wasm/tidings_wasm.js";

export interface DriverConfig {
  getToken?: () => string | Promise<string>;
  storage?: "indexeddb" | "memory";
  /** `frame`: once per animation frame; `microtask`: right after the call (tests). */
  flush?: "frame" | "microtask";
  /** Fixed randomness (tests). */
  seed?: number;
  /** Positions to resume from when older than the stored ones (JSON, tab takeover). */
  positions?: string;
}

type Settle = [(value: any) => void, (error: unknown) => void];
type Output =
  | { op: "open"; transport: number; url: string }
  | { op: "close"; transport: number; reason: string }
  | { op: "send"; transport: number; text: string }
  | { op: "token" }
  | { op: "persist"; id: number; kind: PersistKind }
  | { op: "events"; events: any[] }
  | { op: "wake"; at: number | null };

const g = globalThis as any;
const clocks = (): [number, number] => {
  const wall = Date.now();
  return [g.performance?.now?.() ?? wall, wall];
};

/** A core error (thrown as JSON text by the wasm) → `TidingsError`. */
export function coreError(e: unknown): TidingsError {
  if (typeof e === "string") {
    try {
      return toError(JSON.parse(e));
    } catch {
      // Not JSON: fall through.
    }
  }
  return toError(e);
}

const closedError = () => new TidingsError("closed", "client is closed");

/** Fills `array` from `crypto.getRandomValues` (`Math.random` where it is missing). */
export function fillRandom<T extends Uint8Array | Uint32Array>(array: T): T {
  if (g.crypto?.getRandomValues) g.crypto.getRandomValues(array);
  else for (let i = 0; i < array.length; i++) array[i] = Math.random() * 2 ** 32;
  return array;
}

function seed(fixed?: number): [number, number] {
  if (fixed !== undefined) return [Math.floor(fixed / 2 ** 32) >>> 0, fixed >>> 0];
  const [high, low] = fillRandom(new Uint32Array(2));
  return [high, low];
}

/** One Tidings client running in this JavaScript context (the `LocalBackend`'s engine). */
export class Driver {
  private closed = false;
  /** True while `perform` runs: inputs arriving then are deferred (see `input`). */
  private draining = false;
  private socket?: { id: number; ws: WebSocket };
  private wakeAt: number | null = null;
  private wakeTimer?: ReturnType<typeof setTimeout>;
  private pending: any[] = [];
  /** Event lists whose promises settle once they were handed to the app (so after
   * `await connect()` the app has already heard `connected`). */
  private unsettled: any[][] = [];
  private flushTimer?: ReturnType<typeof setTimeout>;
  private flushFrame?: number;
  private flushQueued = false;
  private persistQueue: { id: number; kind: PersistKind }[] = [];
  private persisting = false;
  private waiters = {
    connect: [] as Settle[],
    subscribe: [] as [string, Settle][],
    acks: [] as [string, Settle][],
    queued: [] as [string, Settle][],
    storeIdle: [] as Settle[],
  };

  private constructor(
    private readonly core: Core,
    private store: Store,
    private readonly onBatch: (json: string) => void,
    private readonly config: DriverConfig,
    /** The storage namespace (`tidings|<url>|<user>`). */
    readonly namespace: string,
  ) {}

  /** Creates a client: opens the store, restores the outbox and positions, and resolves
   * once ready (not connected yet). `options`: the core's options as JSON (snake_case). */
  static async create(options: string, onBatch: (json: string) => void, config: DriverConfig = {}): Promise<Driver> {
    let core: Core;
    try {
      // The core asks for tokens only when it knows there is a provider.
      const o = JSON.parse(options);
      o.token_provider = typeof config.getToken === "function";
      o.client_name ??= "tidings-js";
      core = new Core(JSON.stringify(o), ...seed(config.seed));
    } catch (e) {
      throw e instanceof SyntaxError ? new TidingsError("bad_request", `invalid options: ${e.message}`) : coreError(e);
    }
    const namespace = core.read("namespace", "");
    let { store, warning } =
      config.storage === "memory" ? { store: Store.memory(namespace), warning: undefined } : await Store.open(namespace);
    let snapshot = "{}";
    try {
      snapshot = await store.load();
    } catch (e) {
      warning = `could not read the offline queue, starting empty: ${(e as Error).message}`;
    }
    if (config.positions) snapshot = lowerPositions(snapshot, config.positions);
    const driver = new Driver(core, store, onBatch, config, namespace);
    if (warning) driver.pending.push({ type: "store_warning", message: warning });
    driver.run("restore", 0, snapshot);
    // A page opened (or a tab taking over) while the browser is offline waits for
    // `online` instead of spending its reconnect attempts.
    if (g.navigator?.onLine === false) driver.run("lifecycle", 0, "offline");
    driver.scheduleFlush();
    return driver;
  }

  /** True while the offline queue is written to IndexedDB. */
  get durable(): boolean {
    return this.store.durable;
  }

  /** Starts connecting; resolves once connected, rejects once failed or disconnected. */
  connect(): Promise<void> {
    // The waiter is filed before this call's outputs are performed (they may settle it).
    return new Promise((resolve, reject) =>
      this.run("connect", 0, "", "", "", "", () => {
        if (JSON.parse(this.core.read("state", "")).state === "connected") resolve();
        else this.waiters.connect.push([resolve, reject]);
      }),
    );
  }

  /** Closes the connection; subscriptions and the outbox are kept for the next connect. */
  disconnect(): void {
    if (!this.closed) this.run("disconnect");
  }

  /** Logs out: fails queued messages with `cancelled`, forgets subscriptions and
   * positions, wipes this namespace from IndexedDB; resolves once wiped. */
  clear(): Promise<void> {
    this.run("clear");
    return this.whenStored();
  }

  /** Resolves once every store write asked for so far is done. */
  whenStored(): Promise<void> {
    if (!this.persisting && this.persistQueue.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.storeIdle.push([resolve, reject]));
  }

  /** Subscribes; resolves once the server confirmed (offline: waits). */
  subscribe(channel: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.run("subscribe", 0, channel, "", "", "", () => {
        if (JSON.parse(this.core.read("subscription", channel))?.state === "subscribed") resolve();
        else this.waiters.subscribe.push([channel, [resolve, reject]]);
      }),
    );
  }

  /** Unsubscribes and forgets the channel's position. */
  unsubscribe(channel: string): void {
    this.run("unsubscribe", 0, channel);
  }

  /** Queues a publish (`data`: JSON text). `queued` resolves with the id once durable,
   * `acked` once the server stored it. `msgId`: the id to use (a tab handing its publish
   * to the leader keeps its own, so a retry through another leader is deduped by the
   * server); a new one when empty. Throws a `TidingsError` for invalid input. */
  publish(
    channel: string,
    event: string,
    data: string,
    msgId = "",
  ): { msgId: string; queued: Promise<string>; acked: Promise<Ack> } {
    let onQueued!: Settle;
    let onAcked!: Settle;
    const queued = new Promise<string>((resolve, reject) => (onQueued = [resolve, reject]));
    const acked = new Promise<Ack>((resolve, reject) => (onAcked = [resolve, reject]));
    // Callers may watch only one of them: no "unhandled rejection" for the other.
    queued.catch(() => {});
    acked.catch(() => {});
    // Waiters are filed before the outputs of this call are performed (they may settle them).
    this.run("publish", 0, channel, event, data, msgId, (id) => {
      msgId = id;
      this.waiters.queued.push([msgId, onQueued]);
      this.waiters.acks.push([msgId, onAcked]);
    });
    return { msgId, queued, acked };
  }

  /** Cancels a message not sent yet (`unknown_message`, `not_cancellable`). */
  cancel(msgId: string): void {
    this.run("cancel", 0, msgId);
  }

  /** The outbox (JSON): messages not yet acked or failed, oldest first. */
  outbox(): string {
    return this.core.read("outbox", "");
  }
  /** Counters and gauges (JSON). */
  stats(): string {
    return this.core.read("stats", "");
  }
  /** The connection state (JSON `{ state, ... }`). */
  state(): string {
    return this.core.read("state", "");
  }
  /** A subscription's state (JSON) or `null`. */
  subscriptionState(channel: string): string {
    return this.core.read("subscription", channel);
  }
  /** Last positions per channel (JSON `{ [channel]: { epoch, offset } }`). */
  positions(): string {
    return this.core.read("positions", "");
  }

  /** Reports `online`, `offline`, `suspended` or `resumed`. */
  lifecycle(change: string): void {
    if (!this.closed) this.run("lifecycle", 0, change);
  }

  /** Replaces the token (sent with `refresh` on a live connection). */
  setToken(token: string): void {
    if (!this.closed) this.run("set_token", 0, token);
  }

  /** Closes the IndexedDB connection under the client (tests of the fallback only). */
  closeStoreForTests(): void {
    this.store.closeConnectionForTests();
  }

  /** Stops: closes the socket, cancels timers, rejects pending promises with `closed`,
   * and hands over the last events now (the page may be going away). Store writes
   * already asked for still finish; then the database connection is closed. Calls
   * after this reject (or throw) with `closed`. */
  close(): void {
    if (this.closed) return;
    this.run("disconnect");
    this.closed = true;
    this.retire();
    clearTimeout(this.wakeTimer);
    const w = this.waiters;
    for (const [, reject] of w.connect) reject(closedError());
    for (const [, [, reject]] of [...w.subscribe, ...w.acks, ...w.queued]) reject(closedError());
    w.connect = [];
    w.subscribe = [];
    w.acks = [];
    w.queued = [];
    if (!this.persisting) this.store.close();
    this.flush();
  }

  /** Runs one core call with the clocks, then performs every output. Inputs that arise
   * while performing outputs (a failed send or open) are fed later, in order. Once
   * closed, only the store's confirmations still go in. */
  private run(name: string, id = 0, a = "", b = "", c = "", d = "", then?: (result: string) => void): string {
    if (this.closed && name !== "persisted" && name !== "persist_failed") throw closedError();
    let result: string;
    try {
      result = this.core.call(...clocks(), name, id, a, b, c, d);
      then?.(result);
    } catch (e) {
      throw coreError(e);
    } finally {
      this.drain();
    }
    return result;
  }

  private drain(): void {
    const outputs: Output[] = JSON.parse(this.core.poll());
    this.draining = true;
    try {
      this.perform(outputs);
    } finally {
      this.draining = false;
    }
  }

  private perform(outputs: Output[]): void {
    for (const out of outputs) {
      switch (out.op) {
        case "open":
          this.retire();
          this.open(out.transport, out.url);
          break;
        case "close":
          if (this.socket?.id === out.transport) this.retire();
          break;
        case "send":
          if (this.socket?.id === out.transport) {
            try {
              this.socket.ws.send(out.text);
            } catch (e) {
              this.retire();
              this.later("closed", out.transport, `send failed: ${e}`);
            }
          }
          break;
        case "token":
          this.fetchToken();
          break;
        case "persist":
          this.persistQueue.push(out);
          if (!this.persisting) {
            this.persisting = true;
            void this.runStore();
          }
          break;
        case "events":
          this.unsettled.push(out.events);
          this.pending.push(...out.events);
          break;
        case "wake":
          if (this.closed) return;
          if (out.at !== this.wakeAt || (out.at !== null && this.wakeTimer === undefined)) {
            clearTimeout(this.wakeTimer);
            this.wakeTimer = undefined;
            this.wakeAt = out.at;
            if (out.at !== null) {
              const delay = Math.max(0, out.at - clocks()[0]);
              this.wakeTimer = setTimeout(() => {
                this.wakeTimer = undefined;
                this.input("timeout");
              }, Math.min(delay, 2 ** 31 - 1));
            }
          }
          this.scheduleFlush();
      }
    }
  }

  /** An input from a callback (socket, timer, store, token): ignored once closed. */
  private input(name: string, id = 0, a = ""): string | undefined {
    if (this.draining) {
      // Outputs are being performed: feed it after them, in order.
      this.later(name, id, a);
      return undefined;
    }
    return this.closed ? undefined : this.run(name, id, a);
  }

  /** `input`, from a microtask (not while outputs are being performed). */
  private later(name: string, id: number, a: string): void {
    queueMicrotask(() => this.input(name, id, a));
  }

  private open(transport: number, url: string): void {
    if (this.closed) return;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.later("closed", transport, `cannot open: ${(e as Error).message ?? e}`);
      return;
    }
    this.socket = { id: transport, ws };
    ws.onopen = () => this.input("opened", transport);
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") return;
      const problem = this.input("frame", transport, event.data);
      if (problem) console.warn("tidings: undecodable frame ignored:", problem);
    };
    ws.onclose = (event) => {
      if (this.socket?.id === transport) this.retire();
      this.input("closed", transport, `closed (${event.code}) ${event.reason}`);
    };
  }

  /** Detaches and closes the current socket. */
  private retire(): void {
    const socket = this.socket;
    if (!socket) return;
    this.socket = undefined;
    socket.ws.onopen = socket.ws.onmessage = socket.ws.onclose = socket.ws.onerror = null;
    try {
      socket.ws.close(1000, "client closed");
    } catch {
      // Already closed.
    }
  }

  private async fetchToken(): Promise<void> {
    // Never call app code while outputs are being performed (a provider that throws or
    // calls the client synchronously would re-enter the drain).
    await null;
    let ok = false;
    let value: string;
    try {
      if (!this.config.getToken) throw new Error("no token provider");
      const token = await this.config.getToken();
      if (typeof token !== "string") throw new Error("the token provider must return a string");
      [ok, value] = [true, token];
    } catch (e) {
      value = (e as Error)?.message ?? String(e);
    }
    this.input(ok ? "token" : "token_failed", 0, value);
  }

  /** Applies store writes one at a time, in order, feeding each confirmation back. */
  private async runStore(): Promise<void> {
    try {
      for (let op = this.persistQueue.shift(); op; op = this.persistQueue.shift()) {
        let failure: string | undefined;
        try {
          await this.store.apply(op.kind);
        } catch (e) {
          failure = (e as Error).message;
        }
        // Even a closed client confirms writes (it opens nothing and sends nothing).
        const id = op.id;
        if (failure === undefined) this.run("persisted", id);
        else this.run("persist_failed", id, failure);
      }
    } catch (e) {
      console.error("tidings: store queue stopped", e);
    } finally {
      this.persisting = false;
      if (this.closed) this.store.close();
      for (const [resolve] of this.waiters.storeIdle.splice(0)) resolve(undefined);
    }
  }

  private resolveWaiters(events: any[]): void {
    const w = this.waiters;
    const settle = (list: [string, Settle][], key: string, outcome: (s: Settle) => void) => {
      for (let i = list.length - 1; i >= 0; i--) {
        if (list[i][0] === key) outcome(list.splice(i, 1)[0][1]);
      }
    };
    for (const e of events) {
      if (e.type === "state") {
        const s = e.new;
        const outcome =
          s.state === "connected"
            ? ([resolve]: Settle) => resolve(undefined)
            : s.state === "failed"
              ? ([, reject]: Settle) =>
                  reject(new TidingsError(s.code, `connection failed (${s.code}): ${s.message}`))
              : s.state === "disconnected"
                ? ([, reject]: Settle) => reject(closedError())
                : undefined;
        if (outcome) w.connect.splice(0).forEach(outcome);
      } else if (e.type === "subscription") {
        const s = e.state;
        if (s.state === "subscribed") settle(w.subscribe, e.channel, ([resolve]) => resolve(undefined));
        else if (s.state === "failed") settle(w.subscribe, e.channel, ([, reject]) => reject(toError(s.error)));
        else if (s.state === "unsubscribed")
          settle(w.subscribe, e.channel, ([, reject]) => reject(new TidingsError("cancelled", "message cancelled")));
      } else if (e.type === "message") {
        const s = e.status;
        if (s.status !== "persisting") {
          settle(w.queued, e.msg_id, ([resolve, reject]) =>
            s.status === "failed" ? reject(toError(s.error)) : resolve(e.msg_id),
          );
        }
        if (s.status === "acked") {
          settle(w.acks, e.msg_id, ([resolve]) => resolve({ msgId: e.msg_id, epoch: s.epoch, offset: s.offset }));
        } else if (s.status === "failed") {
          settle(w.acks, e.msg_id, ([, reject]) => reject(toError(s.error)));
        }
      }
    }
  }

  private scheduleFlush(): void {
    if (!this.pending.length || this.flushTimer !== undefined || this.flushFrame !== undefined || this.flushQueued) {
      return;
    }
    const flush = () => this.flush();
    const doc = g.document;
    if (this.config.flush === "microtask") {
      // A zero-delay timer keeps it out of the current call stack.
      this.flushTimer = setTimeout(flush, 0);
    } else if (typeof g.requestAnimationFrame === "function" && doc && doc.visibilityState === "visible") {
      this.flushFrame = g.requestAnimationFrame(flush);
      // Frames stop when the tab gets hidden: a timer makes sure the batch leaves.
      this.flushTimer = setTimeout(flush, 100);
    } else if (doc && doc.visibilityState === "hidden") {
      // A hidden tab paints nothing and its timers wait up to a second; what it holds may
      // be the shared socket's events for the other tabs. Hand them over in a microtask.
      this.flushQueued = true;
      queueMicrotask(flush);
    } else {
      // Workers: no frames, and timers are not throttled.
      this.flushTimer = setTimeout(flush, 16);
    }
  }

  /** Hands the queued events to the app as one batch, in order, then settles the
   * promises they decide. */
  private flush(): void {
    if (this.flushFrame !== undefined) g.cancelAnimationFrame?.(this.flushFrame);
    clearTimeout(this.flushTimer);
    this.flushFrame = this.flushTimer = undefined;
    this.flushQueued = false;
    const batch = this.pending;
    this.pending = [];
    if (batch.length) {
      try {
        this.onBatch(JSON.stringify(batch));
      } catch (e) {
        console.error("tidings: an event listener threw", e);
      }
    }
    for (const events of this.unsettled.splice(0)) this.resolveWaiters(events);
  }
}

/** Lowers stored positions to the ones a taking-over tab last received (same epoch), and
 * adds the ones it has that the store lacks: the previous holder may have stored
 * positions whose events it never broadcast. Replays are deduped per tab. */
function lowerPositions(snapshot: string, floorJson: string): string {
  let floor: Record<string, { epoch: string; offset: number }>;
  try {
    floor = JSON.parse(floorJson);
  } catch {
    return snapshot;
  }
  const s = JSON.parse(snapshot);
  const positions = (s.positions ??= {});
  for (const [channel, seen] of Object.entries(floor ?? {})) {
    if (typeof seen?.epoch !== "string" || typeof seen.offset !== "number") continue;
    // Own properties only: a channel may be named `__proto__`.
    const stored = Object.hasOwn(positions, channel) ? positions[channel] : undefined;
    if (!stored) Object.defineProperty(positions, channel, { value: seen, enumerable: true, writable: true, configurable: true });
    else if (stored.epoch === seen.epoch && stored.offset > seen.offset) stored.offset = seen.offset;
  }
  return JSON.stringify(s);
}
