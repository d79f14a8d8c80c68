// One socket for all tabs of an origin (per server URL + user).
//
// Tabs elect a leader with Web Locks (`navigator.locks`), falling back to a heartbeat-only
// election where Web Locks are missing. The leader runs the wasm core (socket, outbox,
// IndexedDB); the others (followers) send it commands over a BroadcastChannel and receive
// every event batch from it.
//
// Protocol (all messages carry the sender's tab id as `from`):
//   leader   {t:"leader", epoch}            I lead from now on (after election or steal)
//   hb       {t:"hb", epoch, hidden}        leader heartbeat, every HEARTBEAT_MS
//   events   {t:"events", epoch, json}      one flushed event batch (JSON text)
//   resign   {t:"resign", epoch}            the leader stops (tab closing, frozen)
//   hello    {t:"hello", subs, connect}     a follower's subscriptions, sent to each new leader
//   welcome  {t:"welcome", to, state}       the leader's answer to hello (connection state)
//   alive    {t:"alive"}                    a follower is still there (every ALIVE_MS)
//   bye      {t:"bye"}                      a tab leaves (its subscriptions are released)
//   cmd      {t:"cmd", id, op, args}        a command for the leader
//   reply    {t:"reply", to, id, ok, value | error}
//
// A publish carries the message id its tab chose (`cmd` publish args: channel, event, data,
// msgId). Whichever leader runs it, and however often (the tab resends what is unanswered
// to each new leader; a stalled old leader may still run a command it got before), the
// server stores it once: the id is its idempotency key, and a leader whose outbox already
// holds the id does not queue it again.
//
// Leadership has an epoch (`max(Date.now(), highest seen + 1)`): messages of an older epoch
// are ignored, and a leader that hears a newer one steps down. A frozen leader keeps its
// lock, so followers that miss heartbeats for TAKEOVER_MS (HIDDEN_TAKEOVER_MS when the leader
// said it is hidden: its timers may be throttled) take it with `steal`; the old leader's lock
// promise rejects when it wakes and it steps down (closing its socket). A leader that gets
// the `freeze` event (or goes into the back/forward cache) resigns at once instead.
// Subscriptions are reference-counted per tab on the leader; a tab not heard from for
// FOLLOWER_EXPIRY_MS (crashed, discarded or frozen) loses its references and its wish for
// the socket until it says hello again (on resume). Each tab dedupes deliveries
// by (channel, epoch, offset) itself, so a takeover that replays from the positions stored
// in IndexedDB delivers nothing twice.
import { errorData, toError, TidingsError } from "./errors.js";
import { LocalBackend, type Backend, type LocalConfig } from "./backend.js";
import { fillRandom } from "./driver.js";
import type { Ack } from "./types.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

export const HEARTBEAT_MS = 1000;
export const TAKEOVER_MS = 3000;
/** A hidden leader's timers may be throttled to one wake-up a minute (Chrome's intensive
 * throttling after 5 minutes in the background): give it that long before taking over.
 * A leader about to be frozen resigns on `freeze`, so takeover is immediate then. */
export const HIDDEN_TAKEOVER_MS = 65000;
/** How often a follower says it is still there. */
export const ALIVE_MS = 10000;
/** A follower silent this long is dropped (three times the minute a hidden tab's timers
 * may wait). */
export const FOLLOWER_EXPIRY_MS = 180000;

type Role = "electing" | "leader" | "follower";

interface Request {
  id: number;
  op: string;
  args: any[];
  resolve: (v: any) => void;
  reject: (e: unknown) => void;
  /** A publish's message id, chosen by this tab. */
  msgId?: string;
}

/** The leader-side driver (the wasm `LocalBackend`; a fake in unit tests). */
export type Local = Pick<
  LocalBackend,
  | "ready"
  | "connect"
  | "disconnect"
  | "clear"
  | "subscribe"
  | "unsubscribe"
  | "publish"
  | "cancel"
  | "outbox"
  | "stats"
  | "stateNow"
  | "lifecycle"
  | "setToken"
  | "close"
>;

/** Internal knobs (unit tests): timers and the driver factory. */
export interface TabOptions {
  heartbeatMs?: number;
  takeoverMs?: number;
  hiddenTakeoverMs?: number;
  aliveMs?: number;
  followerExpiryMs?: number;
  makeLocal?: (config: LocalConfig) => Local;
}

