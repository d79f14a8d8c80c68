//! What the client tells the app: connection states, subscription states, publications,
//! message statuses and errors, delivered in ordered batches.

use serde::Serialize;

use crate::error::ClientError;
use crate::protocol::Publication;

/// The connection's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConnectionState {
    /// Not connected and not trying (initial state, or after `disconnect()`).
    Disconnected,
    /// Opening a connection (first attempt, or after `connect()`).
    Connecting,
    /// Live: frames flow.
    Connected,
    /// Lost the connection and will retry.
    Reconnecting {
        /// Attempt number (1-based) of the next try.
        attempt: u32,
        /// When the next try starts, in ms from the change; `None` while offline
        /// (the client waits for the network to come back).
        retry_in_ms: Option<u64>,
    },
    /// Stopped trying; `connect()` (or, for `gave_up`, going online / resuming) starts again.
    Failed {
        /// Stable reason code: `gave_up`, `unauthorized`, `token_expired`,
        /// `unsupported_version`, `server_refused`.
        code: String,
        /// What happened and what to do.
        message: String,
    },
}

impl ConnectionState {
    /// Short stable name: `disconnected`, `connecting`, `connected`, `reconnecting`, `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting { .. } => "reconnecting",
            Self::Failed { .. } => "failed",
        }
    }
}

/// A subscription's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Wanted, waiting for a connection or for the server's answer.
    Subscribing,
    /// Live.
    Subscribed,
    /// Refused by the server; not retried until subscribed again.
    Failed {
        /// The server's error.
        error: ClientError,
    },
    /// Removed by `unsubscribe()` or by the server.
    Unsubscribed,
}

/// Where a queued publish stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum MessageStatus {
    /// Accepted by the client, waiting for the store to confirm it is durable.
    Persisting,
    /// Durable and waiting for a connection (or its turn).
    Queued,
    /// On the wire, waiting for the server's ack.
    Sent,
    /// Stored by the server.
    Acked {
        /// Channel epoch.
        epoch: String,
        /// Offset the server gave it.
        offset: u64,
    },
    /// Will not be delivered.
    Failed {
        /// Why.
        error: ClientError,
    },
}

impl MessageStatus {
    /// True for `Acked` and `Failed`.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Acked { .. } | Self::Failed { .. })
    }
}

/// One thing that happened, for the app.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The connection state changed.
    State {
        /// Previous state.
        old: ConnectionState,
        /// New state.
        new: ConnectionState,
        /// Stable code of the cause, e.g. `connect_called`, `transport_closed`,
        /// `heartbeat_timeout`, `liveness_timeout`, `server_disconnect`, `online`.
        reason: String,
    },
    /// A subscription changed state.
    Subscription {
        /// Channel or pattern.
        channel: String,
        /// The new state.
        state: SubscriptionState,
    },
    /// A subscription became live. When `recovered` is false after a reconnect
    /// (`needs_reload`), messages may have been missed: reload the channel's state.
    Subscribed {
        /// Channel or pattern.
        channel: String,
        /// Everything missed since the last position was replayed.
        recovered: bool,
        /// A position existed but could not be recovered: the app should reload.
        needs_reload: bool,
    },
    /// A message, delivered exactly once per `(channel, offset)`.
    Publication(Publication),
    /// A queued publish changed status.
    Message {
        /// Client message id.
        msg_id: String,
        /// Channel it goes to.
        channel: String,
        /// New status.
        status: MessageStatus,
    },
    /// An error not tied to a call (server error frame, refused subscription, token).
    Error {
        /// What went wrong.
        error: ClientError,
    },
    /// The store failed; the client keeps working in memory.
    StoreWarning {
        /// What failed.
        message: String,
    },
}
