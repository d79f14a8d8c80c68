//! Wire protocol v1: the frames a client and a server exchange.
//!
//! Frames are typed Rust values; how they become bytes is the job of a [`Codec`]
//! ([`JsonCodec`] is protocol v1's text encoding). The client state machine only ever sees
//! decoded frames, so a binary encoding can be added without touching it.
//! `docs/protocol.md` is the human-readable contract for these types.

use std::fmt;

use crate::json::{self, JsonError, ToJson};

use crate::collections::SortedMap;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Application payload: one JSON value, kept as compact JSON text.
///
/// The SDK never looks inside a payload, so it is carried as text end to end: nothing is
/// re-encoded, no number is rounded and member order is kept. A newtype so the
/// representation can change (e.g. for a binary codec) without touching the API.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Box<str>);

impl Payload {
    /// Checks JSON text and keeps it without insignificant whitespace.
    pub fn from_json(json: &str) -> Result<Self, JsonError> {
        Ok(Self(json::minify(json)?.into_boxed_str()))
    }

    /// A member the JSON reader has already checked: its source text when that is
    /// compact, else the value written compactly (whitespace from the sender never
    /// reaches the payload, so a payload is always one line).
    pub(crate) fn from_member(member: &json::Member<'_>) -> Self {
        if member
            .raw
            .bytes()
            .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
        {
            let mut out = String::with_capacity(member.raw.len());
            json::write_value(&mut out, &member.value);
            Self(out.into_boxed_str())
        } else {
            Self(member.raw.into())
        }
    }

    /// The payload as JSON text.
    pub fn json(&self) -> &str {
        &self.0
    }

    /// JSON `null`.
    pub fn null() -> Self {
        Self("null".into())
    }
}

#[cfg(feature = "serde")]
impl Payload {
    /// Serializes any value into a payload.
    pub fn from_value<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self(serde_json::to_string(value)?.into_boxed_str()))
    }

    /// The payload as a `serde_json::Value`.
    pub fn value(&self) -> serde_json::Value {
        // The text was checked when the payload was made, so this cannot fail.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// Deserializes the payload into `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

#[cfg(feature = "serde")]
impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        Self(value.to_string().into_boxed_str())
    }
}

/// Serializes as the JSON value itself (with serde_json; other formats see a string).
#[cfg(feature = "serde")]
impl serde::Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::value::RawValue::from_string(self.0.to_string()) {
            Ok(raw) => raw.serialize(serializer),
            Err(_) => serializer.serialize_str(&self.0),
        }
    }
}

/// Deserializes any JSON value, keeping its exact text. Works with serde_json's own
/// deserializer, not inside internally tagged or flattened containers (serde buffers their
/// input and a raw value cannot be taken from that buffer).
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Self::from_json(raw.get()).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Payload(")?;
        f.write_str(&self.0)?;
        f.write_str(")")
    }
}

/// A secret string (token, API key) whose `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A position in a channel's stream: the stream's epoch and the offset of the last
/// publication seen. Offsets start at 1; offset 0 means "nothing seen yet".
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StreamPosition {
    /// Identifies one incarnation of the channel's history; a new epoch means offsets
    /// restarted and old positions cannot be recovered from.
    pub epoch: String,
    /// Offset of the last publication seen.
    pub offset: u64,
}

/// Who published a message.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Publisher {
    /// User id (the JWT `sub`), or `"server"` for the HTTP publish API.
    pub user: String,
    /// The publishing connection's client id, when published over a socket.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub client: Option<String>,
    /// Public user info from the token's `info` claim.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub info: Option<Payload>,
}

/// One message in a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Publication {
    /// The concrete channel (also when delivered through a pattern subscription).
    pub channel: String,
    /// The channel's stream epoch.
    pub epoch: String,
    /// Offset in the channel's stream, strictly increasing by one.
    pub offset: u64,
    /// The publisher's message id (client generated, used for idempotency).
    pub id: String,
    /// Application event name such as `recognition.created`.
    pub event: String,
    /// Application data.
    pub data: Payload,
    /// Server wall-clock time of acceptance, ms since the Unix epoch.
    pub ts: u64,
    /// Who published it.
    #[cfg_attr(feature = "serde", serde(default))]
    pub publisher: Publisher,
}

/// Client name and version, sent at connect for server-side diagnostics.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClientInfo {
    /// SDK or app name.
    pub name: String,
    /// SDK or app version.
    pub version: String,
}

