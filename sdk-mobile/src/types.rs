//! Records and enums that cross the FFI, and their conversions from the core's types.
//! Application data crosses as JSON text.

/// How to build a [`crate::TidingsClient`]. Only `url` is required.
#[derive(Clone, Debug, Default, PartialEq, Eq, uniffi::Record)]
pub struct ClientConfig {
    /// WebSocket URL, `ws://` or `wss://` (e.g. `wss://rt.example.com/ws`).
    pub url: String,
    /// A fixed token (JWT). With a token provider, the first token (optional).
    #[uniffi(default = None)]
    pub token: Option<String>,
    /// User id the stored outbox and positions are filed under; defaults to the token's
    /// `sub` (or, with only a token provider, the `sub` of the first fetched token).
    #[uniffi(default = None)]
    pub user: Option<String>,
    /// Path of the SQLite database for the outbox and recovery positions (created if
    /// missing; e.g. `context.filesDir/tidings.db` or the app's Application Support
    /// directory). `None`: kept in memory only, lost when the app is killed.
    #[uniffi(default = None)]
    pub database_path: Option<String>,
    /// An extra trusted CA certificate (PEM) for `wss://`, in addition to the public
    /// roots: a private CA or a self-signed test certificate.
    #[uniffi(default = None)]
    pub ca_pem: Option<String>,
    /// Any other `tidings::Options` as JSON, e.g.
    /// `{"outbox": {"ttl_ms": 30000}, "reconnect": {"max_attempts": null}}`. Fields left
    /// out keep their documented defaults (reconnect 1 s → 30 s with full jitter, 10
    /// attempts; liveness check 3 s; outbox 1000 messages, 24 h TTL, ...).
    #[uniffi(default = None)]
    pub options_json: Option<String>,
}

/// The connection's state.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// Not connected and not trying (initial state, or after `disconnect()`).
    Disconnected,
    /// Opening a connection.
    Connecting,
    /// Live: frames flow.
    Connected,
    /// Lost the connection and will retry.
    Reconnecting {
        /// Attempt number (1-based) of the next try.
        attempt: u32,
        /// When the next try starts, in ms; `None` while offline (waiting for the network).
        retry_in_ms: Option<u64>,
    },
    /// Stopped trying (`gave_up`, `unauthorized`, `token_expired`, `unsupported_version`,
    /// `server_refused`); `connect()` starts again, and for `gave_up` so do
    /// `on_network_changed(true)` and `on_foreground()`.
    Failed {
        /// Stable reason code.
        code: String,
        /// What happened and what to do.
        message: String,
    },
}

impl From<tidings::ConnectionState> for ConnectionState {
    fn from(state: tidings::ConnectionState) -> Self {
        use tidings::ConnectionState as S;
        match state {
            S::Disconnected => Self::Disconnected,
            S::Connecting => Self::Connecting,
            S::Connected => Self::Connected,
            S::Reconnecting {
                attempt,
                retry_in_ms,
            } => Self::Reconnecting {
                attempt,
                retry_in_ms,
            },
            S::Failed { code, message } => Self::Failed { code, message },
        }
    }
}

/// One message of a channel, delivered exactly once per `(channel, offset)`.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Publication {
    /// The concrete channel (also when delivered through a pattern subscription).
    pub channel: String,
    /// The channel's stream epoch.
    pub epoch: String,
    /// Offset in the channel's stream.
    pub offset: u64,
    /// The publisher's message id.
    pub id: String,
    /// Application event name, e.g. `recognition.created`.
    pub event: String,
    /// Application data, as JSON text.
    pub data: String,
    /// Server time of acceptance, ms since the Unix epoch.
    pub ts: u64,
    /// Publisher user id (the token's `sub`, or `server` for the HTTP publish API).
    pub publisher: String,
    /// Publisher's connection id, when published over a socket.
    pub publisher_client: Option<String>,
    /// Publisher's public info (the token's `info` claim), as JSON text.
    pub publisher_info: Option<String>,
}

