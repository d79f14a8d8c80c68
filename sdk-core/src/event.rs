//! What the client tells the app: connection states, subscription states, publications,
//! message statuses and errors, delivered in ordered batches.

use crate::error::ClientError;
use crate::json::{ObjectWriter, ToJson};
use crate::protocol::Publication;

/// The connection's state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "state", rename_all = "snake_case"))]
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
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "state", rename_all = "snake_case"))]
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
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "status", rename_all = "snake_case"))]
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
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", rename_all = "snake_case"))]
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

fn tagged<'o>(out: &'o mut String, tag: &str, name: &str) -> ObjectWriter<'o> {
    let mut obj = ObjectWriter::new(out);
    obj.str(tag, name);
    obj
}

/// `{"state": name, ...fields}`, the shape the JS and mobile layers read.
impl ToJson for ConnectionState {
    fn write_json(&self, out: &mut String) {
        let mut obj = tagged(out, "state", self.name());
        match self {
            Self::Reconnecting {
                attempt,
                retry_in_ms,
            } => {
                obj.u64("attempt", u64::from(*attempt));
                match retry_in_ms {
                    Some(ms) => obj.u64("retry_in_ms", *ms),
                    None => obj.raw("retry_in_ms", "null"),
                };
            }
            Self::Failed { code, message } => {
                obj.str("code", code).str("message", message);
            }
            Self::Disconnected | Self::Connecting | Self::Connected => {}
        }
        obj.end();
    }
}

/// `{"state": name, "error"?}`.
impl ToJson for SubscriptionState {
    fn write_json(&self, out: &mut String) {
        let name = match self {
            Self::Subscribing => "subscribing",
            Self::Subscribed => "subscribed",
            Self::Failed { .. } => "failed",
            Self::Unsubscribed => "unsubscribed",
        };
        let mut obj = tagged(out, "state", name);
        if let Self::Failed { error } = self {
            error.write_json(obj.key("error"));
        }
        obj.end();
    }
}

/// `{"status": name, ...fields}`.
impl ToJson for MessageStatus {
    fn write_json(&self, out: &mut String) {
        let name = match self {
            Self::Persisting => "persisting",
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Acked { .. } => "acked",
            Self::Failed { .. } => "failed",
        };
        let mut obj = tagged(out, "status", name);
        match self {
            Self::Acked { epoch, offset } => {
                obj.str("epoch", epoch).u64("offset", *offset);
            }
            Self::Failed { error } => error.write_json(obj.key("error")),
            _ => {}
        }
        obj.end();
    }
}

/// `{"type": name, ...fields}`; a publication's fields are inline.
impl ToJson for Event {
    fn write_json(&self, out: &mut String) {
        match self {
            Self::State { old, new, reason } => {
                let mut obj = tagged(out, "type", "state");
                old.write_json(obj.key("old"));
                new.write_json(obj.key("new"));
                obj.str("reason", reason);
                obj.end();
            }
            Self::Subscription { channel, state } => {
                let mut obj = tagged(out, "type", "subscription");
                obj.str("channel", channel);
                state.write_json(obj.key("state"));
                obj.end();
            }
            Self::Subscribed {
                channel,
                recovered,
                needs_reload,
            } => {
                let mut obj = tagged(out, "type", "subscribed");
                obj.str("channel", channel)
                    .bool("recovered", *recovered)
                    .bool("needs_reload", *needs_reload);
                obj.end();
            }
            Self::Publication(publication) => {
                // `{"type":"publication"` + the publication's own fields.
                let mut obj = tagged(out, "type", "publication");
                crate::codec::write_publication_fields(&mut obj, publication);
                obj.end();
            }
            Self::Message {
                msg_id,
                channel,
                status,
            } => {
                let mut obj = tagged(out, "type", "message");
                obj.str("msg_id", msg_id).str("channel", channel);
                status.write_json(obj.key("status"));
                obj.end();
            }
            Self::Error { error } => {
                let mut obj = tagged(out, "type", "error");
                error.write_json(obj.key("error"));
                obj.end();
            }
            Self::StoreWarning { message } => {
                let mut obj = tagged(out, "type", "store_warning");
                obj.str("message", message);
                obj.end();
            }
        }
    }
}