/// Where to resume one subscription from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubscribeRequest {
    /// Channel name, or a pattern ending in `*`.
    pub channel: String,
    /// For a concrete channel: the last position seen, to recover what was missed.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub recover: Option<StreamPosition>,
    /// For a pattern: last positions of the concrete channels seen through it.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "SortedMap::is_empty")
    )]
    pub positions: SortedMap<String, StreamPosition>,
    /// For a pattern: server time (ms) the subscription was last live; publications of
    /// matching channels without a position that are newer than this are replayed.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub since: Option<u64>,
}

/// Limits the server enforces, announced in `connected`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Limits {
    /// Largest frame the server accepts, in bytes.
    pub max_frame_bytes: u32,
    /// Most channels (and patterns) one connection may subscribe to.
    pub max_channels: u32,
    /// Messages per second one connection may send.
    pub max_messages_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_channels: 256,
            max_messages_per_second: 100,
        }
    }
}

/// Advice sent with `disconnect`: whether and when to come back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReconnectAdvice {
    /// Whether the client should reconnect at all.
    pub reconnect: bool,
    /// Do not reconnect sooner than this many ms from now.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub not_before_ms: Option<u64>,
}

/// Outcome of one subscription (reply to `subscribe`, or an entry of `connected.subs`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubscribeResult {
    /// The channel or pattern subscribed to.
    pub channel: String,
    /// Current epoch of the channel (empty for patterns).
    #[cfg_attr(feature = "serde", serde(default))]
    pub epoch: String,
    /// Current top offset of the channel (0 for patterns).
    #[cfg_attr(feature = "serde", serde(default))]
    pub offset: u64,
    /// True when everything missed since the given position is in `publications`.
    pub recovered: bool,
    /// Missed publications, in order (per channel).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub publications: Vec<Publication>,
    /// For patterns: concrete channels whose positions could not be recovered.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub unrecovered: Vec<String>,
    /// Server time (ms) at which the subscription became live.
    #[cfg_attr(feature = "serde", serde(default))]
    pub server_time: u64,
    /// Set instead of the above when this subscription was refused.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub error: Option<ErrorBody>,
}

/// The body of an `error` frame (and of refused subscriptions).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ErrorBody {
    /// Stable error code, see [`ErrorCode`].
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Whether retrying later may succeed.
    #[cfg_attr(feature = "serde", serde(default))]
    pub temporary: bool,
    /// For `rate_limited`: wait this long before retrying.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub retry_after_ms: Option<u64>,
}

impl ErrorBody {
    /// An error with the code's default `temporary` flag.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            temporary: code.is_temporary(),
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// Stable error codes of protocol v1. Unknown codes from newer servers decode as `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ErrorCode {
    /// Malformed frame, missing field, invalid name.
    BadRequest,
    /// Token missing, invalid or revoked: do not retry with the same token.
    Unauthorized,
    /// Token expired: get a new one and retry.
    TokenExpired,
    /// The token does not allow this channel or action.
    Forbidden,
    /// Frame larger than `max_frame_bytes`.
    FrameTooLarge,
    /// Too many messages; retry after `retry_after_ms`.
    RateLimited,
    /// Protocol version not supported by the server.
    UnsupportedVersion,
    /// Too many channels on one connection.
    TooManyChannels,
    /// Too many connections for this user or address.
    TooManyConnections,
    /// Command sent before `connect` completed.
    NotConnected,
    /// Server-side failure; retry later.
    Internal,
    /// The server is shutting down.
    ShuttingDown,
    /// A code this version does not know.
    #[cfg_attr(feature = "serde", serde(other))]
    Other,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::TokenExpired => "token_expired",
            Self::Forbidden => "forbidden",
            Self::FrameTooLarge => "frame_too_large",
            Self::RateLimited => "rate_limited",
            Self::UnsupportedVersion => "unsupported_version",
            Self::TooManyChannels => "too_many_channels",
            Self::TooManyConnections => "too_many_connections",
            Self::NotConnected => "not_connected",
            Self::Internal => "internal",
            Self::ShuttingDown => "shutting_down",
            Self::Other => "other",
        }
    }

    /// Whether the same request may succeed later without changes.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::Internal
                | Self::ShuttingDown
                | Self::TooManyConnections
                | Self::NotConnected
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stable disconnect codes sent in `disconnect` frames.
pub mod disconnect_code {
    /// The server is shutting down or restarting.
    pub const SHUTDOWN: &str = "shutdown";
    /// The client did not answer pings.
    pub const STALE: &str = "stale";
    /// The client could not keep up with its deliveries.
    pub const SLOW_CONSUMER: &str = "slow_consumer";
    /// The token expired and was not refreshed.
    pub const TOKEN_EXPIRED: &str = "token_expired";
    /// The token is invalid or revoked.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// Protocol violation.
    pub const BAD_REQUEST: &str = "bad_request";
    /// Protocol version not supported.
    pub const UNSUPPORTED_VERSION: &str = "unsupported_version";
    /// Too many connections for this user or address.
    pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
}