impl From<&tidings::Publication> for Publication {
    fn from(p: &tidings::Publication) -> Self {
        Self {
            channel: p.channel.clone(),
            epoch: p.epoch.clone(),
            offset: p.offset,
            id: p.id.clone(),
            event: p.event.clone(),
            data: p.data.json().to_owned(),
            ts: p.ts,
            publisher: p.publisher.user.clone(),
            publisher_client: p.publisher.client.clone(),
            publisher_info: p.publisher.info.as_ref().map(|i| i.json().to_owned()),
        }
    }
}

/// Where a publish ended up on the server.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Ack {
    /// Client message id.
    pub msg_id: String,
    /// Channel epoch.
    pub epoch: String,
    /// Offset the server gave the message.
    pub offset: u64,
}

impl From<tidings::native::Ack> for Ack {
    fn from(ack: tidings::native::Ack) -> Self {
        Self {
            msg_id: ack.msg_id,
            epoch: ack.epoch,
            offset: ack.offset,
        }
    }
}

/// Where a queued publish stands.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum MessageStatus {
    /// Accepted, being written to the store.
    Persisting,
    /// Durable, waiting for a connection (or its turn).
    Queued,
    /// On the wire, waiting for the server's ack.
    Sent,
    /// Stored by the server.
    Acked {
        /// Channel epoch.
        epoch: String,
        /// Offset.
        offset: u64,
    },
    /// Will not be delivered.
    Failed {
        /// Stable code (`expired`, `cancelled`, `forbidden`, ...).
        code: String,
        /// Why.
        message: String,
    },
}

impl From<&tidings::MessageStatus> for MessageStatus {
    fn from(status: &tidings::MessageStatus) -> Self {
        use tidings::MessageStatus as S;
        match status {
            S::Persisting => Self::Persisting,
            S::Queued => Self::Queued,
            S::Sent => Self::Sent,
            S::Acked { epoch, offset } => Self::Acked {
                epoch: epoch.clone(),
                offset: *offset,
            },
            S::Failed { error } => Self::Failed {
                code: error.code().into(),
                message: error.to_string(),
            },
        }
    }
}

/// A message in the outbox.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct PendingMessage {
    /// Client message id (the server dedupes on it).
    pub msg_id: String,
    /// Target channel.
    pub channel: String,
    /// Event name.
    pub event: String,
    /// Data, as JSON text.
    pub data: String,
    /// When the app published it, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Where it stands.
    pub status: MessageStatus,
}

impl From<&tidings::PendingMessage> for PendingMessage {
    fn from(m: &tidings::PendingMessage) -> Self {
        Self {
            msg_id: m.entry.msg_id.clone(),
            channel: m.entry.channel.clone(),
            event: m.entry.event.clone(),
            data: m.entry.data.json().to_owned(),
            created_at_ms: m.entry.created_at_ms,
            status: (&m.status).into(),
        }
    }
}

/// Counters and gauges of a client.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Stats {
    /// Current state name (`connected`, `reconnecting`, ...).
    pub state: String,
    /// Smoothed round-trip time, ms.
    pub rtt_ms: Option<u64>,
    /// Reconnects scheduled since start.
    pub reconnects: u64,
    /// Messages in the outbox.
    pub queue_depth: u64,
    /// Subscriptions wanted.
    pub subscriptions: u64,
    /// Resubscriptions that recovered everything missed.
    pub recoveries_succeeded: u64,
    /// Resubscriptions that could not recover (the app was told to reload).
    pub recoveries_failed: u64,
    /// Publications delivered to the app.
    pub publications_delivered: u64,
    /// Duplicate publications dropped.
    pub duplicates_dropped: u64,
    /// Publishes acked by the server.
    pub messages_acked: u64,
    /// Server-assigned id of the current connection.
    pub client_id: Option<String>,
}

impl From<tidings::Stats> for Stats {
    fn from(s: tidings::Stats) -> Self {
        Self {
            state: s.state,
            rtt_ms: s.rtt_ms,
            reconnects: s.reconnects,
            queue_depth: s.queue_depth as u64,
            subscriptions: s.subscriptions as u64,
            recoveries_succeeded: s.recoveries_succeeded,
            recoveries_failed: s.recoveries_failed,
            publications_delivered: s.publications_delivered,
            duplicates_dropped: s.duplicates_dropped,
            messages_acked: s.messages_acked,
            client_id: s.client_id,
        }
    }
}
