//! The IndexedDB store (through rexie) behind the core's `Persist` / `Restore`.
//!
//! One database, `tidings`, shared by every namespace (`Options::storage_namespace()`:
//! server URL + user) and by every tab of the origin. Three object stores with
//! out-of-line array keys `[namespace, name]`:
//!
//! - `outbox`: `[ns, msg_id]` → JSON text `{ seq, entry }` (`seq` keeps queue order),
//! - `positions`: `[ns, channel]` → JSON text `{ epoch, offset }`,
//! - `patterns`: `[ns, pattern]` → since (server ms).
//!
//! A failing write (quota, a database closed under us, private mode) is reported to the
//! core as `PersistFailed` (which warns the app with `store_warning`) and the store then
//! carries on in memory only: the client keeps working, nothing crashes.

use std::collections::HashMap;

use js_sys::Array;
use rexie::{KeyRange, ObjectStore, Rexie, TransactionMode};
use serde::{Deserialize, Serialize};
use tidings::{OutboxEntry, PersistKind, Snapshot, StreamPosition};
use wasm_bindgen::JsValue;

use crate::js::{from_json, to_json};

/// Name of the IndexedDB database.
pub const DB_NAME: &str = "tidings";
const OUTBOX: &str = "outbox";
const POSITIONS: &str = "positions";
const PATTERNS: &str = "patterns";

#[derive(Serialize, Deserialize)]
struct Row {
    seq: f64,
    entry: OutboxEntry,
}

