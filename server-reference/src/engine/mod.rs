//! Engines store channel history, assign offsets and enforce publish idempotency.
//!
//! An engine is node-independent storage: the in-memory engine ([`memory::MemoryEngine`],
//! optionally durable through [`log_store`]) serves one node; a Redis engine can serve
//! several. Connection code only ever talks to `Arc<dyn Engine>` and the node-local
//! [`crate::hub::Hub`]. After an engine accepts a publication it hands it to its
//! [`PublicationSink`] (the hub of every node) in offset order.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use futures::future::BoxFuture;
use tidings::protocol::{Payload, Publication, Publisher, StreamPosition};

pub mod log_store;
pub mod memory;

/// Future returned by engine operations.
pub type EngineFuture<'a, T> = BoxFuture<'a, Result<T, EngineError>>;

/// Engine failures.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Writing or reading durable storage failed.
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else that went wrong inside the engine.
    #[error("engine error: {0}")]
    Internal(String),
}

/// Receives every publication an engine accepted, in offset order per channel.
pub trait PublicationSink: Send + Sync {
    /// Fans `publication` out; `accepted_at` is when the engine accepted it.
    fn deliver(&self, publication: Publication, accepted_at: Instant);
}

/// A publish to store.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Concrete channel name (already validated and authorized).
    pub channel: String,
    /// Publisher-generated message id; idempotency key together with `channel`.
    pub msg_id: String,
    /// Application event name.
    pub event: String,
    /// Application data.
    pub data: Payload,
    /// Who publishes.
    pub publisher: Publisher,
}

/// What happened to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Channel epoch.
    pub epoch: String,
    /// Offset assigned to the message (the original one for duplicates).
    pub offset: u64,
    /// True when `(channel, msg_id)` had been accepted before; nothing was published.
    pub duplicate: bool,
}

/// Current position of a channel and, when asked, what was missed since a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecovery {
    /// Current epoch of the channel.
    pub epoch: String,
    /// Current top offset (0 when nothing was ever published).
    pub offset: u64,
    /// True when every publication after the given position is in `publications`.
    pub recovered: bool,
    /// Publications after the given position, in offset order.
    pub publications: Vec<Publication>,
}

/// What a pattern subscription missed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatternRecovery {
    /// Missed publications, in offset order per channel (channels in name order).
    pub publications: Vec<Publication>,
    /// Concrete channels whose missed publications are no longer all in history.
    pub unrecovered: Vec<String>,
}

/// Storage of channel history; object safe (`Arc<dyn Engine>`).
pub trait Engine: Send + Sync + fmt::Debug {
    /// Stores a publication (or recognizes a duplicate `(channel, msg_id)`) and, when
    /// new, hands it to the publication sink before returning.
    fn publish(&self, request: PublishRequest) -> EngineFuture<'_, PublishOutcome>;

    /// Current position of `channel`; with `from`, also the publications after it
    /// when history still holds all of them.
    fn recover(
        &self,
        channel: String,
        from: Option<StreamPosition>,
    ) -> EngineFuture<'_, ChannelRecovery>;

    /// For a pattern subscription: per matching channel, recovery from `positions`, or
    /// when a channel has no position, its retained publications with `ts >= since`.
    fn recover_pattern(
        &self,
        pattern: String,
        positions: BTreeMap<String, StreamPosition>,
        since: Option<u64>,
    ) -> EngineFuture<'_, PatternRecovery>;

    /// The current epoch of `channel`.
    fn epoch(&self, channel: String) -> EngineFuture<'_, String>;
}
