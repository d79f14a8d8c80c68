//! Client configuration with documented defaults.

use serde::{Deserialize, Serialize};

use crate::backoff::ReconnectPolicy;

/// What to do when the outbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutboxFullPolicy {
    /// `publish()` fails with `outbox_full` (default: nothing accepted is ever dropped).
    #[default]
    RejectNew,
    /// The oldest unsent message fails with `overflow` to make room.
    DropOldest,
}

/// The offline send queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxOptions {
    /// Most messages kept (default 1000).
    pub max_messages: usize,
    /// A message not acked within this time fails with `expired` (default 24 h;
    /// seed 001's app uses 30 s).
    pub ttl_ms: u64,
    /// Policy when full.
    pub full_policy: OutboxFullPolicy,
    /// Most publishes awaiting an ack at once (default 16).
    pub max_in_flight: usize,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        Self {
            max_messages: 1_000,
            ttl_ms: 24 * 60 * 60 * 1_000,
            full_policy: OutboxFullPolicy::RejectNew,
            max_in_flight: 16,
        }
    }
}

/// Client options. Every field has a default (see each field), matching the seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// WebSocket URL of the server, e.g. `wss://rt.example.com/ws`.
    pub url: String,
    /// A fixed token. With `token_provider`, the first token (optional).
    pub token: Option<String>,
    /// The driver has a token provider: the core asks it (`Output::FetchToken`) before
    /// connecting without a valid token, before the token expires, and once after a
    /// `token_expired` error.
    pub token_provider: bool,
    /// User id for the storage namespace; defaults to the token's `sub`.
    pub user: Option<String>,
    /// Client name sent at connect.
    pub client_name: String,
    /// Client version sent at connect.
    pub client_version: String,
    /// Reconnect backoff (1 s → 30 s, full jitter, 10 attempts).
    pub reconnect: ReconnectPolicy,
    /// Opening the socket plus the `connect` handshake must finish within this (10 s).
    pub connect_timeout_ms: u64,
    /// A command without a reply within this means the link is broken (10 s).
    pub command_timeout_ms: u64,
    /// Ping interval assumed until the server announces its own (30 s).
    pub ping_interval_ms: u64,
    /// Extra silence tolerated after a missed server ping before the link is dead (5 s).
    pub heartbeat_grace_ms: u64,
    /// A liveness ping (on online / resume / clock jump) must be answered within this (3 s).
    pub liveness_timeout_ms: u64,
    /// A timer firing this late, or wall time jumping this far from monotonic time, means
    /// the machine slept or timers were throttled (2 s).
    pub clock_jump_ms: u64,
    /// Refresh the token this long before it expires (30 s, at most half its lifetime).
    pub token_refresh_margin_ms: u64,
    /// Coalesce events for this long before handing a batch to the app (0 = at once).
    pub batch_window_ms: u64,
    /// Frame limit assumed until the server announces its own (64 KiB).
    pub max_frame_bytes: usize,
    /// Most subscriptions (256, or the server's announced limit).
    pub max_channels: usize,
    /// The offline send queue.
    pub outbox: OutboxOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            url: String::new(),
            token: None,
            token_provider: false,
            user: None,
            client_name: "tidings-rust".into(),
            client_version: env!("CARGO_PKG_VERSION").into(),
            reconnect: ReconnectPolicy::default(),
            connect_timeout_ms: 10_000,
            command_timeout_ms: 10_000,
            ping_interval_ms: 30_000,
            heartbeat_grace_ms: 5_000,
            liveness_timeout_ms: 3_000,
            clock_jump_ms: 2_000,
            token_refresh_margin_ms: 30_000,
            batch_window_ms: 0,
            max_frame_bytes: 64 * 1024,
            max_channels: 256,
            outbox: OutboxOptions::default(),
        }
    }
}

impl Options {
    /// Options for a server URL, with defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The user this client stores data for: `user`, else the token's `sub`.
    pub fn effective_user(&self) -> Option<String> {
        self.user.clone().or_else(|| {
            self.token
                .as_deref()
                .and_then(|t| crate::jwt::peek_claims(t).sub)
        })
    }

    /// The key a store files this client's data under: server URL plus user, so one
    /// user's queue and positions never go out with another user's token.
    pub fn storage_namespace(&self) -> String {
        format!(
            "tidings|{}|{}",
            self.url,
            self.effective_user().unwrap_or_else(|| "anonymous".into())
        )
    }
}
