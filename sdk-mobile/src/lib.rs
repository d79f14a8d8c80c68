//! # Tidings mobile SDK
//!
//! UniFFI bindings (Kotlin for Android / the JVM, Swift for iOS) over the native tokio
//! driver of `tidings-core`, with a SQLite store for the offline outbox and recovery
//! positions, and app lifecycle hooks.
//!
//! - [`TidingsClient`]: `connect`, `disconnect`, `close`, `clear` (logout), `channel`,
//!   `publish` (awaits the ack), `publish_queued` (returns once durable), `outbox`,
//!   `cancel`, `stats`, `set_token`, `on_background` / `on_foreground` /
//!   `on_network_changed`, `add_listener`.
//! - [`Channel`]: `subscribe`, `unsubscribe`, `publish`, `publish_queued`, `add_listener`.
//! - Foreign traits: [`ClientListener`], [`ChannelListener`], [`TokenProvider`] (async).
//! - [`TidingsError`]: one error enum with the core's stable codes.
//!
//! Application data crosses as JSON text. Async functions run on one shared tokio
//! runtime (2 worker threads, created on first use); Kotlin sees `suspend fun`s and
//! Swift `async` functions. The generated bindings come from the `uniffi-bindgen` binary
//! of this crate (feature `cli`) in library mode; see `scripts/test-mobile.sh`.
//!
//! Rust programs can use the same API (the tests do), or `tidings::native` directly.

// The workspace forbids `unsafe_code`; UniFFI's scaffolding (`extern "C"` functions from
// its macros) is not reported by that lint as it comes from an external macro, so no
// exception is needed and no hand-written code here uses `unsafe`.
uniffi::setup_scaffolding!();

mod client;
mod error;
pub mod store;
mod types;

pub use client::{
    sdk_version, Channel, ChannelListener, ClientListener, ListenerHandle, TidingsClient,
    TokenProvider,
};
pub use error::TidingsError;
pub use store::SqliteStore;
pub use types::{
    Ack, ClientConfig, ConnectionState, MessageStatus, PendingMessage, Publication, Stats,
};
