//! The IndexedDB store behind the core's `Persist` / `Restore`.
//!
//! One database, `tidings`, shared by every namespace (`Options::storage_namespace()`:
//! server URL + user) and by every tab of the origin. Three object stores with
//! out-of-line array keys `[namespace, name]`:
//!
//! - `outbox`: `[ns, msg_id]` → JSON text `{ seq, entry }` (`seq` keeps queue order),
//! - `positions`: `[ns, channel]` → JSON text `{ epoch, offset }`,
//! - `patterns`: `[ns, pattern]` → since (server ms).
//!
//! Every write is one transaction, awaited until it commits (quota errors surface there).
//! A failing write (quota, a database closed under us, private mode) is reported to the
//! core as `PersistFailed` (which warns the app with `store_warning`) and the store then
//! carries on in memory only: the client keeps working, nothing crashes.
//!
//! IndexedDB is used through `web-sys` directly: each request becomes a `Promise` whose
//! resolve/reject functions are the request's own success/error handlers, so no Rust
//! closure is created per request. (The first version used rexie; the direct calls keep
//! the same schema and took the optimized wasm from 362 KB to 310 KB, 155 to 132 KB gzip,
//! together with dropping hash maps from the driver.)

use js_sys::{Array, Function, Promise, Reflect};
use tidings::{OutboxEntry, PersistKind, Snapshot};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    IdbDatabase, IdbKeyRange, IdbObjectStore, IdbOpenDbRequest, IdbRequest, IdbTransaction,
    IdbTransactionMode,
};

use tidings::json::{self, ObjectWriter, ToJson};
use tidings::store::number_u64;

/// Name of the IndexedDB database.
pub const DB_NAME: &str = "tidings";
const OUTBOX: &str = "outbox";
const POSITIONS: &str = "positions";
const PATTERNS: &str = "patterns";

/// An outbox record: `{"seq": n, "entry": {...}}`.
struct Row {
    seq: f64,
    entry: OutboxEntry,
}

impl Row {
    fn to_json(&self) -> String {
        let mut out = String::new();
        let mut obj = ObjectWriter::new(&mut out);
        obj.u64("seq", self.seq as u64);
        self.entry.write_json(obj.key("entry"));
        obj.end();
        out
    }

    fn from_json(text: &str) -> Option<Self> {
        let value = json::parse(text).ok()?;
        Some(Self {
            seq: number_u64(value.get("seq")?)? as f64,
            entry: OutboxEntry::from_json_value(value.get("entry")?).ok()?,
        })
    }
}

/// Where writes go.
#[derive(Debug)]
pub struct Store {
    db: Option<IdbDatabase>,
    namespace: String,
    /// `msg_id` → queue position, so a replaced message keeps its place.
    seqs: Vec<(String, f64)>,
    next_seq: f64,
}

impl Store {
    /// Opens the IndexedDB store for a namespace. On failure (no IndexedDB, blocked,
    /// private mode) returns a memory-only store and the reason.
    pub async fn open(namespace: &str) -> (Self, Option<String>) {
        let mut store = Self::memory(namespace);
        match open_db().await {
            Ok(db) => {
                store.db = Some(db);
                (store, None)
            }
            Err(e) => (
                store,
                Some(format!(
                    "IndexedDB unavailable, offline queue kept in memory only: {e}"
                )),
            ),
        }
    }

    /// A store that keeps nothing (the core holds the state in memory).
    pub fn memory(namespace: &str) -> Self {
        Self {
            db: None,
            namespace: namespace.to_owned(),
            seqs: Vec::new(),
            next_seq: 1.0,
        }
    }

    /// True while writes reach IndexedDB.
    pub fn is_durable(&self) -> bool {
        self.db.is_some()
    }

    /// Reads this namespace's snapshot.
    pub async fn load(&mut self) -> Result<Snapshot, String> {
        let Some(db) = &self.db else {
            return Ok(Snapshot::default());
        };
        match load(db, &self.namespace).await {
            Ok((snapshot, seqs)) => {
                self.next_seq = seqs.iter().fold(0.0_f64, |a, (_, b)| a.max(*b)) + 1.0;
                self.seqs = seqs;
                Ok(snapshot)
            }
            Err(e) => {
                self.fall_back();
                Err(e)
            }
        }
    }