/// Frames sent by a client.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientFrame {
    /// Authenticate and (re)subscribe in one round trip.
    Connect {
        /// Command id.
        id: u64,
        /// Protocol version spoken.
        version: u32,
        /// JWT.
        token: Secret,
        /// Client name and version.
        client: ClientInfo,
        /// Subscriptions to restore, with their recovery positions.
        subs: Vec<SubscribeRequest>,
    },
    /// Subscribe to a channel or pattern.
    Subscribe {
        /// Command id.
        id: u64,
        /// What to subscribe to and from where.
        request: SubscribeRequest,
    },
    /// Stop receiving a channel or pattern.
    Unsubscribe {
        /// Command id.
        id: u64,
        /// Channel or pattern.
        channel: String,
    },
    /// Publish into a channel; idempotent by `msg_id`.
    Publish {
        /// Command id.
        id: u64,
        /// Target channel.
        channel: String,
        /// Client-generated message id.
        msg_id: String,
        /// Application event name.
        event: String,
        /// Application data.
        data: Payload,
    },
    /// Liveness probe; the server answers `pong` with the same id.
    Ping {
        /// Command id.
        id: u64,
    },
    /// Answer to a server `ping`.
    Pong {
        /// The id of the server ping, if it had one.
        id: Option<u64>,
    },
    /// Replace the connection's token.
    Refresh {
        /// Command id.
        id: u64,
        /// The new JWT.
        token: Secret,
    },
}

impl ClientFrame {
    /// The command id, for frames that expect a reply.
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::Connect { id, .. }
            | Self::Subscribe { id, .. }
            | Self::Unsubscribe { id, .. }
            | Self::Publish { id, .. }
            | Self::Ping { id }
            | Self::Refresh { id, .. } => Some(*id),
            Self::Pong { .. } => None,
        }
    }
}

/// Frames sent by a server.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerFrame {
    /// Reply to `connect`.
    Connected {
        /// The connect command's id.
        id: u64,
        /// Id of this connection.
        client_id: String,
        /// Id of the server session (changes on server restart).
        session_id: String,
        /// Server wall-clock time, ms since the Unix epoch.
        server_time: u64,
        /// The server pings this often (ms); see heartbeat rules.
        ping_interval_ms: u64,
        /// Limits the server enforces.
        limits: Limits,
        /// When the token expires (s since the Unix epoch), if it does.
        expires_at: Option<u64>,
        /// Results of the subscriptions sent with `connect`, in the same order.
        subs: Vec<SubscribeResult>,
    },
    /// Reply to `subscribe`.
    Subscribed {
        /// The subscribe command's id.
        id: u64,
        /// The outcome.
        result: SubscribeResult,
    },
    /// Reply to `unsubscribe`, or a server-side unsubscribe when `id` is absent.
    Unsubscribed {
        /// The unsubscribe command's id.
        id: Option<u64>,
        /// Channel or pattern.
        channel: String,
    },
    /// Reply to `publish`: the message is stored.
    Ack {
        /// The publish command's id.
        id: u64,
        /// The message id.
        msg_id: String,
        /// Channel epoch.
        epoch: String,
        /// Offset assigned to the message.
        offset: u64,
        /// True when this message id had been accepted before (not published again).
        duplicate: bool,
    },
    /// A message in a subscribed channel.
    Publication(Publication),
    /// Server heartbeat; answer with `pong`.
    Ping {
        /// Optional id to echo.
        id: Option<u64>,
    },
    /// Answer to a client `ping`.
    Pong {
        /// The client ping's id.
        id: u64,
    },
    /// Reply to `refresh`.
    Refreshed {
        /// The refresh command's id.
        id: u64,
        /// New expiry, s since the Unix epoch.
        expires_at: Option<u64>,
    },
    /// A command failed (`id` names it) or a connection-level problem (no `id`).
    Error {
        /// The failed command's id.
        id: Option<u64>,
        /// What went wrong.
        error: ErrorBody,
    },
    /// The server closes the connection.
    Disconnect {
        /// Stable code, see [`disconnect_code`].
        code: String,
        /// Human-readable reason.
        reason: String,
        /// Whether and when to reconnect.
        advice: ReconnectAdvice,
    },
    /// A frame type this version does not know (ignored, for forward compatibility).
    Unknown,
}