/// Where writes go.
#[derive(Debug)]
pub struct Store {
    db: Option<Rexie>,
    namespace: String,
    /// `msg_id` → queue position, so a replaced message keeps its place.
    seqs: HashMap<String, f64>,
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
            seqs: HashMap::new(),
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
        let result = load(db, &self.namespace).await;
        match result {
            Ok((snapshot, seqs)) => {
                self.next_seq = seqs.values().fold(0.0_f64, |a, b| a.max(*b)) + 1.0;
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
        let seq = match kind {
            PersistKind::PutMessage { entry } => {
                let seq = match self.seqs.get(&entry.msg_id) {
                    Some(seq) => *seq,
                    None => {
                        let seq = self.next_seq;
                        self.next_seq += 1.0;
                        self.seqs.insert(entry.msg_id.clone(), seq);
                        seq
                    }
                };
                Some(seq)
            }
            PersistKind::RemoveMessage { msg_id } => {
                self.seqs.remove(msg_id);
                None
            }
            PersistKind::Clear => {
                self.seqs.clear();
                None
            }
            _ => None,
        };
        let Some(db) = &self.db else {
            return Ok(());
        };
        let result = apply(db, &self.namespace, kind, seq).await;
        if result.is_err() {
            self.fall_back();
        }
        result
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

async fn open_db() -> Result<Rexie, String> {
    Rexie::builder(DB_NAME)
        .version(1)
        .add_object_store(ObjectStore::new(OUTBOX))
        .add_object_store(ObjectStore::new(POSITIONS))
        .add_object_store(ObjectStore::new(PATTERNS))
        .build()
        .await
        .map_err(describe)
}

fn describe(e: rexie::Error) -> String {
    e.to_string()
}

fn key(namespace: &str, name: &str) -> JsValue {
    Array::of2(&namespace.into(), &name.into()).into()
}

/// Every key `[namespace, *]` (arrays sort after strings, so `[ns, []]` bounds them).
fn namespace_range(namespace: &str) -> Result<web_sys::IdbKeyRange, String> {
    let lower: JsValue = Array::of1(&namespace.into()).into();
    let upper: JsValue = Array::of2(&namespace.into(), &Array::new()).into();
    web_sys::IdbKeyRange::bound(&lower, &upper).map_err(|e| format!("{e:?}"))
}

type Loaded = (Snapshot, HashMap<String, f64>);

async fn load(db: &Rexie, namespace: &str) -> Result<Loaded, String> {
    let tx = db
        .transaction(&[OUTBOX, POSITIONS, PATTERNS], TransactionMode::ReadOnly)
        .map_err(describe)?;
    let mut snapshot = Snapshot::default();
    let mut seqs = HashMap::new();

    let outbox = tx.store(OUTBOX).map_err(describe)?;
    let range: KeyRange = namespace_range(namespace)?.into();
    let mut rows: Vec<Row> = Vec::new();
    for value in outbox.get_all(Some(range), None).await.map_err(describe)? {
        match from_json::<Row>(&value.as_string().unwrap_or_default()) {
            Ok(row) => rows.push(row),
            Err(e) => log::warn!("skipping an unreadable outbox row: {e}"),
        }
    }
    rows.sort_by(|a, b| a.seq.total_cmp(&b.seq));
    for row in rows {
        seqs.insert(row.entry.msg_id.clone(), row.seq);
        snapshot.outbox.push(row.entry);
    }

    for (store_name, is_position) in [(POSITIONS, true), (PATTERNS, false)] {
        let store = tx.store(store_name).map_err(describe)?;
        let range: KeyRange = namespace_range(namespace)?.into();
        let keys = store
            .get_all_keys(Some(range), None)
            .await
            .map_err(describe)?;
        let range: KeyRange = namespace_range(namespace)?.into();
        let values = store.get_all(Some(range), None).await.map_err(describe)?;
        for (key, value) in keys.into_iter().zip(values) {
            let Some(name) = Array::from(&key).get(1).as_string() else {
                continue;
            };
            if is_position {
                if let Ok(position) =
                    from_json::<StreamPosition>(&value.as_string().unwrap_or_default())
                {
                    snapshot.positions.insert(name, position);
                }
            } else if let Some(since) = value.as_f64() {
                snapshot.pattern_since.insert(name, since as u64);
            }
        }
    }
    Ok((snapshot, seqs))
}

async fn apply(
    db: &Rexie,
    namespace: &str,
    kind: &PersistKind,
    seq: Option<f64>,
) -> Result<(), String> {
    let stores: &[&str] = match kind {
        PersistKind::PutMessage { .. } | PersistKind::RemoveMessage { .. } => &[OUTBOX],
        PersistKind::PutPosition { .. } | PersistKind::RemovePosition { .. } => &[POSITIONS],
        PersistKind::PutPatternSince { .. } => &[PATTERNS],
        PersistKind::Clear => &[OUTBOX, POSITIONS, PATTERNS],
    };
    let tx = db
        .transaction(stores, TransactionMode::ReadWrite)
        .map_err(describe)?;
    match kind {
        PersistKind::PutMessage { entry } => {
            let row = Row {
                seq: seq.unwrap_or(0.0),
                entry: entry.clone(),
            };
            let value = JsValue::from(to_json(&row));
            let store = tx.store(OUTBOX).map_err(describe)?;
            store
                .put(&value, Some(&key(namespace, &entry.msg_id)))
                .await
                .map_err(describe)?;
        }
        PersistKind::RemoveMessage { msg_id } => {
            let store = tx.store(OUTBOX).map_err(describe)?;
            store
                .delete(key(namespace, msg_id))
                .await
                .map_err(describe)?;
        }
        PersistKind::PutPosition { channel, position } => {
            let value = JsValue::from(to_json(position));
            let store = tx.store(POSITIONS).map_err(describe)?;
            store
                .put(&value, Some(&key(namespace, channel)))
                .await
                .map_err(describe)?;
        }
        PersistKind::RemovePosition { channel } => {
            let store = tx.store(POSITIONS).map_err(describe)?;
            store
                .delete(key(namespace, channel))
                .await
                .map_err(describe)?;
        }
        PersistKind::PutPatternSince { pattern, since } => {
            let store = tx.store(PATTERNS).map_err(describe)?;
            store
                .put(
                    &JsValue::from_f64(*since as f64),
                    Some(&key(namespace, pattern)),
                )
                .await
                .map_err(describe)?;
        }
        PersistKind::Clear => {
            for name in [OUTBOX, POSITIONS, PATTERNS] {
                let store = tx.store(name).map_err(describe)?;
                store
                    .delete(namespace_range(namespace)?.into())
                    .await
                    .map_err(describe)?;
            }
        }
    }
    // Durable only once the transaction committed (quota errors surface here).
    let done = tx.done().await.map_err(describe)?;
    if done.is_committed() {
        Ok(())
    } else {
        Err("IndexedDB transaction aborted".into())
    }
}