    /// Applies one write. After a failure the store stays in memory (returns the error
    /// once; later writes succeed without touching IndexedDB).
    pub async fn apply(&mut self, kind: &PersistKind) -> Result<(), String> {
        if self.db.is_none() {
            return Ok(());
        }
        let mut seq = 0.0;
        match kind {
            PersistKind::PutMessage { entry } => {
                seq = match self.seqs.iter().find(|(id, _)| *id == entry.msg_id) {
                    Some((_, seq)) => *seq,
                    None => {
                        let seq = self.next_seq;
                        self.next_seq += 1.0;
                        self.seqs.push((entry.msg_id.clone(), seq));
                        seq
                    }
                };
            }
            PersistKind::RemoveMessage { msg_id } => self.seqs.retain(|(id, _)| id != msg_id),
            PersistKind::Clear => self.seqs.clear(),
            _ => {}
        }
        let Some(db) = &self.db else {
            return Ok(());
        };
        let result = apply(db, &self.namespace, kind, seq).await;
        if result.is_err() {
            self.fall_back();
        }
        result
    }

    /// Closes the database connection but keeps using it, so the next write fails the
    /// way it does when the browser closes the database under a page (tests only).
    #[doc(hidden)]
    pub fn close_connection_for_tests(&self) {
        if let Some(db) = &self.db {
            db.close();
        }
    }

