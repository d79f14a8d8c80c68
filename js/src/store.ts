// The IndexedDB store behind the core's `persist` outputs and its start-up snapshot.
//
// One database, `tidings`, shared by every namespace (`tidings|<url>|<user>`) and every tab
// of the origin. Three object stores with out-of-line array keys `[namespace, name]`:
//   outbox:    [ns, msg_id]  → JSON text `{"seq": n, "entry": {...}}` (seq keeps queue order)
//   positions: [ns, channel] → JSON text `{"epoch", "offset"}`
//   patterns:  [ns, pattern] → since (server ms), a number
// Every write is one transaction, awaited until it commits (quota errors surface there).
// A failing write (quota, a database closed under the page, private mode) is reported to
// the core, which warns the app with `store_warning`; the store drops the namespace's
// positions (they would go stale), then keeps nothing and the client carries on in memory.
// Nothing crashes.

/* eslint-disable @typescript-eslint/no-explicit-any */

export const DB_NAME = "tidings";
const OUTBOX = "outbox";
const POSITIONS = "positions";
const PATTERNS = "patterns";
const ALL = [OUTBOX, POSITIONS, PATTERNS];

/** A write the core asked for (`persist.kind`, the serde shape of `PersistKind`). */
export type PersistKind =
  | { op: "put_message"; entry: { msg_id: string } & Record<string, unknown> }
  | { op: "remove_message"; msg_id: string }
  | { op: "put_position"; channel: string; position: { epoch: string; offset: number } }
  | { op: "remove_position"; channel: string }
  | { op: "put_pattern_since"; pattern: string; since: number }
  | { op: "clear" };

const describe = (e: any): string => {
  const error = e?.target?.error ?? e?.error ?? e;
  return error?.name ? `${error.name}: ${error.message}` : String(error?.message ?? error);
};

/** Resolves with the request's result once it succeeded. */
const done = <T>(request: IDBRequest<T>): Promise<T> =>
  new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(new Error(describe(request.error)));
  });

/** Resolves once the transaction committed. */
const committed = (tx: IDBTransaction): Promise<void> =>
  new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = tx.onabort = () => reject(new Error(describe(tx.error ?? "transaction aborted")));
  });

function openDb(): Promise<IDBDatabase> {
  const factory: IDBFactory | undefined = (globalThis as any).indexedDB;
  if (!factory) return Promise.reject(new Error("this context has no indexedDB"));
  const request = factory.open(DB_NAME, 1);
  request.onupgradeneeded = () => {
    const db = request.result;
    for (const name of ALL) if (!db.objectStoreNames.contains(name)) db.createObjectStore(name);
  };
  return done(request).then((db) => {
    // Another tab opening a newer schema: let it, and fail our next write (which warns
    // and carries on in memory) instead of blocking its upgrade.
    db.onversionchange = () => db.close();
    return db;
  });
}

/** The outbox, positions and pattern times of one namespace. */
export class Store {
  private db?: IDBDatabase;
  /** msg_id → queue position, so a replaced message keeps its place. */
  private seqs = new Map<string, number>();
  private nextSeq = 1;

  private constructor(private readonly ns: string) {}

  /** Opens the IndexedDB store; on failure a memory-only store and the reason. */
  static async open(ns: string): Promise<{ store: Store; warning?: string }> {
    const store = new Store(ns);
    try {
      store.db = await openDb();
      return { store };
    } catch (e) {
      return {
        store,
        warning: `IndexedDB unavailable, offline queue kept in memory only: ${describe(e)}`,
      };
    }
  }

  /** A store that keeps nothing (the core holds everything in memory). */
  static memory(ns: string): Store {
    return new Store(ns);
  }

  /** True while writes reach IndexedDB. */
  get durable(): boolean {
    return this.db !== undefined;
  }

  private range(): IDBKeyRange {
    return IDBKeyRange.bound([this.ns], [this.ns, []]);
  }

