//! Protocol v1's JSON text encoding of every frame, written out by hand on top of
//! [`crate::json`] (see that module for why not serde). `docs/protocol.md` is the contract;
//! `tests/protocol_docs.rs` decodes and re-encodes every example frame in it.
//!
//! Decoding follows the forward-compatibility rules of the protocol: unknown fields are
//! ignored, optional fields take their documented defaults, an unknown server frame type
//! decodes as [`ServerFrame::Unknown`] and an unknown error code as [`ErrorCode::Other`].

use std::fmt;

use crate::json::{self, ObjectWriter, ToJson, Value};
use crate::protocol::{
    ClientFrame, ClientInfo, ErrorBody, ErrorCode, Limits, Payload, Publication, Publisher,
    ReconnectAdvice, Secret, ServerFrame, StreamPosition, SubscribeRequest, SubscribeResult,
};

/// Why a frame could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

impl From<json::JsonError> for DecodeError {
    fn from(e: json::JsonError) -> Self {
        Self(e.to_string())
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

fn field_error(problem: &str, key: &str) -> DecodeError {
    DecodeError(String::from(problem) + " `" + key + "`")
}

/// The member `key`; `null` counts as absent.
fn opt<'v, 'a>(v: &'v Value<'a>, key: &str) -> Option<&'v Value<'a>> {
    v.get(key)
}

fn req<'v, 'a>(v: &'v Value<'a>, key: &str) -> Result<&'v Value<'a>> {
    opt(v, key).ok_or_else(|| field_error("missing field", key))
}

fn as_string(v: &Value<'_>, key: &str) -> Result<String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| field_error("expected a string in", key))
}

fn as_u64(v: &Value<'_>, key: &str) -> Result<u64> {
    v.as_u64()
        .ok_or_else(|| field_error("expected a non-negative integer in", key))
}

fn as_bool(v: &Value<'_>, key: &str) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| field_error("expected true or false in", key))
}

fn string(v: &Value<'_>, key: &str) -> Result<String> {
    as_string(req(v, key)?, key)
}

fn string_or_empty(v: &Value<'_>, key: &str) -> Result<String> {
    opt(v, key).map_or(Ok(String::new()), |x| as_string(x, key))
}

fn opt_string(v: &Value<'_>, key: &str) -> Result<Option<String>> {
    opt(v, key).map(|x| as_string(x, key)).transpose()
}

fn u64_req(v: &Value<'_>, key: &str) -> Result<u64> {
    as_u64(req(v, key)?, key)
}

fn opt_u64(v: &Value<'_>, key: &str) -> Result<Option<u64>> {
    opt(v, key).map(|x| as_u64(x, key)).transpose()
}

fn u64_or_zero(v: &Value<'_>, key: &str) -> Result<u64> {
    Ok(opt_u64(v, key)?.unwrap_or(0))
}

fn u32_req(v: &Value<'_>, key: &str) -> Result<u32> {
    u32::try_from(u64_req(v, key)?).map_err(|_| field_error("number too large in", key))
}

fn bool_or(v: &Value<'_>, key: &str, default: bool) -> Result<bool> {
    opt(v, key).map_or(Ok(default), |x| as_bool(x, key))
}

fn array<'v, 'a>(v: &'v Value<'a>, key: &str) -> Result<&'v [Value<'a>]> {
    match opt(v, key) {
        None => Ok(&[]),
        Some(x) => x
            .as_array()
            .ok_or_else(|| field_error("expected an array in", key)),
    }
}

fn object<'v, 'a>(v: &'v Value<'a>, key: &str) -> Result<Option<&'v Value<'a>>> {
    match opt(v, key) {
        None => Ok(None),
        Some(x @ Value::Object(_)) => Ok(Some(x)),
        Some(_) => Err(field_error("expected an object in", key)),
    }
}

/// A required application payload member (any JSON value, `null` included).
fn payload(v: &Value<'_>, key: &str) -> Result<Payload> {
    v.member(key)
        .map(Payload::from_member)
        .ok_or_else(|| field_error("missing field", key))
}

fn opt_payload(v: &Value<'_>, key: &str) -> Option<Payload> {
    v.member(key)
        .filter(|m| m.value != Value::Null)
        .map(Payload::from_member)
}

fn root(text: &str) -> Result<(Value<'_>, String)> {
    let value = json::parse(text)?;
    let Value::Object(members) = &value else {
        return Err(DecodeError("a frame must be a JSON object".into()));
    };
    // A frame field given twice is refused (as serde's derives did): a proxy reading the
    // first `type` and the server reading the last must not see different frames.
    for (i, m) in members.iter().enumerate() {
        if members[..i].iter().any(|earlier| earlier.key == m.key) {
            return Err(field_error("duplicate field", &m.key));
        }
    }
    let kind = string(&value, "type")?;
    Ok((value, kind))
}

/// Reads a stream position object.
pub fn stream_position(v: &Value<'_>) -> Result<StreamPosition> {
    Ok(StreamPosition {
        epoch: string(v, "epoch")?,
        offset: u64_req(v, "offset")?,
    })
}

fn position_map<C: FromIterator<(String, StreamPosition)>>(v: &Value<'_>, key: &str) -> Result<C> {
    match opt(v, key) {
        None => Ok(std::iter::empty().collect()),
        Some(Value::Object(members)) => members
            .iter()
            .map(|m| Ok((m.key.to_string(), stream_position(&m.value)?)))
            .collect(),
        Some(_) => Err(field_error("expected an object in", key)),
    }
}

/// Reads a publication object (also the body of a `publication` frame).
pub fn publication(v: &Value<'_>) -> Result<Publication> {
    let publisher = match object(v, "publisher")? {
        None => Publisher::default(),
        Some(p) => Publisher {
            user: string(p, "user")?,
            client: opt_string(p, "client")?,
            info: opt_payload(p, "info"),
        },
    };
    Ok(Publication {
        channel: string(v, "channel")?,
        epoch: string(v, "epoch")?,
        offset: u64_req(v, "offset")?,
        id: string(v, "id")?,
        event: string(v, "event")?,
        data: payload(v, "data")?,
        ts: u64_req(v, "ts")?,
        publisher,
    })
}

fn error_code(code: &str) -> ErrorCode {
    match code {
        "bad_request" => ErrorCode::BadRequest,
        "unauthorized" => ErrorCode::Unauthorized,
        "token_expired" => ErrorCode::TokenExpired,
        "forbidden" => ErrorCode::Forbidden,
        "frame_too_large" => ErrorCode::FrameTooLarge,
        "rate_limited" => ErrorCode::RateLimited,
        "unsupported_version" => ErrorCode::UnsupportedVersion,
        "too_many_channels" => ErrorCode::TooManyChannels,
        "too_many_connections" => ErrorCode::TooManyConnections,
        "not_connected" => ErrorCode::NotConnected,
        "internal" => ErrorCode::Internal,
        "shutting_down" => ErrorCode::ShuttingDown,
        _ => ErrorCode::Other,
    }
}

impl std::str::FromStr for ErrorCode {
    type Err = std::convert::Infallible;
    /// Parses a wire name; unknown names give [`ErrorCode::Other`].
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(error_code(s))
    }
}

