//! The sans-IO core as a JavaScript object: inputs go in through `call`, outputs come
//! back as one JSON array per drain (one wasm↔JS crossing per batch, not per message).
//!
//! The browser driver (`js/src/driver.ts`) owns the WebSocket, the timers, the IndexedDB
//! store and the promises; this side only decides. Every input method takes the clocks
//! (`performance.now()` and `Date.now()`, in ms) so the core never reads time itself.

use tidings::json::{ObjectWriter, ToJson};
use tidings::protocol::{Codec, JsonCodec};
use tidings::{Client, ClientError, Input, Lifecycle, Now, Options, Output, Payload, Snapshot};
use wasm_bindgen::prelude::*;

/// A `TidingsError`-shaped error for JavaScript: JSON text `{code, message, temporary,
/// retry_after_ms?}` the TypeScript wrapper turns into its `TidingsError` class.
fn error(e: &ClientError) -> JsValue {
    JsValue::from_str(&e.to_json())
}

/// A `bad_request` error for input the core cannot take.
fn bad_request(message: &str) -> JsValue {
    let mut out = String::new();
    let mut obj = ObjectWriter::new(&mut out);
    obj.str("code", "bad_request")
        .str("message", message)
        .bool("temporary", false);
    obj.end();
    JsValue::from_str(&out)
}

/// The Tidings client state machine (see `tidings::Client`).
#[wasm_bindgen]
#[allow(missing_debug_implementations)] // Debug formatting would only add wasm size.
pub struct Core {
    client: Client,
}

#[wasm_bindgen]
impl Core {
    /// `options`: the core's `Options` as JSON (snake_case, any subset). `seed`: random
    /// bits for jitter and message ids (two u32 halves, from `crypto.getRandomValues`).
    #[wasm_bindgen(constructor)]
    pub fn new(options: &str, seed_high: u32, seed_low: u32) -> Result<Core, JsValue> {
        let options = Options::from_json(options).map_err(|e| bad_request(&e.0))?;
        let seed = (u64::from(seed_high) << 32) | u64::from(seed_low);
        Ok(Core {
            client: Client::new(options, seed),
        })
    }

