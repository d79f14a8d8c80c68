//! # Tidings core
//!
//! The sans-IO heart of the Tidings real-time SDK: one [`Client`] state machine that
//! decides everything about a live connection (states, backoff, heartbeats, subscriptions,
//! recovery, the offline outbox, batching) without doing any IO itself.
//!
//! Drivers run the loop: feed one [`Input`] (an app command, a decoded frame, a timer, a
//! lifecycle change, a confirmed store write), then drain [`Client::poll_output`] until it
//! returns [`Output::Wake`], then sleep until that time or the next input.
//! Time and randomness are always passed in, which makes the whole client deterministic
//! under test. The `native` feature adds a tokio driver ([`native`]).

pub mod backoff;
mod client;
pub mod codec;
pub mod collections;
pub mod error;
pub mod event;
pub mod json;
pub mod jwt;
pub mod options;
mod outbox;
pub mod protocol;
pub mod store;
pub mod time;

#[cfg(feature = "native")]
pub mod native;

pub use backoff::ReconnectPolicy;
pub use client::{Client, Input, Lifecycle, Output, Stats, TransportId};
pub use error::ClientError;
pub use event::{ConnectionState, Event, MessageStatus, SubscriptionState};
pub use options::{Options, OutboxFullPolicy, OutboxOptions};
pub use outbox::PendingMessage;
pub use protocol::{ClientFrame, ErrorCode, Payload, Publication, ServerFrame, StreamPosition};
pub use store::{MemoryStore, OutboxEntry, PersistKind, PersistOp, Snapshot};
pub use time::Now;
