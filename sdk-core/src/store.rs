//! What the client asks its store to keep, and what it gets back at start.
//!
//! The core never touches storage: it emits [`PersistOp`]s and is told with
//! `Input::Persisted(id)` when each is durable. Drivers namespace everything by
//! [`crate::Options::storage_namespace`] so one user's data never mixes with another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::codec::DecodeError;
use crate::collections::SortedMap;
use crate::json::{self, ObjectWriter, ToJson, Value};
use crate::protocol::{Payload, StreamPosition};

/// Identifies one persist request.
pub type PersistId = u64;

/// A publish waiting in the outbox, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OutboxEntry {
    /// Client message id (idempotency key on the server).
    pub msg_id: String,
    /// Target channel.
    pub channel: String,
    /// Event name.
    pub event: String,
    /// Data.
    pub data: Payload,
    /// When the app published it (wall ms).
    pub created_at_ms: u64,
    /// The user that queued it (never sent with another user's token).
    #[cfg_attr(feature = "serde", serde(default))]
    pub user: Option<String>,
}

/// One write the core wants durable.
///
/// With feature `serde` it serializes (`{"op": "put_message", ...}`) but has no
/// `Deserialize`: an internally tagged enum buffers its input, and a [`Payload`] keeps its
/// exact text only when read straight from serde_json.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "op", rename_all = "snake_case"))]
pub enum PersistKind {
    /// Add a message to the outbox (appended; order of `put_message` ops is queue order).
    PutMessage {
        /// The message.
        entry: OutboxEntry,
    },
    /// Remove a message from the outbox.
    RemoveMessage {
        /// Its id.
        msg_id: String,
    },
    /// Remember the last position seen in a channel.
    PutPosition {
        /// Concrete channel.
        channel: String,
        /// Position.
        position: StreamPosition,
    },
    /// Forget a channel's position.
    RemovePosition {
        /// Concrete channel.
        channel: String,
    },
    /// Remember when a pattern subscription was last live (server ms).
    PutPatternSince {
        /// Pattern.
        pattern: String,
        /// Server time.
        since: u64,
    },
    /// Wipe everything in this namespace (logout).
    Clear,
}

/// A persist request: apply `kind`, then feed back `Input::Persisted(id)`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PersistOp {
    /// Request id.
    pub id: PersistId,
    /// What to write.
    pub kind: PersistKind,
}

/// Everything a store keeps for one namespace, loaded at start (`Input::Restore`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Snapshot {
    /// The outbox, oldest first.
    #[cfg_attr(feature = "serde", serde(default))]
    pub outbox: Vec<OutboxEntry>,
    /// Last position per concrete channel.
    #[cfg_attr(feature = "serde", serde(default))]
    pub positions: SortedMap<String, StreamPosition>,
    /// Last live time per pattern subscription.
    #[cfg_attr(feature = "serde", serde(default))]
    pub pattern_since: SortedMap<String, u64>,
}

impl Snapshot {
    /// Applies one write (what every store does with a [`PersistKind`]).
    pub fn apply(&mut self, kind: &PersistKind) {
        match kind {
            PersistKind::PutMessage { entry } => {
                if let Some(existing) = self.outbox.iter_mut().find(|e| e.msg_id == entry.msg_id) {
                    *existing = entry.clone();
                } else {
                    self.outbox.push(entry.clone());
                }
            }
            PersistKind::RemoveMessage { msg_id } => self.outbox.retain(|e| &e.msg_id != msg_id),
            PersistKind::PutPosition { channel, position } => {
                self.positions.insert(channel.clone(), position.clone());
            }
            PersistKind::RemovePosition { channel } => {
                self.positions.remove(channel);
            }
            PersistKind::PutPatternSince { pattern, since } => {
                self.pattern_since.insert(pattern.clone(), *since);
            }
            PersistKind::Clear => *self = Snapshot::default(),
        }
    }
}