  /** Reads this namespace's snapshot as the core's JSON (`{outbox, positions, pattern_since}`). */
  async load(): Promise<string> {
    const db = this.db;
    if (!db) return "{}";
    try {
      const tx = db.transaction(ALL, "readonly");
      const range = this.range();
      const rows: { seq: number; entry: any }[] = [];
      for (const text of await done(tx.objectStore(OUTBOX).getAll(range))) {
        try {
          const row = JSON.parse(text);
          if (typeof row?.seq === "number" && row.entry) rows.push(row);
        } catch {
          // A damaged record must not cost the rest of the queue.
        }
      }
      rows.sort((a, b) => a.seq - b.seq);
      for (const row of rows) this.seqs.set(row.entry.msg_id, row.seq);
      this.nextSeq = rows.reduce((max, r) => Math.max(max, r.seq), 0) + 1;
      const read = async (name: string, value: (v: any) => any) => {
        // No prototype: a channel may be named `__proto__`.
        const out: Record<string, unknown> = Object.create(null);
        const store = tx.objectStore(name);
        const [keys, values] = await Promise.all([done(store.getAllKeys(range)), done(store.getAll(range))]);
        keys.forEach((key: any, i) => {
          try {
            const v = value(values[i]);
            if (v !== undefined) out[key[1]] = v;
          } catch {
            // Skipped like a damaged outbox record.
          }
        });
        return out;
      };
      const positions = await read(POSITIONS, (v) => JSON.parse(v));
      const since = await read(PATTERNS, (v) => (typeof v === "number" ? v : undefined));
      return JSON.stringify({ outbox: rows.map((r) => r.entry), positions, pattern_since: since });
    } catch (e) {
      this.close();
      throw new Error(describe(e));
    }
  }

  /** Applies one write. After a failure the store keeps nothing (the error is reported once). */
  async apply(kind: PersistKind): Promise<void> {
    const db = this.db;
    if (!db) return;
    let seq = 0;
    if (kind.op === "put_message") {
      seq = this.seqs.get(kind.entry.msg_id) ?? this.nextSeq++;
      this.seqs.set(kind.entry.msg_id, seq);
    } else if (kind.op === "remove_message") {
      this.seqs.delete(kind.msg_id);
    } else if (kind.op === "clear") {
      this.seqs.clear();
    }
    const name = kind.op.endsWith("message") ? OUTBOX : kind.op.endsWith("position") ? POSITIONS : PATTERNS;
    try {
      const tx = db.transaction(kind.op === "clear" ? ALL : [name], "readwrite");
      const key = (k: string) => [this.ns, k];
      switch (kind.op) {
        case "put_message":
          tx.objectStore(OUTBOX).put(JSON.stringify({ seq, entry: kind.entry }), key(kind.entry.msg_id));
          break;
        case "remove_message":
          tx.objectStore(OUTBOX).delete(key(kind.msg_id));
          break;
        case "put_position":
          tx.objectStore(POSITIONS).put(JSON.stringify(kind.position), key(kind.channel));
          break;
        case "remove_position":
          tx.objectStore(POSITIONS).delete(key(kind.channel));
          break;
        case "put_pattern_since":
          tx.objectStore(PATTERNS).put(kind.since, key(kind.pattern));
          break;
        case "clear":
          for (const n of ALL) tx.objectStore(n).delete(this.range());
      }
      await committed(tx);
    } catch (e) {
      this.forgetPositions(db);
      this.close();
      throw new Error(describe(e));
    }
  }

  /** After a failed write the client carries on in memory and the stored positions go
   * stale: drop them (best effort; deletes work under a full quota), so the next start
   * asks the server afresh (`recovered: false` tells the app to reload) instead of
   * replaying what this session already delivered. The outbox stays: a message sent
   * twice is stored once by the server. */
  private forgetPositions(db: IDBDatabase): void {
    try {
      const tx = db.transaction([POSITIONS, PATTERNS], "readwrite");
      for (const name of [POSITIONS, PATTERNS]) tx.objectStore(name).delete(this.range());
    } catch {
      // The connection is gone already: nothing more to do.
    }
  }

  /** Closes the connection but keeps using it, so the next write fails the way it does
   * when the browser closes the database under a page (tests only). */
  closeConnectionForTests(): void {
    this.db?.close();
  }

  /** Stops writing and closes the connection once its pending transactions are done
   * (after a failure, or when the client closed; other tabs may upgrade or delete it). */
  close(): void {
    this.db?.close();
    this.db = undefined;
  }
}
