// A backend runs the commands of one tab's client: `LocalBackend` drives the wasm core in
// this JavaScript context; the tab group (tabs.ts) routes to the tab holding the socket.
import { toError } from "./errors.js";
import type { Ack } from "./types.js";
import initWasm from "../wasm/tidings_wasm.js";
import { Driver } from "./driver.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

export interface Backend {
  connect(): Promise<void>;
  disconnect(): void;
  clear(): Promise<void>;
  subscribe(channel: string): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  /** `json`: the data as JSON text. */
  publish(channel: string, event: string, json: string): Promise<Ack>;
  cancel(msgId: string): Promise<void>;
  /** Raw (snake_case) outbox entries. */
  outbox(): Promise<any[]>;
  /** Raw (snake_case) stats. */
  stats(): Promise<any>;
  lifecycle(change: "online" | "offline" | "suspended" | "resumed"): void;
  setToken(token: string): void;
  close(): void;
}

export interface LocalConfig {
  /** The core's options as JSON text. */
  options: string;
  getToken?: () => string | Promise<string>;
  storage?: "indexeddb" | "memory";
  delivery?: "frame" | "immediate";
  wasm?: any;
  /** Positions to resume from when older than the stored ones (JSON, tab takeover). */
  positions?: string;
  /** Receives each flushed batch as JSON text. */
  onBatch: (json: string) => void;
}

let wasmReady: Promise<unknown> | undefined;

/** Loads the WebAssembly module once per JavaScript context. */
export function loadWasm(source?: any): Promise<unknown> {
  if (!wasmReady) {
    wasmReady = (source === undefined ? initWasm() : initWasm({ module_or_path: source })).catch(
      (e: unknown) => {
        wasmReady = undefined;
        throw e;
      },
    );
  }
  return wasmReady;
}

/** The wasm driver in this context. Calls made before it is ready wait for it. */
export class LocalBackend implements Backend {
  readonly ready: Promise<Driver>;
  private wasm?: Driver;
  private closed = false;

  constructor(config: LocalConfig) {
    this.ready = (async () => {
      await loadWasm(config.wasm);
      const client = await Driver.create(config.options, (json: string) => config.onBatch(json), {
        getToken: config.getToken,
        storage: config.storage ?? "indexeddb",
        flush: config.delivery === "immediate" ? "microtask" : "frame",
        positions: config.positions,
      });
      if (this.closed) {
        client.close();
        throw toError({ code: "closed", message: "client is closed" });
      }
      this.wasm = client;
      return client;
    })();
    this.ready.catch(() => {});
  }

  private async call<T>(f: (w: Driver) => T | Promise<T>): Promise<T> {
    const w = this.wasm ?? (await this.ready);
    try {
      return await f(w);
    } catch (e) {
      throw toError(e);
    }
  }

  private now(f: (w: Driver) => void): void {
    if (this.wasm) f(this.wasm);
    else this.ready.then(f, () => {});
  }

  connect(): Promise<void> {
    return this.call((w) => w.connect());
  }
  disconnect(): void {
    this.now((w) => w.disconnect());
  }
  clear(): Promise<void> {
    return this.call((w) => w.clear());
  }
  subscribe(channel: string): Promise<void> {
    return this.call((w) => w.subscribe(channel));
  }
  async unsubscribe(channel: string): Promise<void> {
    await this.call((w) => w.unsubscribe(channel));
  }
  /** Publishes; resolves on the server's ack. `msgId`: the id to use (see `Driver.publish`). */
  publish(channel: string, event: string, json: string, msgId?: string): Promise<Ack> {
    return this.call((w) => w.publish(channel, event, json, msgId).acked);
  }
  cancel(msgId: string): Promise<void> {
    return this.call((w) => w.cancel(msgId));
  }
  outbox(): Promise<any[]> {
    return this.call((w) => JSON.parse(w.outbox()));
  }
  stats(): Promise<any> {
    return this.call((w) => JSON.parse(w.stats()));
  }
  /** The raw connection state, or undefined before the store loaded. */
  stateNow(): any {
    return this.wasm ? JSON.parse(this.wasm.state()) : undefined;
  }
  /** Resolves once every store write asked for so far is done. */
  whenStored(): Promise<void> {
    return this.call((w) => w.whenStored());
  }
  lifecycle(change: "online" | "offline" | "suspended" | "resumed"): void {
    this.now((w) => w.lifecycle(change));
  }
  setToken(token: string): void {
    this.now((w) => w.setToken(token));
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.wasm) this.wasm.close();
  }
}