/// A thread-safe in-memory store of snapshots by namespace. Drivers use it as their
/// default store; tests share one between two client instances to simulate a restart.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<HashMap<String, Snapshot>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot of a namespace (empty if none).
    pub fn load(&self, namespace: &str) -> Snapshot {
        self.lock().get(namespace).cloned().unwrap_or_default()
    }

    /// Applies one write to a namespace.
    pub fn apply(&self, namespace: &str, kind: &PersistKind) {
        self.lock()
            .entry(namespace.to_owned())
            .or_default()
            .apply(kind);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Snapshot>> {
        // A panic while holding the lock cannot leave a snapshot half-written in a way
        // that matters more than losing the process, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `{"msg_id","channel","event","data","created_at_ms","user"}` (`user` may be `null`).
impl ToJson for OutboxEntry {
    fn write_json(&self, out: &mut String) {
        let mut obj = ObjectWriter::new(out);
        write_entry_fields(&mut obj, self);
        obj.end();
    }
}

/// Writes an entry's members into an object being written (for flattened shapes).
pub(crate) fn write_entry_fields(obj: &mut ObjectWriter<'_>, e: &OutboxEntry) {
    obj.str("msg_id", &e.msg_id)
        .str("channel", &e.channel)
        .str("event", &e.event)
        .raw("data", e.data.json())
        .u64("created_at_ms", e.created_at_ms);
    match &e.user {
        Some(user) => obj.str("user", user),
        None => obj.raw("user", "null"),
    };
}

impl OutboxEntry {
    /// Reads an entry written by [`ToJson`] (unknown members are ignored).
    pub fn from_json_value(v: &Value<'_>) -> Result<Self, DecodeError> {
        let text = |key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| DecodeError(String::from("missing or invalid field `") + key + "`"))
        };
        let data = v
            .member("data")
            .map_or_else(Payload::null, Payload::from_member);
        Ok(Self {
            msg_id: text("msg_id")?,
            channel: text("channel")?,
            event: text("event")?,
            data,
            created_at_ms: v.get("created_at_ms").and_then(number_u64).unwrap_or(0),
            user: v.get("user").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// `{"op": "put_message", "entry"}` and friends: the serde shape of `PersistKind`.
impl ToJson for PersistKind {
    fn write_json(&self, out: &mut String) {
        let mut obj = ObjectWriter::new(out);
        match self {
            PersistKind::PutMessage { entry } => {
                obj.str("op", "put_message");
                entry.write_json(obj.key("entry"));
            }
            PersistKind::RemoveMessage { msg_id } => {
                obj.str("op", "remove_message").str("msg_id", msg_id);
            }
            PersistKind::PutPosition { channel, position } => {
                obj.str("op", "put_position").str("channel", channel);
                position.write_json(obj.key("position"));
            }
            PersistKind::RemovePosition { channel } => {
                obj.str("op", "remove_position").str("channel", channel);
            }
            PersistKind::PutPatternSince { pattern, since } => {
                obj.str("op", "put_pattern_since")
                    .str("pattern", pattern)
                    .u64("since", *since);
            }
            PersistKind::Clear => {
                obj.str("op", "clear");
            }
        }
        obj.end();
    }
}

/// A JSON number as a `u64`, also when written as a float with a zero fraction (`3.0`),
/// as older stores and JavaScript numbers may be.
pub fn number_u64(v: &Value<'_>) -> Option<u64> {
    match v {
        Value::Number(text) => match text.split_once('.') {
            Some((int, frac)) if frac.bytes().all(|b| b == b'0') => Value::Number(int).as_u64(),
            Some(_) => None,
            None => v.as_u64(),
        },
        _ => None,
    }
}

/// `{"outbox": [...], "positions": {channel: position}, "pattern_since": {pattern: ms}}`.
impl ToJson for Snapshot {
    fn write_json(&self, out: &mut String) {
        let mut obj = ObjectWriter::new(out);
        self.outbox.write_json(obj.key("outbox"));
        let mut positions = ObjectWriter::new(obj.key("positions"));
        for (channel, position) in &self.positions {
            position.write_json(positions.key(channel));
        }
        positions.end();
        let mut since = ObjectWriter::new(obj.key("pattern_since"));
        for (pattern, ms) in &self.pattern_since {
            since.u64(pattern, *ms);
        }
        since.end();
        obj.end();
    }
}

impl Snapshot {
    /// Reads a snapshot written by [`ToJson`]. Entries that cannot be read are skipped
    /// (a damaged record must not cost the rest of the queue); invalid JSON is an error.
    pub fn from_json(text: &str) -> Result<Self, DecodeError> {
        let v = json::parse(text)?;
        let mut snapshot = Snapshot::default();
        for entry in v
            .get("outbox")
            .and_then(Value::as_array)
            .unwrap_or_default()
        {
            if let Ok(entry) = OutboxEntry::from_json_value(entry) {
                snapshot.outbox.push(entry);
            }
        }
        for m in v
            .get("positions")
            .and_then(Value::as_object)
            .unwrap_or_default()
        {
            if let Ok(position) = crate::codec::stream_position(&m.value) {
                snapshot.positions.insert(m.key.to_string(), position);
            }
        }
        for m in v
            .get("pattern_since")
            .and_then(Value::as_object)
            .unwrap_or_default()
        {
            if let Some(ms) = number_u64(&m.value) {
                snapshot.pattern_since.insert(m.key.to_string(), ms);
            }
        }
        Ok(snapshot)
    }
}