export interface TabHost {
  /** Raw batch (JSON text) for this tab's client. */
  onBatch(json: string): void;
  /** A new leader answered (raw connection state). */
  onWelcome(state: any): void;
  onLeader(isLeader: boolean): void;
  /** This tab's subscriptions and whether it wants a connection (for hello). */
  wanted(): { subs: string[]; connect: boolean };
  /** The last position this tab received per channel (any channel of the group). */
  received(): Record<string, { epoch: string; offset: number }>;
}

const debug = (...args: any[]) => {
  if ((globalThis as any).TIDINGS_DEBUG) console.log("[tidings tabs]", ...args);
};

const randomId = () =>
  Math.random().toString(36).slice(2, 10) + Date.now().toString(36).slice(-4);

/** A message id like the core's: 128 random bits as 32 lowercase hex characters. */
export function newMessageId(): string {
  return Array.from(fillRandom(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class TabGroup implements Backend {
  readonly tabId = randomId();
  role: Role = "electing";
  private epoch = 0;
  private leaderId?: string;
  private lastSeen = Date.now();
  private leaderHidden = false;
  private channel: BroadcastChannel;
  private lockName: string;
  private lockAbort?: AbortController;
  private releaseLock?: () => void;
  private local?: Local;
  private heartbeatMs: number;
  private takeoverMs: number;
  private hiddenTakeoverMs: number;
  private aliveMs: number;
  private followerExpiryMs: number;
  private lastAlive = 0;
  private makeLocal: (config: LocalConfig) => Local;
  private heartbeat?: ReturnType<typeof setInterval>;
  private watchdog?: ReturnType<typeof setInterval>;
  private nextId = 1;
  private requests = new Map<number, Request>();
  private closed = false;
  // Leader state: who wants what.
  private refs = new Map<string, Set<string>>();
  private wantConnect = new Set<string>();
  /** When each follower was last heard from. */
  private heard = new Map<string, number>();

  constructor(
    namespace: string,
    private config: Omit<LocalConfig, "onBatch">,
    private host: TabHost,
    options: TabOptions = {},
  ) {
    this.heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS;
    this.takeoverMs = options.takeoverMs ?? TAKEOVER_MS;
    this.hiddenTakeoverMs = options.hiddenTakeoverMs ?? HIDDEN_TAKEOVER_MS;
    this.aliveMs = options.aliveMs ?? ALIVE_MS;
    this.followerExpiryMs = options.followerExpiryMs ?? FOLLOWER_EXPIRY_MS;
    this.makeLocal = options.makeLocal ?? ((c) => new LocalBackend(c));
    this.channel = new BroadcastChannel("tidings:" + namespace);
    this.lockName = "tidings:" + namespace;
    this.channel.onmessage = (e) => this.onMessage(e.data);
    this.watchdog = setInterval(() => this.tick(), this.heartbeatMs);
    if (hasLocks()) {
      this.queueForLock();
    } else {
      // Heartbeat-only election: claim leadership after a short silence at start-up.
      this.lastSeen = Date.now() - this.takeoverMs + Math.min(1200, this.takeoverMs / 2);
    }
    // Ask whoever leads to announce itself (a heartbeat comes within a second anyway).
    this.post({ t: "hello", ...this.host.wanted() });
  }

  get isLeader(): boolean {
    return this.role === "leader";
  }

  // ---------------------------------------------------------------- election

  private queueForLock(): void {
    this.lockAbort = new AbortController();
    navigator.locks
      .request(this.lockName, { signal: this.lockAbort.signal }, () => this.holdLock())
      .catch(() => this.lostLock());
  }

  private holdLock(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.becomeLeader();
    return new Promise<void>((resolve) => {
      this.releaseLock = resolve;
    });
  }

  private lostLock(): void {
    // Rejected: aborted before we got it (a steal of ours replaced it), or stolen while
    // we held it (we were frozen and someone took over).
    if (this.role === "leader" && this.releaseLock) this.stepDown("lock lost");
  }

  private takeOver(): void {
    if (this.closed || this.role === "leader") return;
    if (hasLocks()) {
      this.lockAbort?.abort();
      this.lockAbort = undefined;
      navigator.locks
        .request(this.lockName, { steal: true }, () => this.holdLock())
        .catch(() => this.lostLock());
    } else {
      this.becomeLeader();
    }
  }

  private tick(): void {
    if (this.closed) return;
    const now = Date.now();
    if (this.role === "leader") {
      for (const [tab, at] of this.heard) {
        if (now - at > this.followerExpiryMs) {
          debug(this.tabId, "follower gone:", tab);
          this.onBye(tab);
        }
      }
      return;
    }
    if (now - this.lastAlive >= this.aliveMs) {
      this.lastAlive = now;
      this.post({ t: "alive" });
    }
    const patience = this.leaderId && this.leaderHidden ? this.hiddenTakeoverMs : this.takeoverMs;
    if (Date.now() - this.lastSeen > patience) {
      // No heartbeat: the leader is gone or frozen (or there never was one).
      debug(this.tabId, "no heartbeat: taking over");
      this.lastSeen = Date.now();
      this.takeOver();
    }
  }

  private becomeLeader(): void {
    if (this.role === "leader") return;
    debug(this.tabId, "becomes leader");
    this.role = "leader";
    this.epoch = Math.max(Date.now(), this.epoch + 1);
    this.leaderId = this.tabId;
    this.refs.clear();
    this.wantConnect.clear();
    this.heard.clear();
    const epoch = this.epoch;
    this.local = this.makeLocal({
      ...this.config,
      // Resume from what this tab last received: the previous leader may have stored
      // positions of events it never broadcast (closed or frozen in between).
      positions: JSON.stringify(this.host.received()),
      onBatch: (json) => {
        if (this.role !== "leader" || this.epoch !== epoch) return;
        this.post({ t: "events", epoch, json });
        this.host.onBatch(json);
        // Publishes this tab made before it led (handed over from the previous leader).
        this.settleFromBatch(json);
      },
    });
    this.post({ t: "leader", epoch });
    this.heartbeat = setInterval(
      () => this.post({ t: "hb", epoch, hidden: isHidden() }),
      this.heartbeatMs,
    );
    // Our own wishes first, then whatever was waiting for a leader.
    this.onHello(this.tabId, this.host.wanted());
    this.resendPending();
    this.host.onLeader(true);
  }

  /** Stops leading: closes the socket, releases the lock, rejoins as a follower. */
  stepDown(why: string): void {
    if (this.role !== "leader") return;
    debug(this.tabId, "steps down:", why);
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    // Detached before it closes: closing hands over the last events, and a listener
    // calling back must not reach the closed driver (its request waits for the next
    // leader instead).
    const local = this.local;
    this.local = undefined;
    local?.close();
    this.post({ t: "resign", epoch: this.epoch });
    this.role = "follower";
    this.leaderId = undefined;
    this.lastSeen = Date.now();
    const release = this.releaseLock;
    this.releaseLock = undefined;
    release?.();
    this.host.onLeader(false);
    if (!this.closed && hasLocks()) this.queueForLock();
  }

  /** Page is being frozen or hidden in the back/forward cache. */
  suspend(): void {
    if (this.role === "leader") this.stepDown("frozen");
  }

  /** Page resumed: make sure the current leader knows our subscriptions. */
  resume(): void {
    this.lastSeen = Date.now();
    if (this.role !== "leader") this.post({ t: "hello", ...this.host.wanted() });
  }

  // ---------------------------------------------------------------- messages

  private post(message: any): void {
    if (this.closed && message.t !== "bye" && message.t !== "resign") return;
    try {
      this.channel.postMessage({ ...message, from: this.tabId });
    } catch {
      // Channel closed.
    }
  }

  private seeEpoch(epoch: number, from: string): boolean {
    if (epoch < this.epoch) return false;
    if (epoch === this.epoch && this.leaderId && from !== this.leaderId) {
      // Two leaders with one epoch (no Web Locks): the larger tab id wins.
      if (from < this.leaderId) return false;
    }
    if (this.role === "leader" && from !== this.tabId) {
      this.stepDown("newer leader");
    }
    const changed = this.leaderId !== from || this.epoch !== epoch;
    this.epoch = epoch;
    this.leaderId = from;
    this.lastSeen = Date.now();
    if (changed) {
      this.role = "follower";
      this.onNewLeader();
    }
    return true;
  }

  private onMessage(m: any): void {
    if (this.closed || !m || m.from === this.tabId) return;
    if (m.t !== "hb" && m.t !== "events" && m.t !== "alive") debug(this.tabId, "got", m.t, m.from, m.epoch ?? "");
    if (this.role === "leader" && (m.t === "hello" || m.t === "alive" || m.t === "cmd")) {
      this.heard.set(m.from, Date.now());
    }
    switch (m.t) {
      case "leader":
      case "hb":
        if (this.seeEpoch(m.epoch, m.from)) this.leaderHidden = m.hidden === true;
        break;
      case "events":
        if (this.seeEpoch(m.epoch, m.from)) this.onFollowerBatch(m.json);
        break;
      case "resign":
        if (m.epoch === this.epoch && m.from === this.leaderId) {
          this.leaderId = undefined;
          // The lock is free: a queued tab gets it at once. Without Web Locks, race.
          if (!hasLocks()) setTimeout(() => this.tick(), Math.random() * 300);
          this.lastSeen = Date.now() - this.takeoverMs + Math.min(500, this.takeoverMs / 4);
        }
        break;
      case "hello":
        if (this.role === "leader") this.onHello(m.from, m);
        break;
      case "bye":
        if (this.role === "leader") this.onBye(m.from);
        break;
      case "cmd":
        if (this.role === "leader") this.onCommand(m.from, m.id, m.op, m.args);
        break;
      case "welcome":
        if (m.from === this.leaderId) this.lastSeen = Date.now();
        if (m.to === this.tabId && m.from === this.leaderId) this.host.onWelcome(m.state);
        break;
      case "reply":
        if (m.to === this.tabId) this.onReply(m);
        break;
    }
  }

  private onFollowerBatch(json: string): void {
    this.host.onBatch(json);
    this.settleFromBatch(json);
  }

  /** Publishes of this tab resolve from the message events of whoever leads. */
  private settleFromBatch(json: string): void {
    if (![...this.requests.values()].some((r) => r.msgId)) return;
    let events: any[];
    try {
      events = JSON.parse(json);
    } catch {
      return;
    }
    for (const e of events) {
      if (e.type !== "message") continue;
      for (const r of this.requests.values()) {
        if (r.msgId !== e.msg_id) continue;
        if (e.status.status === "acked") {
          this.requests.delete(r.id);
          r.resolve({ msgId: e.msg_id, epoch: e.status.epoch, offset: e.status.offset });
        } else if (e.status.status === "failed") {
          this.requests.delete(r.id);
          r.reject(toError(e.status.error));
        }
      }
    }
  }

  /** A new leader: tell it what we want and resend what it may not have seen. */
  private onNewLeader(): void {
    this.post({ t: "hello", ...this.host.wanted() });
    this.resendPending();
  }

  /** Everything unanswered goes to the new leader. A publish keeps its message id: if
   * the new leader's outbox (restored from IndexedDB) has it, it is not queued twice; if
   * the old leader had sent it, the server answers with the original offset. */
  private resendPending(): void {
    for (const r of this.requests.values()) this.send(r);
  }

  private send(r: Request): void {
    if (this.role === "leader") this.runLocally(r);
    // Without a known leader it waits: a new leader gets every pending request.
    else if (this.leaderId) this.post({ t: "cmd", id: r.id, op: r.op, args: r.args });
  }

  /** A leader that stepped down answers `closed`: keep the request for the next one. */
  private retryable(error: TidingsError): boolean {
    return error.code === "closed" && !this.closed;
  }

  private onReply(m: any): void {
    const r = this.requests.get(m.id);
    if (!r) return;
    const error = m.ok ? undefined : toError(m.error);
    if (error && this.retryable(error)) return;
    this.requests.delete(m.id);
    if (error) r.reject(error);
    else r.resolve(m.value);
  }

  /** Runs a command through the leader (this tab or another). */
  private request(op: string, args: any[], msgId?: string): Promise<any> {
    return new Promise((resolve, reject) => {
      const r: Request = { id: this.nextId++, op, args, resolve, reject, msgId };
      this.requests.set(r.id, r);
      if (this.closed) {
        this.requests.delete(r.id);
        reject(new TidingsError("closed", "client is closed"));
        return;
      }
      this.send(r);
    });
  }

  private runLocally(r: Request): void {
    this.execute(this.tabId, r.op, r.args).then(
      (value) => {
        if (this.requests.delete(r.id)) r.resolve(value);
      },
      (e) => {
        const error = toError(e);
        if (this.retryable(error)) return;
        if (this.requests.delete(r.id)) r.reject(error);
      },
    );
  }

  // ---------------------------------------------------------------- leader side

  private onCommand(from: string, id: number, op: string, args: any[]): void {
    this.execute(from, op, args).then(
      (value) => this.post({ t: "reply", to: from, id, ok: true, value }),
      (error) => this.post({ t: "reply", to: from, id, ok: false, error: errorData(toError(error)) }),
    );
  }

  private onHello(from: string, wanted: { subs: string[]; connect: boolean }): void {
    const local = this.local;
    if (!local) return;
    for (const channel of wanted.subs ?? []) this.addRef(from, channel).catch(() => {});
    if (wanted.connect) {
      this.wantConnect.add(from);
      local.connect().catch(() => {});
    } else if (this.wantConnect.delete(from) && this.wantConnect.size === 0) {
      local.disconnect();
    }
    if (from !== this.tabId) {
      local.ready.then(
        () => this.post({ t: "welcome", to: from, state: local.stateNow() }),
        () => {},
      );
    }
  }

  private onBye(from: string): void {
    this.heard.delete(from);
    for (const [channel, tabs] of this.refs) {
      if (tabs.delete(from) && tabs.size === 0) {
        this.refs.delete(channel);
        this.local?.unsubscribe(channel).catch(() => {});
      }
    }
    if (this.wantConnect.delete(from) && this.wantConnect.size === 0) this.local?.disconnect();
  }

  private addRef(from: string, channel: string): Promise<void> {
    let tabs = this.refs.get(channel);
    if (!tabs) this.refs.set(channel, (tabs = new Set()));
    tabs.add(from);
    return this.local!.subscribe(channel);
  }

  private async execute(from: string, op: string, args: any[]): Promise<any> {
    const local = this.local;
    if (!local) throw new TidingsError("closed", "not the leader");
    switch (op) {
      case "connect":
        this.wantConnect.add(from);
        return local.connect();
      case "disconnect":
        this.wantConnect.delete(from);
        if (this.wantConnect.size === 0) local.disconnect();
        return;
      case "subscribe":
        return this.addRef(from, args[0]);
      case "unsubscribe": {
        const tabs = this.refs.get(args[0]);
        if (tabs?.delete(from) && tabs.size === 0) {
          this.refs.delete(args[0]);
          return local.unsubscribe(args[0]);
        }
        return;
      }
      case "publish":
        return local.publish(args[0], args[1], args[2], args[3]);
      case "cancel":
        return local.cancel(args[0]);
      case "outbox":
        return local.outbox();
      case "stats":
        return local.stats();
      case "clear":
        this.refs.clear();
        return local.clear();
      case "setToken":
        return local.setToken(args[0]);
      case "lifecycle":
        return local.lifecycle(args[0]);
      default:
        throw new TidingsError("bad_request", "unknown command " + op);
    }
  }

  // ---------------------------------------------------------------- Backend

  connect(): Promise<void> {
    return this.request("connect", []);
  }
  disconnect(): void {
    this.request("disconnect", []).catch(() => {});
  }
  clear(): Promise<void> {
    return this.request("clear", []);
  }
  subscribe(channel: string): Promise<void> {
    return this.request("subscribe", [channel]);
  }
  unsubscribe(channel: string): Promise<void> {
    return this.request("unsubscribe", [channel]);
  }
  publish(channel: string, event: string, json: string): Promise<Ack> {
    const msgId = newMessageId();
    return this.request("publish", [channel, event, json, msgId], msgId);
  }
  cancel(msgId: string): Promise<void> {
    return this.request("cancel", [msgId]);
  }
  outbox(): Promise<any[]> {
    return this.request("outbox", []);
  }
  stats(): Promise<any> {
    return this.request("stats", []);
  }
  lifecycle(change: "online" | "offline" | "suspended" | "resumed"): void {
    // Every tab sees the same network; only the socket holder acts on it.
    if (this.role === "leader") this.local?.lifecycle(change);
  }
  setToken(token: string): void {
    this.request("setToken", [token]).catch(() => {});
  }
  close(): void {
    if (this.closed) return;
    if (this.role === "leader") this.stepDown("closed");
    this.post({ t: "bye" });
    this.closed = true;
    if (this.watchdog) clearInterval(this.watchdog);
    this.lockAbort?.abort();
    for (const r of this.requests.values()) r.reject(new TidingsError("closed", "client is closed"));
    this.requests.clear();
    this.channel.close();
  }
}

function isHidden(): boolean {
  const doc = (globalThis as any).document;
  return !!doc && doc.visibilityState === "hidden";
}

function hasLocks(): boolean {
  return typeof navigator !== "undefined" && !!(navigator as any).locks?.request;
}

/** True where tabs can share a socket (BroadcastChannel exists). */
export function canShare(): boolean {
  return typeof BroadcastChannel === "function";
}