    fn fall_back(&mut self) {
        if let Some(db) = self.db.take() {
            db.close();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Close the connection so other tabs can upgrade or delete the database.
        self.fall_back();
    }
}

fn describe(value: JsValue) -> String {
    if let Some(e) = value.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    // A DOMException (QuotaExceededError, InvalidStateError...) or an error event.
    let error = Reflect::get(&value, &"target".into())
        .ok()
        .and_then(|t| Reflect::get(&t, &"error".into()).ok())
        .filter(|e| e.is_object())
        .unwrap_or(value);
    let text = |key: &str| {
        Reflect::get(&error, &key.into())
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default()
    };
    format!("{}: {}", text("name"), text("message"))
}

/// Resolves with the request's result once it succeeded.
async fn done(request: &IdbRequest) -> Result<JsValue, String> {
    let promise = Promise::new(&mut |resolve, reject| {
        request.set_onsuccess(Some(&resolve));
        request.set_onerror(Some(&reject));
    });
    JsFuture::from(promise).await.map_err(describe)?;
    request.result().map_err(describe)
}

/// Resolves once the transaction committed (rejects when it aborted or failed).
async fn committed(tx: &IdbTransaction) -> Result<(), String> {
    let promise = Promise::new(&mut |resolve, reject: Function| {
        tx.set_oncomplete(Some(&resolve));
        tx.set_onerror(Some(&reject));
        tx.set_onabort(Some(&reject));
    });
    JsFuture::from(promise).await.map(drop).map_err(|e| {
        let reason = tx.error().map(|e| format!("{}: {}", e.name(), e.message()));
        reason.unwrap_or_else(|| describe(e))
    })
}

async fn open_db() -> Result<IdbDatabase, String> {
    let factory = Reflect::get(&js_sys::global(), &"indexedDB".into()).map_err(describe)?;
    let factory: web_sys::IdbFactory = factory
        .dyn_into()
        .map_err(|_| "this context has no indexedDB".to_owned())?;
    let request: IdbOpenDbRequest = factory.open_with_u32(DB_NAME, 1).map_err(describe)?;
    // Lives until the open request settles (dropped after, never from inside itself).
    let upgrade = Closure::<dyn FnMut(web_sys::Event)>::new(|event: web_sys::Event| {
        let db = event
            .target()
            .and_then(|t| t.dyn_into::<IdbRequest>().ok())
            .and_then(|r| r.result().ok())
            .and_then(|r| r.dyn_into::<IdbDatabase>().ok());
        if let Some(db) = db {
            for name in [OUTBOX, POSITIONS, PATTERNS] {
                if !db.object_store_names().contains(name) {
                    let _ = db.create_object_store(name);
                }
            }
        }
    });
    request.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    let result = done(&request).await;
    request.set_onupgradeneeded(None);
    drop(upgrade);
    result?
        .dyn_into()
        .map_err(|_| "open did not yield a database".to_owned())
}

fn key(namespace: &str, name: &str) -> JsValue {
    Array::of2(&namespace.into(), &name.into()).into()
}

/// Every key `[namespace, *]` (arrays sort after strings, so `[ns, []]` bounds them).
fn namespace_range(namespace: &str) -> Result<IdbKeyRange, String> {
    let lower: JsValue = Array::of1(&namespace.into()).into();
    let upper: JsValue = Array::of2(&namespace.into(), &Array::new()).into();
    IdbKeyRange::bound(&lower, &upper).map_err(describe)
}

fn transaction(
    db: &IdbDatabase,
    stores: &[&str],
    mode: IdbTransactionMode,
) -> Result<IdbTransaction, String> {
    let names: Array = stores.iter().map(|s| JsValue::from(*s)).collect();
    db.transaction_with_str_sequence_and_mode(&names, mode)
        .map_err(describe)
}

fn object_store(tx: &IdbTransaction, name: &str) -> Result<IdbObjectStore, String> {
    tx.object_store(name).map_err(describe)
}

type Loaded = (Snapshot, Vec<(String, f64)>);

async fn load(db: &IdbDatabase, namespace: &str) -> Result<Loaded, String> {
    let tx = transaction(
        db,
        &[OUTBOX, POSITIONS, PATTERNS],
        IdbTransactionMode::Readonly,
    )?;
    let range = namespace_range(namespace)?;
    let mut snapshot = Snapshot::default();

    let outbox = object_store(&tx, OUTBOX)?;
    let values = done(&outbox.get_all_with_key(&range).map_err(describe)?).await?;
    // Queue order is `seq` order; rows come in key (msg_id) order. Insert each in place
    // (cheaper in code size than a general sort, and queues are short).
    let mut rows: Vec<Row> = Vec::new();
    for row in Array::from(&values)
        .iter()
        .filter_map(|v| Row::from_json(&v.as_string().unwrap_or_default()))
    {
        let at = rows.partition_point(|r| r.seq <= row.seq);
        rows.insert(at, row);
    }
    let seqs = rows
        .iter()
        .map(|r| (r.entry.msg_id.clone(), r.seq))
        .collect();
    snapshot.outbox = rows.into_iter().map(|r| r.entry).collect();

    for name in [POSITIONS, PATTERNS] {
        let store = object_store(&tx, name)?;
        let keys = done(&store.get_all_keys_with_key(&range).map_err(describe)?).await?;
        let values = done(&store.get_all_with_key(&range).map_err(describe)?).await?;
        for (key, value) in Array::from(&keys).iter().zip(Array::from(&values).iter()) {
            let Some(name_in_ns) = Array::from(&key).get(1).as_string() else {
                continue;
            };
            if name == POSITIONS {
                let text = value.as_string().unwrap_or_default();
                let position = json::parse(&text)
                    .ok()
                    .and_then(|v| tidings::codec::stream_position(&v).ok());
                if let Some(position) = position {
                    snapshot.positions.insert(name_in_ns, position);
                }
            } else if let Some(since) = value.as_f64() {
                snapshot.pattern_since.insert(name_in_ns, since as u64);
            }
        }
    }
    Ok((snapshot, seqs))
}

async fn apply(
    db: &IdbDatabase,
    namespace: &str,
    kind: &PersistKind,
    seq: f64,
) -> Result<(), String> {
    let name = match kind {
        PersistKind::PutMessage { .. } | PersistKind::RemoveMessage { .. } => OUTBOX,
        PersistKind::PutPosition { .. } | PersistKind::RemovePosition { .. } => POSITIONS,
        PersistKind::PutPatternSince { .. } => PATTERNS,
        PersistKind::Clear => "",
    };
    let all = [OUTBOX, POSITIONS, PATTERNS];
    let stores: &[&str] = if name.is_empty() {
        &all
    } else {
        std::slice::from_ref(&name)
    };
    let tx = transaction(db, stores, IdbTransactionMode::Readwrite)?;
    let request = match kind {
        PersistKind::PutMessage { entry } => {
            let row = Row {
                seq,
                entry: entry.clone(),
            };
            object_store(&tx, OUTBOX)?
                .put_with_key(&row.to_json().into(), &key(namespace, &entry.msg_id))
        }
        PersistKind::RemoveMessage { msg_id } => {
            object_store(&tx, OUTBOX)?.delete(&key(namespace, msg_id))
        }
        PersistKind::PutPosition { channel, position } => object_store(&tx, POSITIONS)?
            .put_with_key(&position.to_json().into(), &key(namespace, channel)),
        PersistKind::RemovePosition { channel } => {
            object_store(&tx, POSITIONS)?.delete(&key(namespace, channel))
        }
        PersistKind::PutPatternSince { pattern, since } => object_store(&tx, PATTERNS)?
            .put_with_key(&JsValue::from_f64(*since as f64), &key(namespace, pattern)),
        PersistKind::Clear => {
            for name in all {
                object_store(&tx, name)?
                    .delete(&namespace_range(namespace)?.into())
                    .map_err(describe)?;
            }
            return committed(&tx).await;
        }
    };
    request.map_err(describe)?;
    // Durable only once the transaction committed.
    committed(&tx).await
}
