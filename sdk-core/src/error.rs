//! Errors the client reports, each with a stable `code()`.

use crate::json::{ObjectWriter, ToJson};
use crate::protocol::{ErrorBody, ErrorCode};

/// Everything that can go wrong for an app using the client. Local misuse is returned from
/// the call; what the server or the clock does arrives later as an [`crate::Event::Error`]
/// or a failed message status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The channel or pattern name is not valid.
    #[error("invalid channel name \"{name}\": {reason}")]
    InvalidChannel {
        /// The rejected name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Publishing needs a concrete channel, not a pattern.
    #[error("cannot publish to pattern \"{0}\"")]
    PublishToPattern(String),
    /// The event name is empty or too long.
    #[error("event name must be 1..=128 bytes")]
    InvalidEvent,
    /// A message id chosen by the caller is empty, too long or not printable ASCII, or is
    /// already queued for another channel.
    #[error("invalid message id: {0}")]
    InvalidMessageId(&'static str),
    /// The message would exceed the server's frame limit.
    #[error("message is {size} bytes encoded, the limit is {limit}")]
    FrameTooLarge {
        /// Encoded size of the publish frame.
        size: usize,
        /// The server's `max_frame_bytes`.
        limit: usize,
    },
    /// The outbox is full and its policy is to reject new messages.
    #[error("outbox is full ({0} messages)")]
    OutboxFull(usize),
    /// Too many subscriptions for one connection.
    #[error("at most {0} subscriptions per connection")]
    TooManyChannels(usize),
    /// No queued message with this id.
    #[error("no pending message \"{0}\"")]
    UnknownMessage(String),
    /// The message was already sent; it may still be delivered.
    #[error("message \"{0}\" was already sent and can no longer be cancelled")]
    NotCancellable(String),
    /// The message stayed queued longer than the outbox TTL.
    #[error("message expired after waiting {waited_ms} ms in the outbox")]
    Expired {
        /// How long it waited.
        waited_ms: u64,
    },
    /// The app cancelled the message (or cleared the outbox).
    #[error("message cancelled")]
    Cancelled,
    /// The oldest message was dropped to make room (policy `DropOldest`).
    #[error("message dropped because the outbox overflowed")]
    Overflow,
    /// The message was queued by another user than the one now signed in.
    #[error("message was queued by another user and is not sent with this user's token")]
    UserMismatch,
    /// The token could not be obtained.
    #[error("token provider failed: {0}")]
    TokenProvider(String),
    /// The connection failed for good (`gave_up`, `server_refused`, ...): call
    /// `connect()` to try again.
    #[error("connection failed ({reason}): {message}")]
    ConnectionFailed {
        /// The `Failed` state's code.
        reason: String,
        /// What happened.
        message: String,
    },
    /// The client is not running (its driver stopped).
    #[error("client is closed")]
    Closed,
    /// The server refused something.
    #[error("server error {code}: {message}")]
    Server {
        /// Stable protocol code.
        code: ErrorCode,
        /// Server message.
        message: String,
        /// Whether it may work later.
        temporary: bool,
        /// Advised wait, for `rate_limited`.
        retry_after_ms: Option<u64>,
    },
}

impl ClientError {
    /// A stable, machine-readable code (`snake_case`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidChannel { .. } => "invalid_channel",
            Self::PublishToPattern(_) => "publish_to_pattern",
            Self::InvalidEvent => "invalid_event",
            Self::InvalidMessageId(_) => "invalid_message_id",
            Self::FrameTooLarge { .. } => "frame_too_large",
            Self::OutboxFull(_) => "outbox_full",
            Self::TooManyChannels(_) => "too_many_channels",
            Self::UnknownMessage(_) => "unknown_message",
            Self::NotCancellable(_) => "not_cancellable",
            Self::Expired { .. } => "expired",
            Self::Cancelled => "cancelled",
            Self::Overflow => "overflow",
            Self::UserMismatch => "user_mismatch",
            Self::TokenProvider(_) => "token_provider",
            Self::ConnectionFailed { .. } => "connection_failed",
            Self::Closed => "closed",
            Self::Server { code, .. } => code.as_str(),
        }
    }

    /// For `rate_limited` server errors: how long to wait before retrying.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::Server { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }

    /// Whether retrying the same thing later may succeed.
    pub fn is_temporary(&self) -> bool {
        match self {
            Self::Server { temporary, .. } => *temporary,
            Self::OutboxFull(_) | Self::TokenProvider(_) => true,
            _ => false,
        }
    }
}

impl From<ErrorBody> for ClientError {
    fn from(body: ErrorBody) -> Self {
        Self::Server {
            code: body.code,
            message: body.message,
            temporary: body.temporary,
            retry_after_ms: body.retry_after_ms,
        }
    }
}

/// Written as `{ "code", "message", "temporary", "retry_after_ms"? }`, the shape the JS
/// and mobile layers turn into their error objects.
impl ToJson for ClientError {
    fn write_json(&self, out: &mut String) {
        let mut obj = ObjectWriter::new(out);
        obj.str("code", self.code())
            .str("message", &self.to_string())
            .bool("temporary", self.is_temporary())
            .opt_u64("retry_after_ms", self.retry_after_ms());
        obj.end();
    }
}

/// The same shape as [`ToJson`].
#[cfg(feature = "serde")]
impl serde::Serialize for ClientError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("ClientError", 4)?;
        s.serialize_field("code", self.code())?;
        s.serialize_field("message", &self.to_string())?;
        s.serialize_field("temporary", &self.is_temporary())?;
        if let Some(ms) = self.retry_after_ms() {
            s.serialize_field("retry_after_ms", &ms)?;
        }
        s.end()
    }
}