    /// Feeds one input, named by `name`, with the clocks (`performance.now()`,
    /// `Date.now()`, ms). One entry point instead of one method per input keeps the
    /// wasm-bindgen glue small. Returns `""` unless noted; throws a `TidingsError`-shaped
    /// JSON text for bad input.
    ///
    /// App commands: `restore` (a: snapshot JSON, once, before `connect`), `connect`,
    /// `disconnect`, `clear`, `set_token` (a), `subscribe` / `unsubscribe` (a: channel),
    /// `publish` (a: channel, b: event, c: data JSON, d: the message id to use, or `""`
    /// for a new one; returns the message id), `cancel`
    /// (a: message id), `lifecycle` (a: `online`, `offline`, `suspended`, `resumed`).
    ///
    /// Platform reports: `opened` (id: transport), `closed` (id, a: reason), `frame` (id,
    /// a: text; returns why a frame that does not decode was ignored), `timeout` (the
    /// last `wake` time came), `token` (a: token), `token_failed` (a: why), `persisted`
    /// (id: persist id), `persist_failed` (id, a: why).
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &mut self,
        mono: f64,
        wall: f64,
        name: &str,
        id: f64,
        a: String,
        b: &str,
        c: &str,
        d: &str,
    ) -> Result<String, JsValue> {
        let now = Now::new(mono.max(0.0) as u64, wall.max(0.0) as u64);
        let id = id as u64;
        let client = &mut self.client;
        let input = match name {
            "restore" => Input::Restore(Snapshot::from_json(&a).map_err(|e| bad_request(&e.0))?),
            "connect" => {
                client.connect(now);
                return Ok(String::new());
            }
            "disconnect" => {
                client.disconnect(now);
                return Ok(String::new());
            }
            "clear" => {
                client.clear(now);
                return Ok(String::new());
            }
            "set_token" => {
                client.set_token(a);
                return Ok(String::new());
            }
            "subscribe" => {
                return client
                    .subscribe(now, &a)
                    .map(|()| String::new())
                    .map_err(|e| error(&e))
            }
            "unsubscribe" => {
                client.unsubscribe(now, &a);
                return Ok(String::new());
            }
            "cancel" => {
                return client
                    .cancel(now, &a)
                    .map(|()| String::new())
                    .map_err(|e| error(&e))
            }
            "publish" => {
                let data = Payload::from_json(c).map_err(|e| {
                    bad_request(&(String::from("data is not valid JSON: ") + &e.to_string()))
                })?;
                let chosen_id = Some(d).filter(|d| !d.is_empty());
                return client
                    .publish_with_id(now, &a, b, data, chosen_id)
                    .map_err(|e| error(&e));
            }
            "lifecycle" => Input::Lifecycle(match a.as_str() {
                "online" => Lifecycle::Online,
                "offline" => Lifecycle::Offline,
                "suspended" => Lifecycle::Suspended,
                "resumed" => Lifecycle::Resumed,
                _ => return Err(bad_request("unknown lifecycle change")),
            }),
            "opened" => Input::TransportOpened(id),
            "closed" => Input::TransportClosed {
                transport: id,
                reason: a,
            },
            "frame" => match JsonCodec.decode_server(&a) {
                Ok(frame) => Input::Frame {
                    transport: id,
                    frame,
                },
                Err(e) => return Ok(e.0),
            },
            "timeout" => Input::Timeout,
            "token" => Input::Token(Ok(a)),
            "token_failed" => Input::Token(Err(a)),
            "persisted" => Input::Persisted(id),
            "persist_failed" => Input::PersistFailed { id, message: a },
            _ => return Err(bad_request("unknown input")),
        };
        client.handle_input(now, input);
        Ok(String::new())
    }

    /// Drains the outputs: a JSON array ending with `{"op":"wake","at":ms|null}`.
    /// Other entries: `open {transport,url}`, `close {transport,reason}`, `send
    /// {transport,text}`, `token`, `persist {id,kind}`, `events {events}`.
    pub fn poll(&mut self) -> String {
        let mut out = String::from("[");
        loop {
            if out.len() > 1 {
                out.push(',');
            }
            let mut obj = ObjectWriter::new(&mut out);
            match self.client.poll_output() {
                Output::OpenTransport { transport, url } => {
                    obj.str("op", "open")
                        .u64("transport", transport)
                        .str("url", &url);
                }
                Output::CloseTransport { transport, reason } => {
                    obj.str("op", "close")
                        .u64("transport", transport)
                        .str("reason", &reason);
                }
                Output::Transmit { transport, frame } => {
                    obj.str("op", "send")
                        .u64("transport", transport)
                        .str("text", &frame.to_json());
                }
                Output::FetchToken => {
                    obj.str("op", "token");
                }
                Output::Persist(op) => {
                    obj.str("op", "persist").u64("id", op.id);
                    op.kind.write_json(obj.key("kind"));
                }
                Output::Events(events) => {
                    obj.str("op", "events");
                    events.write_json(obj.key("events"));
                }
                Output::Wake(at) => {
                    obj.str("op", "wake");
                    match at {
                        Some(ms) => obj.u64("at", ms),
                        None => obj.raw("at", "null"),
                    };
                    obj.end();
                    break;
                }
            }
            obj.end();
        }
        out.push(']');
        out
    }

    /// Reads state as JSON: `outbox` (pending messages with their status), `stats`,
    /// `state` (`{state, ...}`), `subscription` (arg: channel; `null` when not
    /// subscribed), `positions` (`{channel: {epoch, offset}}`), `namespace` (the storage
    /// namespace `tidings|<url>|<user>`, as plain text).
    pub fn read(&self, what: &str, arg: &str) -> String {
        let client = &self.client;
        match what {
            "outbox" => client.outbox().to_json(),
            "stats" => client.stats().to_json(),
            "state" => client.state().to_json(),
            "subscription" => client
                .subscription_state(arg)
                .map_or_else(|| "null".into(), ToJson::to_json),
            "positions" => {
                let mut out = String::new();
                let mut obj = ObjectWriter::new(&mut out);
                for (channel, position) in client.positions() {
                    position.write_json(obj.key(channel));
                }
                obj.end();
                out
            }
            "namespace" => client.options().storage_namespace(),
            _ => "null".into(),
        }
    }
}