fn error_body(v: &Value<'_>) -> Result<ErrorBody> {
    Ok(ErrorBody {
        code: error_code(&string(v, "code")?),
        message: string(v, "message")?,
        temporary: bool_or(v, "temporary", false)?,
        retry_after_ms: opt_u64(v, "retry_after_ms")?,
    })
}

fn subscribe_result(v: &Value<'_>) -> Result<SubscribeResult> {
    Ok(SubscribeResult {
        channel: string(v, "channel")?,
        epoch: string_or_empty(v, "epoch")?,
        offset: u64_or_zero(v, "offset")?,
        recovered: as_bool(req(v, "recovered")?, "recovered")?,
        publications: array(v, "publications")?
            .iter()
            .map(publication)
            .collect::<Result<_>>()?,
        unrecovered: array(v, "unrecovered")?
            .iter()
            .map(|c| as_string(c, "unrecovered"))
            .collect::<Result<_>>()?,
        server_time: u64_or_zero(v, "server_time")?,
        error: object(v, "error")?.map(error_body).transpose()?,
    })
}

fn subscribe_request(v: &Value<'_>) -> Result<SubscribeRequest> {
    Ok(SubscribeRequest {
        channel: string(v, "channel")?,
        recover: object(v, "recover")?.map(stream_position).transpose()?,
        positions: position_map(v, "positions")?,
        since: opt_u64(v, "since")?,
    })
}

