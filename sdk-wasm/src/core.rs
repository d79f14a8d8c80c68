//! The sans-IO core as a JavaScript object: inputs go in as method calls, outputs come
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

fn now(mono: f64, wall: f64) -> Now {
    Now::new(mono.max(0.0) as u64, wall.max(0.0) as u64)
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

    /// Where this client's data is filed: `tidings|<url>|<user>`.
    pub fn namespace(&self) -> String {
        self.client.options().storage_namespace()
    }

    /// Feeds the stored snapshot (JSON, see `Snapshot`), once, before `connect`.
    pub fn restore(&mut self, mono: f64, wall: f64, snapshot: &str) -> Result<(), JsValue> {
        let snapshot = Snapshot::from_json(snapshot).map_err(|e| bad_request(&e.0))?;
        self.client
            .handle_input(now(mono, wall), Input::Restore(snapshot));
        Ok(())
    }

    /// Starts connecting (and keeps reconnecting).
    pub fn connect(&mut self, mono: f64, wall: f64) {
        self.client.connect(now(mono, wall));
    }

    /// Disconnects and stops reconnecting; the outbox is kept.
    pub fn disconnect(&mut self, mono: f64, wall: f64) {
        self.client.disconnect(now(mono, wall));
    }

    /// Logout: disconnects and forgets subscriptions, positions and the outbox.
    pub fn clear(&mut self, mono: f64, wall: f64) {
        self.client.clear(now(mono, wall));
    }

    /// Replaces the token used for the next connect or refresh.
    #[wasm_bindgen(js_name = setToken)]
    pub fn set_token(&mut self, token: String) {
        self.client.set_token(token);
    }

    /// Subscribes to a channel or pattern. Throws for an invalid name or too many channels.
    pub fn subscribe(&mut self, mono: f64, wall: f64, channel: &str) -> Result<(), JsValue> {
        self.client
            .subscribe(now(mono, wall), channel)
            .map_err(|e| error(&e))
    }

    /// Unsubscribes and forgets the channel's position.
    pub fn unsubscribe(&mut self, mono: f64, wall: f64, channel: &str) {
        self.client.unsubscribe(now(mono, wall), channel);
    }

    /// Queues a publish (`data`: JSON text) and returns its message id.
    pub fn publish(
        &mut self,
        mono: f64,
        wall: f64,
        channel: &str,
        event: &str,
        data: &str,
    ) -> Result<String, JsValue> {
        let data = Payload::from_json(data).map_err(|e| {
            bad_request(&(String::from("data is not valid JSON: ") + &e.to_string()))
        })?;
        self.client
            .publish(now(mono, wall), channel, event, data)
            .map_err(|e| error(&e))
    }

    /// Cancels a message that was not sent yet.
    pub fn cancel(&mut self, mono: f64, wall: f64, msg_id: &str) -> Result<(), JsValue> {
        self.client
            .cancel(now(mono, wall), msg_id)
            .map_err(|e| error(&e))
    }

    /// The transport asked for by an `open` output is open.
    pub fn opened(&mut self, mono: f64, wall: f64, transport: f64) {
        self.input(mono, wall, Input::TransportOpened(transport as u64));
    }

    /// A text frame arrived. Frames that do not decode are ignored (and reported back).
    pub fn frame(&mut self, mono: f64, wall: f64, transport: f64, text: &str) -> Option<String> {
        match JsonCodec.decode_server(text) {
            Ok(frame) => {
                let transport = transport as u64;
                self.input(mono, wall, Input::Frame { transport, frame });
                None
            }
            Err(e) => Some(e.0),
        }
    }

    /// The transport closed or could not be opened.
    pub fn closed(&mut self, mono: f64, wall: f64, transport: f64, reason: String) {
        let transport = transport as u64;
        self.input(mono, wall, Input::TransportClosed { transport, reason });
    }

    /// The wake-up time of the last `wake` output has come.
    pub fn timeout(&mut self, mono: f64, wall: f64) {
        self.input(mono, wall, Input::Timeout);
    }

    /// `online`, `offline`, `suspended` or `resumed`.
    pub fn lifecycle(&mut self, mono: f64, wall: f64, change: &str) -> Result<(), JsValue> {
        let change = match change {
            "online" => Lifecycle::Online,
            "offline" => Lifecycle::Offline,
            "suspended" => Lifecycle::Suspended,
            "resumed" => Lifecycle::Resumed,
            _ => return Err(bad_request("unknown lifecycle change")),
        };
        self.input(mono, wall, Input::Lifecycle(change));
        Ok(())
    }

    /// Answer to a `token` output: the token, or (when `ok` is false) why there is none.
    pub fn token(&mut self, mono: f64, wall: f64, ok: bool, value: String) {
        let result = if ok { Ok(value) } else { Err(value) };
        self.input(mono, wall, Input::Token(result));
    }

    /// A `persist` output is durable.
    pub fn persisted(&mut self, mono: f64, wall: f64, id: f64) {
        self.input(mono, wall, Input::Persisted(id as u64));
    }

    /// A `persist` output failed: the core carries on in memory and warns the app.
    #[wasm_bindgen(js_name = persistFailed)]
    pub fn persist_failed(&mut self, mono: f64, wall: f64, id: f64, message: String) {
        let id = id as u64;
        self.input(mono, wall, Input::PersistFailed { id, message });
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

    /// The outbox: JSON array of pending messages with their status.
    pub fn outbox(&self) -> String {
        self.client.outbox().to_json()
    }

    /// Counters and gauges (JSON).
    pub fn stats(&self) -> String {
        self.client.stats().to_json()
    }

    /// The connection state (JSON `{state, ...}`).
    pub fn state(&self) -> String {
        self.client.state().to_json()
    }

    /// A channel's subscription state (JSON), or `null` when not subscribed.
    #[wasm_bindgen(js_name = subscriptionState)]
    pub fn subscription_state(&self, channel: &str) -> String {
        match self.client.subscription_state(channel) {
            Some(state) => state.to_json(),
            None => "null".into(),
        }
    }

    /// Last positions per channel (JSON `{channel: {epoch, offset}}`).
    pub fn positions(&self) -> String {
        let mut out = String::new();
        let mut obj = ObjectWriter::new(&mut out);
        for (channel, position) in self.client.positions() {
            position.write_json(obj.key(channel));
        }
        obj.end();
        out
    }
}

impl Core {
    fn input(&mut self, mono: f64, wall: f64, input: Input) {
        self.client.handle_input(now(mono, wall), input);
    }
}
