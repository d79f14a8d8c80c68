//! Decoding server frames without serde's derived `Deserialize` impls.
//!
//! `ServerFrame` is an internally tagged enum with flattened fields, and serde decodes those
//! through its buffering `Content` machinery, which alone costs tens of KiB of wasm. The
//! frames are parsed into a `serde_json::Value` (the parser the core already needs for
//! `Payload`) and picked apart by hand here, following `docs/protocol.md`: unknown fields
//! and frame types are ignored, optional fields take their documented defaults.

use serde_json::{Map, Value};
use tidings::protocol::{
    ErrorBody, Limits, Publisher, ReconnectAdvice, ServerFrame, SubscribeResult,
};
use tidings::{ErrorCode, Payload, Publication};

type Obj = Map<String, Value>;
type Result<T> = std::result::Result<T, String>;

/// Decodes one text frame.
pub fn decode_server(text: &str) -> Result<ServerFrame> {
    let value: Value = crate::js::from_json(text).map_err(|e| e.to_string())?;
    match value {
        Value::Object(map) => frame(&map),
        _ => Err("a frame must be a JSON object".into()),
    }
}

fn missing(key: &str) -> String {
    format!("missing or invalid field `{key}`")
}

fn string(m: &Obj, key: &str) -> Result<String> {
    m.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| missing(key))
}

fn string_or_empty(m: &Obj, key: &str) -> String {
    m.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn opt_u64(m: &Obj, key: &str) -> Option<u64> {
    m.get(key).and_then(Value::as_u64)
}

fn u64_req(m: &Obj, key: &str) -> Result<u64> {
    opt_u64(m, key).ok_or_else(|| missing(key))
}

fn u64_or_zero(m: &Obj, key: &str) -> u64 {
    opt_u64(m, key).unwrap_or(0)
}

fn bool_or(m: &Obj, key: &str, default: bool) -> bool {
    m.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn object<'a>(m: &'a Obj, key: &str) -> Option<&'a Obj> {
    m.get(key).and_then(Value::as_object)
}

fn array<'a>(m: &'a Obj, key: &str) -> &'a [Value] {
    m.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
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

fn error_body(m: &Obj) -> Result<ErrorBody> {
    Ok(ErrorBody {
        code: error_code(&string(m, "code")?),
        message: string(m, "message")?,
        temporary: bool_or(m, "temporary", false),
        retry_after_ms: opt_u64(m, "retry_after_ms"),
    })
}

fn publication(m: &Obj) -> Result<Publication> {
    let publisher = match object(m, "publisher") {
        Some(p) => Publisher {
            user: string(p, "user")?,
            client: p.get("client").and_then(Value::as_str).map(str::to_owned),
            info: p.get("info").cloned().map(Payload::from),
        },
        None => Publisher::default(),
    };
    Ok(Publication {
        channel: string(m, "channel")?,
        epoch: string(m, "epoch")?,
        offset: u64_req(m, "offset")?,
        id: string(m, "id")?,
        event: string(m, "event")?,
        data: Payload::from(m.get("data").cloned().ok_or_else(|| missing("data"))?),
        ts: u64_req(m, "ts")?,
        publisher,
    })
}

fn subscribe_result(m: &Obj) -> Result<SubscribeResult> {
    let error = object(m, "error").map(error_body).transpose()?;
    Ok(SubscribeResult {
        channel: string(m, "channel")?,
        epoch: string_or_empty(m, "epoch"),
        offset: u64_or_zero(m, "offset"),
        recovered: m
            .get("recovered")
            .and_then(Value::as_bool)
            .ok_or_else(|| missing("recovered"))?,
        publications: array(m, "publications")
            .iter()
            .map(|p| {
                p.as_object()
                    .ok_or_else(|| missing("publications"))
                    .and_then(publication)
            })
            .collect::<Result<_>>()?,
        unrecovered: array(m, "unrecovered")
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect(),
        server_time: u64_or_zero(m, "server_time"),
        error,
    })
}

fn frame(m: &Obj) -> Result<ServerFrame> {
    let kind = m.get("type").and_then(Value::as_str).unwrap_or_default();
    Ok(match kind {
        "connected" => {
            let limits = object(m, "limits").ok_or_else(|| missing("limits"))?;
            let limit = |key: &str| u64_req(limits, key).map(|v| v.min(u32::MAX as u64) as u32);
            ServerFrame::Connected {
                id: u64_req(m, "id")?,
                client_id: string(m, "client_id")?,
                session_id: string(m, "session_id")?,
                server_time: u64_req(m, "server_time")?,
                ping_interval_ms: u64_req(m, "ping_interval_ms")?,
                limits: Limits {
                    max_frame_bytes: limit("max_frame_bytes")?,
                    max_channels: limit("max_channels")?,
                    max_messages_per_second: limit("max_messages_per_second")?,
                },
                expires_at: opt_u64(m, "expires_at"),
                subs: array(m, "subs")
                    .iter()
                    .map(|s| {
                        s.as_object()
                            .ok_or_else(|| missing("subs"))
                            .and_then(subscribe_result)
                    })
                    .collect::<Result<_>>()?,
            }
        }
        "subscribed" => ServerFrame::Subscribed {
            id: u64_req(m, "id")?,
            result: subscribe_result(m)?,
        },
        "unsubscribed" => ServerFrame::Unsubscribed {
            id: opt_u64(m, "id"),
            channel: string(m, "channel")?,
        },
        "ack" => ServerFrame::Ack {
            id: u64_req(m, "id")?,
            msg_id: string(m, "msg_id")?,
            epoch: string(m, "epoch")?,
            offset: u64_req(m, "offset")?,
            duplicate: bool_or(m, "duplicate", false),
        },
        "publication" => ServerFrame::Publication(publication(m)?),
        "ping" => ServerFrame::Ping {
            id: opt_u64(m, "id"),
        },
        "pong" => ServerFrame::Pong {
            id: u64_req(m, "id")?,
        },
        "refreshed" => ServerFrame::Refreshed {
            id: u64_req(m, "id")?,
            expires_at: opt_u64(m, "expires_at"),
        },
        "error" => ServerFrame::Error {
            id: opt_u64(m, "id"),
            error: error_body(m)?,
        },
        "disconnect" => {
            let advice = object(m, "advice").ok_or_else(|| missing("advice"))?;
            ServerFrame::Disconnect {
                code: string(m, "code")?,
                reason: string(m, "reason")?,
                advice: ReconnectAdvice {
                    reconnect: advice
                        .get("reconnect")
                        .and_then(Value::as_bool)
                        .ok_or_else(|| missing("reconnect"))?,
                    not_before_ms: opt_u64(advice, "not_before_ms"),
                },
            }
        }
        _ => ServerFrame::Unknown,
    })
}