/// Decodes a frame sent by a server.
pub fn decode_server(text: &str) -> Result<ServerFrame> {
    let (v, kind) = root(text)?;
    let v = &v;
    Ok(match kind.as_str() {
        "connected" => {
            let limits = req(v, "limits")?;
            ServerFrame::Connected {
                id: u64_req(v, "id")?,
                client_id: string(v, "client_id")?,
                session_id: string(v, "session_id")?,
                server_time: u64_req(v, "server_time")?,
                ping_interval_ms: u64_req(v, "ping_interval_ms")?,
                limits: Limits {
                    max_frame_bytes: u32_req(limits, "max_frame_bytes")?,
                    max_channels: u32_req(limits, "max_channels")?,
                    max_messages_per_second: u32_req(limits, "max_messages_per_second")?,
                },
                expires_at: opt_u64(v, "expires_at")?,
                subs: array(v, "subs")?
                    .iter()
                    .map(subscribe_result)
                    .collect::<Result<_>>()?,
            }
        }
        "subscribed" => ServerFrame::Subscribed {
            id: u64_req(v, "id")?,
            result: subscribe_result(v)?,
        },
        "unsubscribed" => ServerFrame::Unsubscribed {
            id: opt_u64(v, "id")?,
            channel: string(v, "channel")?,
        },
        "ack" => ServerFrame::Ack {
            id: u64_req(v, "id")?,
            msg_id: string(v, "msg_id")?,
            epoch: string(v, "epoch")?,
            offset: u64_req(v, "offset")?,
            duplicate: bool_or(v, "duplicate", false)?,
        },
        "publication" => ServerFrame::Publication(publication(v)?),
        "ping" => ServerFrame::Ping {
            id: opt_u64(v, "id")?,
        },
        "pong" => ServerFrame::Pong {
            id: u64_req(v, "id")?,
        },
        "refreshed" => ServerFrame::Refreshed {
            id: u64_req(v, "id")?,
            expires_at: opt_u64(v, "expires_at")?,
        },
        "error" => ServerFrame::Error {
            id: opt_u64(v, "id")?,
            error: error_body(v)?,
        },
        "disconnect" => {
            let advice = req(v, "advice")?;
            ServerFrame::Disconnect {
                code: string(v, "code")?,
                reason: string(v, "reason")?,
                advice: ReconnectAdvice {
                    reconnect: as_bool(req(advice, "reconnect")?, "reconnect")?,
                    not_before_ms: opt_u64(advice, "not_before_ms")?,
                },
            }
        }
        _ => ServerFrame::Unknown,
    })
}

/// Decodes a frame sent by a client.
pub fn decode_client(text: &str) -> Result<ClientFrame> {
    let (v, kind) = root(text)?;
    let v = &v;
    Ok(match kind.as_str() {
        "connect" => ClientFrame::Connect {
            id: u64_req(v, "id")?,
            version: u32_req(v, "version")?,
            token: Secret(string(v, "token")?),
            client: match object(v, "client")? {
                None => ClientInfo::default(),
                Some(c) => ClientInfo {
                    name: string(c, "name")?,
                    version: string(c, "version")?,
                },
            },
            subs: array(v, "subs")?
                .iter()
                .map(subscribe_request)
                .collect::<Result<_>>()?,
        },
        "subscribe" => ClientFrame::Subscribe {
            id: u64_req(v, "id")?,
            request: subscribe_request(v)?,
        },
        "unsubscribe" => ClientFrame::Unsubscribe {
            id: u64_req(v, "id")?,
            channel: string(v, "channel")?,
        },
        "publish" => ClientFrame::Publish {
            id: u64_req(v, "id")?,
            channel: string(v, "channel")?,
            msg_id: string(v, "msg_id")?,
            event: string(v, "event")?,
            data: payload(v, "data")?,
        },
        "ping" => ClientFrame::Ping {
            id: u64_req(v, "id")?,
        },
        "pong" => ClientFrame::Pong {
            id: opt_u64(v, "id")?,
        },
        "refresh" => ClientFrame::Refresh {
            id: u64_req(v, "id")?,
            token: Secret(string(v, "token")?),
        },
        _ => {
            return Err(DecodeError(
                String::from("unknown frame type `") + &kind + "`",
            ))
        }
    })
}