/// Turns frames into bytes and back.
pub trait Codec {
    /// Encoding error.
    type Error: std::error::Error;
    /// Encodes a client frame.
    fn encode_client(&self, frame: &ClientFrame) -> Result<String, Self::Error>;
    /// Decodes a server frame.
    fn decode_server(&self, text: &str) -> Result<ServerFrame, Self::Error>;
    /// Encodes a server frame.
    fn encode_server(&self, frame: &ServerFrame) -> Result<String, Self::Error>;
    /// Decodes a client frame.
    fn decode_client(&self, text: &str) -> Result<ClientFrame, Self::Error>;
}

/// Protocol v1's JSON text encoding.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    type Error = crate::codec::DecodeError;
    fn encode_client(&self, frame: &ClientFrame) -> Result<String, Self::Error> {
        Ok(frame.to_json())
    }
    fn decode_server(&self, text: &str) -> Result<ServerFrame, Self::Error> {
        crate::codec::decode_server(text)
    }
    fn encode_server(&self, frame: &ServerFrame) -> Result<String, Self::Error> {
        Ok(frame.to_json())
    }
    fn decode_client(&self, text: &str) -> Result<ClientFrame, Self::Error> {
        crate::codec::decode_client(text)
    }
}

/// True when `name` is a pattern (ends with `*`).
pub fn is_pattern(name: &str) -> bool {
    name.ends_with('*')
}

/// True when `channel` matches `pattern` (exact, or prefix before a trailing `*`).
pub fn pattern_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

/// Longest channel name accepted.
pub const MAX_CHANNEL_NAME: usize = 255;

/// Checks a channel or pattern name: 1..=255 bytes, printable ASCII without spaces,
/// `*` only as the last character. Returns a message on failure.
pub fn validate_channel(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CHANNEL_NAME {
        return Err(format!("channel name must be 1..={MAX_CHANNEL_NAME} bytes"));
    }
    if let Some(pos) = name.find('*') {
        if pos != name.len() - 1 {
            return Err("`*` is only allowed at the end of a pattern".into());
        }
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("channel name must be printable ASCII without spaces".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_frames_are_ignored() {
        let codec = JsonCodec;
        let frame = codec
            .decode_server(r#"{"type":"pong","id":3,"future_field":true}"#)
            .expect("decodes");
        assert_eq!(frame, ServerFrame::Pong { id: 3 });
        let frame = codec
            .decode_server(r#"{"type":"hologram","id":3}"#)
            .expect("decodes");
        assert_eq!(frame, ServerFrame::Unknown);
        let frame = codec
            .decode_server(r#"{"type":"error","code":"brand_new","message":"x"}"#)
            .expect("decodes");
        assert!(matches!(
            frame,
            ServerFrame::Error {
                error: ErrorBody {
                    code: ErrorCode::Other,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn secrets_are_not_printed() {
        let frame = ClientFrame::Refresh {
            id: 1,
            token: Secret("eyJhbGciOi.secret.sig".into()),
        };
        assert!(!format!("{frame:?}").contains("secret"));
    }

    #[test]
    fn payload_roundtrip_keeps_text() {
        let frame = ClientFrame::Publish {
            id: 7,
            channel: "goals".into(),
            msg_id: "m1".into(),
            event: "goal.updated".into(),
            data: Payload::from_json(r#"{"progress":40}"#).expect("json"),
        };
        let text = JsonCodec.encode_client(&frame).expect("encode");
        assert_eq!(
            text,
            r#"{"type":"publish","id":7,"channel":"goals","msg_id":"m1","event":"goal.updated","data":{"progress":40}}"#
        );
        assert_eq!(JsonCodec.decode_client(&text).expect("decode"), frame);
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("specs:E13-*", "specs:E13-4"));
        assert!(!pattern_matches("specs:E13-*", "specs:E14-4"));
        assert!(pattern_matches("news", "news"));
        assert!(validate_channel("specs:E13-*").is_ok());
        assert!(validate_channel("a*b").is_err());
        assert!(validate_channel("has space").is_err());
        assert!(validate_channel("").is_err());
    }
}
