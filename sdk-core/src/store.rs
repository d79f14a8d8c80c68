//! What the client asks its store to keep, and what it gets back at start.
//!
//! The core never touches storage: it emits [`PersistOp`]s and is told with
//! `Input::Persisted(id)` when each is durable. Drivers namespace everything by
//! [`crate::Options::storage_namespace`] so one user's data never mixes with another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::collections::SortedMap;
use crate::protocol::{Payload, StreamPosition};

/// Identifies one persist request.
pub type PersistId = u64;

/// A publish waiting in the outbox, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub user: Option<String>,
}

/// One write the core wants durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistOp {
    /// Request id.
    pub id: PersistId,
    /// What to write.
    pub kind: PersistKind,
}

/// Everything a store keeps for one namespace, loaded at start (`Input::Restore`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The outbox, oldest first.
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
    /// Last position per concrete channel.
    #[serde(default)]
    pub positions: SortedMap<String, StreamPosition>,
    /// Last live time per pattern subscription.
    #[serde(default)]
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