fn frame<'o>(out: &'o mut String, kind: &str) -> ObjectWriter<'o> {
    let mut obj = ObjectWriter::new(out);
    obj.str("type", kind);
    obj
}

impl ToJson for StreamPosition {
    fn write_json(&self, out: &mut String) {
        let mut obj = ObjectWriter::new(out);
        obj.str("epoch", &self.epoch).u64("offset", self.offset);
        obj.end();
    }
}

fn write_positions<'p>(
    out: &mut String,
    positions: impl IntoIterator<Item = (&'p String, &'p StreamPosition)>,
) {
    let mut obj = ObjectWriter::new(out);
    for (channel, position) in positions {
        position.write_json(obj.key(channel));
    }
    obj.end();
}

pub(crate) fn write_publication_fields(obj: &mut ObjectWriter<'_>, p: &Publication) {
    obj.str("channel", &p.channel)
        .str("epoch", &p.epoch)
        .u64("offset", p.offset)
        .str("id", &p.id)
        .str("event", &p.event)
        .raw("data", p.data.json())
        .u64("ts", p.ts);
    let mut publisher = ObjectWriter::new(obj.key("publisher"));
    publisher
        .str("user", &p.publisher.user)
        .opt_str("client", p.publisher.client.as_deref());
    if let Some(info) = &p.publisher.info {
        publisher.raw("info", info.json());
    }
    publisher.end();
}

impl ToJson for Publication {
    fn write_json(&self, out: &mut String) {
        let mut obj = ObjectWriter::new(out);
        write_publication_fields(&mut obj, self);
        obj.end();
    }
}

fn write_subscribe_request_fields(obj: &mut ObjectWriter<'_>, r: &SubscribeRequest) {
    obj.str("channel", &r.channel);
    if let Some(recover) = &r.recover {
        recover.write_json(obj.key("recover"));
    }
    if !r.positions.is_empty() {
        write_positions(obj.key("positions"), &r.positions);
    }
    obj.opt_u64("since", r.since);
}

impl ToJson for SubscribeRequest {
    fn write_json(&self, out: &mut String) {
        let mut obj = ObjectWriter::new(out);
        write_subscribe_request_fields(&mut obj, self);
        obj.end();
    }
}

impl ToJson for ErrorBody {
    fn write_json(&self, out: &mut String) {
        let mut obj = ObjectWriter::new(out);
        write_error_fields(&mut obj, self);
        obj.end();
    }
}

fn write_error_fields(obj: &mut ObjectWriter<'_>, e: &ErrorBody) {
    obj.str("code", e.code.as_str())
        .str("message", &e.message)
        .bool("temporary", e.temporary)
        .opt_u64("retry_after_ms", e.retry_after_ms);
}

fn write_subscribe_result_fields(obj: &mut ObjectWriter<'_>, r: &SubscribeResult) {
    obj.str("channel", &r.channel)
        .str("epoch", &r.epoch)
        .u64("offset", r.offset)
        .bool("recovered", r.recovered);
    if !r.publications.is_empty() {
        r.publications.write_json(obj.key("publications"));
    }
    if !r.unrecovered.is_empty() {
        r.unrecovered.write_json(obj.key("unrecovered"));
    }
    obj.u64("server_time", r.server_time);
    if let Some(error) = &r.error {
        error.write_json(obj.key("error"));
    }
}

impl ToJson for SubscribeResult {
    fn write_json(&self, out: &mut String) {
        let mut obj = ObjectWriter::new(out);
        write_subscribe_result_fields(&mut obj, self);
        obj.end();
    }
}

