//! Client configuration with documented defaults.

use crate::backoff::ReconnectPolicy;
use crate::codec::DecodeError;
use crate::json::{self, Value};
use crate::store::number_u64;

/// What to do when the outbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum OutboxFullPolicy {
    /// `publish()` fails with `outbox_full` (default: nothing accepted is ever dropped).
    #[default]
    RejectNew,
    /// The oldest unsent message fails with `overflow` to make room.
    DropOldest,
}

/// The offline send queue.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
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
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
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

/// A decimal number without exponent (`2`, `1.5`) as an `f64`.
fn decimal(text: &str) -> Option<f64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value = 0.0;
    for b in int.bytes() {
        value = value * 10.0 + f64::from(b - b'0');
    }
    let mut scale = 1.0;
    for b in frac.bytes() {
        scale /= 10.0;
        value += f64::from(b - b'0') * scale;
    }
    Some(value)
}

const INTEGER: &str = "a non-negative integer";

/// `None` when a value was taken, else `Some(what it must be)`.
trait OrExpected {
    fn or_expected(self, expected: &'static str) -> Option<&'static str>;
}

impl OrExpected for Option<()> {
    fn or_expected(self, expected: &'static str) -> Option<&'static str> {
        match self {
            Some(()) => None,
            None => Some(expected),
        }
    }
}
const STRING: &str = "a string";

/// Applies the members of one options object. Written as one match over the members
/// (rather than one lookup per field) because the browser build pays for every call site.
/// Returns the offending key and what it must be.
fn apply(o: &mut Options, object: &Value<'_>, nested: &str) -> Result<(), (String, &'static str)> {
    for m in object.as_object().unwrap_or_default() {
        let v = &m.value;
        let key = &*m.key;
        let text = || v.as_str().map(str::to_owned);
        let int = || number_u64(v);
        let size = || number_u64(v).and_then(|n| usize::try_from(n).ok());
        // `Some(expected)` when the value is not acceptable.
        let bad: Option<&'static str> = match (nested, key) {
            _ if *v == Value::Null && !matches!(key, "token" | "user" | "max_attempts") => None,
            ("", "url") => text().map(|t| o.url = t).or_expected(STRING),
            ("", "client_name") => text().map(|t| o.client_name = t).or_expected(STRING),
            ("", "client_version") => text().map(|t| o.client_version = t).or_expected(STRING),
            ("", "token" | "user") => {
                let slot = if key == "token" {
                    &mut o.token
                } else {
                    &mut o.user
                };
                match v {
                    Value::Null => {
                        *slot = None;
                        None
                    }
                    _ => text().map(|t| *slot = Some(t)).or_expected(STRING),
                }
            }
            ("", "token_provider") => v
                .as_bool()
                .map(|b| o.token_provider = b)
                .or_expected("true or false"),
            ("", "max_frame_bytes" | "max_channels")
            | ("outbox", "max_messages" | "max_in_flight") => {
                let slot = match key {
                    "max_frame_bytes" => &mut o.max_frame_bytes,
                    "max_channels" => &mut o.max_channels,
                    "max_messages" => &mut o.outbox.max_messages,
                    _ => &mut o.outbox.max_in_flight,
                };
                size().map(|n| *slot = n).or_expected(INTEGER)
            }
            ("", "reconnect" | "outbox") => match v {
                Value::Object(_) => {
                    apply(o, v, key)?;
                    None
                }
                _ => Some("an object"),
            },
            ("reconnect", "factor") => match v {
                Value::Number(t) => decimal(t),
                _ => None,
            }
            .map(|f| o.reconnect.factor = f)
            .or_expected("a decimal number such as 1.5"),
            ("reconnect", "max_attempts") => match v {
                Value::Null => {
                    o.reconnect.max_attempts = None;
                    None
                }
                _ => int()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(|n| o.reconnect.max_attempts = Some(n))
                    .or_expected("a non-negative integer or null"),
            },
            ("outbox", "full_policy") => match v.as_str() {
                Some("reject_new") => {
                    o.outbox.full_policy = OutboxFullPolicy::RejectNew;
                    None
                }
                Some("drop_oldest") => {
                    o.outbox.full_policy = OutboxFullPolicy::DropOldest;
                    None
                }
                _ => Some("\"reject_new\" or \"drop_oldest\""),
            },
            (group, _) => {
                let slot = match (group, key) {
                    ("", "connect_timeout_ms") => &mut o.connect_timeout_ms,
                    ("", "command_timeout_ms") => &mut o.command_timeout_ms,
                    ("", "ping_interval_ms") => &mut o.ping_interval_ms,
                    ("", "heartbeat_grace_ms") => &mut o.heartbeat_grace_ms,
                    ("", "liveness_timeout_ms") => &mut o.liveness_timeout_ms,
                    ("", "clock_jump_ms") => &mut o.clock_jump_ms,
                    ("", "token_refresh_margin_ms") => &mut o.token_refresh_margin_ms,
                    ("", "batch_window_ms") => &mut o.batch_window_ms,
                    ("reconnect", "base_delay_ms") => &mut o.reconnect.base_delay_ms,
                    ("reconnect", "max_delay_ms") => &mut o.reconnect.max_delay_ms,
                    ("reconnect", "reset_after_ms") => &mut o.reconnect.reset_after_ms,
                    ("outbox", "ttl_ms") => &mut o.outbox.ttl_ms,
                    // Unknown members are ignored (options of newer versions).
                    _ => continue,
                };
                int().map(|n| *slot = n).or_expected(INTEGER)
            }
        };
        if let Some(expected) = bad {
            let path = if nested.is_empty() {
                key.to_owned()
            } else {
                String::from(nested) + "." + key
            };
            return Err((path, expected));
        }
    }
    Ok(())
}

impl Options {
    /// Reads options from JSON text: the field names in snake_case, every member optional
    /// (missing or `null` ones keep their defaults), unknown members ignored. Nested
    /// `reconnect` and `outbox` objects take the fields of [`ReconnectPolicy`] and
    /// [`OutboxOptions`]; `token: null`, `user: null` and `reconnect.max_attempts: null`
    /// (never give up) clear those values.
    pub fn from_json(text: &str) -> Result<Self, DecodeError> {
        let value = json::parse(text)
            .map_err(|e| DecodeError(String::from("invalid options: ") + &e.to_string()))?;
        if !matches!(value, Value::Object(_)) {
            return Err(DecodeError(
                "invalid options: expected a JSON object".into(),
            ));
        }
        let mut o = Options::default();
        apply(&mut o, &value, "").map_err(|(path, expected)| {
            DecodeError(String::from("invalid options: `") + &path + "` must be " + expected)
        })?;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_json_reads_every_field_and_keeps_defaults() {
        let o = Options::from_json(
            r#"{"url":"ws://x","token":"t","user":null,"ping_interval_ms":5000,
                "reconnect":{"factor":1.5,"max_attempts":null,"base_delay_ms":200},
                "outbox":{"full_policy":"drop_oldest","max_messages":3},"unknown":[1]}"#,
        )
        .expect("valid");
        assert_eq!(o.url, "ws://x");
        assert_eq!(o.token.as_deref(), Some("t"));
        assert_eq!(o.user, None);
        assert_eq!(o.ping_interval_ms, 5000);
        assert_eq!(o.reconnect.factor, 1.5);
        assert_eq!(o.reconnect.max_attempts, None);
        assert_eq!(o.reconnect.base_delay_ms, 200);
        assert_eq!(
            o.reconnect.max_delay_ms,
            ReconnectPolicy::default().max_delay_ms
        );
        assert_eq!(o.outbox.full_policy, OutboxFullPolicy::DropOldest);
        assert_eq!(o.outbox.max_messages, 3);
        assert_eq!(o.command_timeout_ms, Options::default().command_timeout_ms);
        assert_eq!(Options::from_json("{}").expect("empty"), Options::default());
    }

    #[test]
    fn from_json_names_the_bad_field() {
        let err = |text: &str| Options::from_json(text).expect_err(text).0;
        assert_eq!(
            err(r#"{"ping_interval_ms":-1}"#),
            "invalid options: `ping_interval_ms` must be a non-negative integer"
        );
        assert_eq!(
            err(r#"{"reconnect":{"factor":"2"}}"#),
            "invalid options: `reconnect.factor` must be a decimal number such as 1.5"
        );
        assert_eq!(
            err(r#"{"outbox":{"full_policy":"x"}}"#),
            "invalid options: `outbox.full_policy` must be \"reject_new\" or \"drop_oldest\""
        );
        assert_eq!(err("[]"), "invalid options: expected a JSON object");
        assert!(err("{").starts_with("invalid options: invalid JSON"));
    }
}