impl ToJson for ClientFrame {
    fn write_json(&self, out: &mut String) {
        match self {
            ClientFrame::Connect {
                id,
                version,
                token,
                client,
                subs,
            } => {
                let mut obj = frame(out, "connect");
                obj.u64("id", *id)
                    .u64("version", u64::from(*version))
                    .str("token", &token.0);
                let mut info = ObjectWriter::new(obj.key("client"));
                info.str("name", &client.name)
                    .str("version", &client.version);
                info.end();
                if !subs.is_empty() {
                    subs.write_json(obj.key("subs"));
                }
                obj.end();
            }
            ClientFrame::Subscribe { id, request } => {
                let mut obj = frame(out, "subscribe");
                obj.u64("id", *id);
                write_subscribe_request_fields(&mut obj, request);
                obj.end();
            }
            ClientFrame::Unsubscribe { id, channel } => {
                let mut obj = frame(out, "unsubscribe");
                obj.u64("id", *id).str("channel", channel);
                obj.end();
            }
            ClientFrame::Publish {
                id,
                channel,
                msg_id,
                event,
                data,
            } => {
                let mut obj = frame(out, "publish");
                obj.u64("id", *id)
                    .str("channel", channel)
                    .str("msg_id", msg_id)
                    .str("event", event)
                    .raw("data", data.json());
                obj.end();
            }
            ClientFrame::Ping { id } => {
                let mut obj = frame(out, "ping");
                obj.u64("id", *id);
                obj.end();
            }
            ClientFrame::Pong { id } => {
                let mut obj = frame(out, "pong");
                obj.opt_u64("id", *id);
                obj.end();
            }
            ClientFrame::Refresh { id, token } => {
                let mut obj = frame(out, "refresh");
                obj.u64("id", *id).str("token", &token.0);
                obj.end();
            }
        }
    }
}

impl ToJson for ServerFrame {
    fn write_json(&self, out: &mut String) {
        match self {
            ServerFrame::Connected {
                id,
                client_id,
                session_id,
                server_time,
                ping_interval_ms,
                limits,
                expires_at,
                subs,
            } => {
                let mut obj = frame(out, "connected");
                obj.u64("id", *id)
                    .str("client_id", client_id)
                    .str("session_id", session_id)
                    .u64("server_time", *server_time)
                    .u64("ping_interval_ms", *ping_interval_ms);
                let mut l = ObjectWriter::new(obj.key("limits"));
                l.u64("max_frame_bytes", u64::from(limits.max_frame_bytes))
                    .u64("max_channels", u64::from(limits.max_channels))
                    .u64(
                        "max_messages_per_second",
                        u64::from(limits.max_messages_per_second),
                    );
                l.end();
                obj.opt_u64("expires_at", *expires_at);
                if !subs.is_empty() {
                    subs.write_json(obj.key("subs"));
                }
                obj.end();
            }
            ServerFrame::Subscribed { id, result } => {
                let mut obj = frame(out, "subscribed");
                obj.u64("id", *id);
                write_subscribe_result_fields(&mut obj, result);
                obj.end();
            }
            ServerFrame::Unsubscribed { id, channel } => {
                let mut obj = frame(out, "unsubscribed");
                obj.opt_u64("id", *id).str("channel", channel);
                obj.end();
            }
            ServerFrame::Ack {
                id,
                msg_id,
                epoch,
                offset,
                duplicate,
            } => {
                let mut obj = frame(out, "ack");
                obj.u64("id", *id)
                    .str("msg_id", msg_id)
                    .str("epoch", epoch)
                    .u64("offset", *offset)
                    .bool("duplicate", *duplicate);
                obj.end();
            }
            ServerFrame::Publication(p) => {
                let mut obj = frame(out, "publication");
                write_publication_fields(&mut obj, p);
                obj.end();
            }
            ServerFrame::Ping { id } => {
                let mut obj = frame(out, "ping");
                obj.opt_u64("id", *id);
                obj.end();
            }
            ServerFrame::Pong { id } => {
                let mut obj = frame(out, "pong");
                obj.u64("id", *id);
                obj.end();
            }
            ServerFrame::Refreshed { id, expires_at } => {
                let mut obj = frame(out, "refreshed");
                obj.u64("id", *id).opt_u64("expires_at", *expires_at);
                obj.end();
            }
            ServerFrame::Error { id, error } => {
                let mut obj = frame(out, "error");
                obj.opt_u64("id", *id);
                write_error_fields(&mut obj, error);
                obj.end();
            }
            ServerFrame::Disconnect {
                code,
                reason,
                advice,
            } => {
                let mut obj = frame(out, "disconnect");
                obj.str("code", code).str("reason", reason);
                let mut a = ObjectWriter::new(obj.key("advice"));
                a.bool("reconnect", advice.reconnect)
                    .opt_u64("not_before_ms", advice.not_before_ms);
                a.end();
                obj.end();
            }
            ServerFrame::Unknown => {
                frame(out, "unknown").end();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_name_the_field() {
        let err = |text: &str| decode_server(text).expect_err(text).0;
        assert_eq!(err("[]"), "a frame must be a JSON object");
        assert_eq!(err(r#"{"id":1}"#), "missing field `type`");
        assert_eq!(err(r#"{"type":"pong"}"#), "missing field `id`");
        assert_eq!(
            err(r#"{"type":"pong","id":"x"}"#),
            "expected a non-negative integer in `id`"
        );
        assert!(err("{").starts_with("invalid JSON at byte 1"));
        assert_eq!(
            decode_client(r#"{"type":"bogus"}"#).expect_err("unknown").0,
            "unknown frame type `bogus`"
        );
    }

    #[test]
    fn forward_compatible_decoding() {
        assert_eq!(
            decode_server(r#"{"type":"from_the_future","x":1}"#),
            Ok(ServerFrame::Unknown)
        );
        let frame =
            decode_server(r#"{"type":"error","code":"new_code","message":"m","extra":[1,2]}"#)
                .expect("decodes");
        let ServerFrame::Error { id: None, error } = frame else {
            panic!("not an error frame: {frame:?}")
        };
        assert_eq!(error.code, ErrorCode::Other);
        assert!(!error.temporary);
    }

    #[test]
    fn payloads_are_one_line_and_required() {
        let text = "{\"type\":\"publish\",\"id\":1,\"channel\":\"c\",\"msg_id\":\"m\",\"event\":\"e\",\"data\":{\n  \"a\" : [1, \"x y\\n\"]\r\n}}";
        let Ok(ClientFrame::Publish { data, .. }) = decode_client(text) else {
            panic!("does not decode")
        };
        assert_eq!(data.json(), r#"{"a":[1,"x y\n"]}"#);
        assert!(!data.json().contains('\n'));
        let missing = r#"{"type":"publish","id":1,"channel":"c","msg_id":"m","event":"e"}"#;
        assert_eq!(
            decode_client(missing).map_err(|e| e.0),
            Err("missing field `data`".into())
        );
        let null =
            r#"{"type":"publish","id":1,"channel":"c","msg_id":"m","event":"e","data":null}"#;
        assert!(
            matches!(decode_client(null), Ok(ClientFrame::Publish { data, .. }) if data.json() == "null")
        );
    }

    #[test]
    fn duplicate_frame_fields_are_refused() {
        for text in [
            r#"{"type":"ping","id":1,"type":"refresh","token":"t"}"#,
            r#"{"type":"ping","id":1,"id":2}"#,
        ] {
            assert!(decode_client(text)
                .expect_err(text)
                .0
                .starts_with("duplicate field"));
        }
        // Inside an application payload, duplicates are the app's business.
        let text = r#"{"type":"publish","id":1,"channel":"c","msg_id":"m","event":"e","data":{"a":1,"a":2}}"#;
        assert!(decode_client(text).is_ok());
    }

    #[test]
    fn payloads_keep_their_exact_text() {
        let text = r#"{"type":"publish","id":3,"channel":"c","msg_id":"m","event":"e","data":{"z":1,"a":12345678901234567890123,"f":1.50}}"#;
        let frame = decode_client(text).expect("decodes");
        let ClientFrame::Publish { data, .. } = &frame else {
            panic!("not a publish")
        };
        assert_eq!(
            data.json(),
            r#"{"z":1,"a":12345678901234567890123,"f":1.50}"#
        );
        assert_eq!(frame.to_json(), text);
    }
}
