//! The browser driver: the native tokio driver's twin on `web_sys::WebSocket`,
//! `setTimeout`, IndexedDB and `requestAnimationFrame`.
//!
//! The loop is the same: every input (an app call, a socket callback, a timer, a store
//! confirmation, a token) borrows the state, feeds exactly one input to the core, drains
//! `poll_output()` until `Wake`, and releases the borrow. Nothing calls app code while the
//! state is borrowed: event batches are queued and handed to JavaScript from a separate
//! animation-frame (or timer) callback, and token providers are called from a microtask,
//! so a listener may call back into the client without "recursive use of an object".

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use js_sys::{Function, Object, Promise, Reflect};
use tidings::collections::SortedMap;
use tidings::protocol::{ClientFrame, Codec, JsonCodec, ServerFrame};
use tidings::{
    Client, ClientError, ConnectionState, Event, Input, Lifecycle, MessageStatus, Options, Output,
    Payload, PersistOp, StreamPosition, SubscriptionState, TransportId,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::js::{self, bad_request, from_json, js_error, to_json, TimeoutHandle};
use crate::store::Store;

type Deferred = (Function, Function);

fn deferred() -> (Promise, Deferred) {
    let mut slot = None;
    let promise = Promise::new(&mut |resolve, reject| slot = Some((resolve, reject)));
    let pair = slot.expect("the Promise executor runs synchronously");
    (promise, pair)
}

fn settle(pair: Deferred, outcome: Result<JsValue, JsValue>) {
    let _ = match outcome {
        Ok(value) => pair.0.call1(&JsValue::UNDEFINED, &value),
        Err(error) => pair.1.call1(&JsValue::UNDEFINED, &error),
    };
}

fn rejected(error: JsValue) -> Promise {
    Promise::reject(&error)
}

/// How event batches reach JavaScript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlushMode {
    /// Once per animation frame (a 16 ms timer when frames do not run).
    Frame,
    /// In a microtask after the input that produced them (tests, workers that want it).
    Microtask,
}

/// One open (or opening) WebSocket and its handlers. Handlers are detached when it is
/// retired; the closures are dropped later, never from inside themselves.
struct Socket {
    id: TransportId,
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    fn retire(self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close_with_code_and_reason(1000, "client closed");
        // The closure running right now may belong to this socket: drop it later.
        wasm_bindgen_futures::spawn_local(async move {
            drop(self);
        });
    }
}

/// Promises waiting for events, keyed by channel or message id (a few at a time, so
/// plain vectors: smaller wasm than a hash map).
#[derive(Default)]
struct Waiters {
    connect: Vec<Deferred>,
    subscribe: Vec<(String, Deferred)>,
    acks: Vec<(String, Deferred)>,
    queued: Vec<(String, Deferred)>,
    store_idle: Vec<Deferred>,
}

/// Removes and returns every waiter filed under `key`.
fn take(list: &mut Vec<(String, Deferred)>, key: &str) -> Vec<Deferred> {
    let mut taken = Vec::new();
    let mut i = 0;
    while i < list.len() {
        if list[i].0 == key {
            taken.push(list.swap_remove(i).1);
        } else {
            i += 1;
        }
    }
    taken
}

struct State {
    client: Client,
    closed: bool,
    socket: Option<Socket>,
    opening: Option<TransportId>,
    on_events: Function,
    token_provider: Option<Function>,
    waiters: Waiters,

    wake_at: Option<u64>,
    wake_timer: Option<TimeoutHandle>,
    wake_cb: Option<Closure<dyn FnMut()>>,

    flush_mode: FlushMode,
    pending_events: Vec<Event>,
    flush_frame: Option<JsValue>,
    flush_timer: Option<TimeoutHandle>,
    flush_microtask: bool,
    flush_cb: Option<Closure<dyn FnMut()>>,

    store: Option<Store>,
    persist_queue: VecDeque<PersistOp>,
    persisting: bool,
    durable: bool,
}

type Shared = Rc<RefCell<State>>;

/// A Tidings client running in this JavaScript context (exported to JS as `WasmClient`;
/// the `tidings` npm package wraps it).
#[wasm_bindgen]
pub struct WasmClient {
    inner: Shared,
    namespace: String,
}

impl std::fmt::Debug for WasmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmClient")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl WasmClient {
    /// Creates a client: opens the IndexedDB store for `Options::storage_namespace()`,
    /// restores the outbox and positions, and resolves once ready (not connected yet).
    ///
    /// `options`: the core's `Options` as JSON text, snake_case (any subset). `on_events`:
    /// called with one JSON text (an array of events) per flush. `config`: `{ getToken?: () =>
    /// Promise<string>, storage?: "indexeddb" | "memory", flush?: "frame" | "microtask",
    /// seed?: number, positions?: string }` (`positions`: JSON `{ channel: { epoch, offset } }`
    /// to resume from when older than the stored positions).
    pub async fn create(
        options: String,
        on_events: Function,
        config: JsValue,
    ) -> Result<WasmClient, JsValue> {
        let mut options: Options =
            from_json(&options).map_err(|e| bad_request(&format!("invalid options: {e}")))?;
        let get = |name: &str| Reflect::get(&config, &name.into()).unwrap_or(JsValue::UNDEFINED);
        let token_provider = get("getToken").dyn_into::<Function>().ok();
        options.token_provider = token_provider.is_some();
        if options.client_name == Options::default().client_name {
            options.client_name = "tidings-js".into();
        }
        let memory = get("storage").as_string().as_deref() == Some("memory");
        let flush_mode = match get("flush").as_string().as_deref() {
            Some("microtask") => FlushMode::Microtask,
            _ => FlushMode::Frame,
        };
        let seed = get("seed")
            .as_f64()
            .map(|s| s as u64)
            .unwrap_or_else(js::random_seed);
        let namespace = options.storage_namespace();

        let (mut store, mut warning) = if memory {
            (Store::memory(&namespace), None)
        } else {
            Store::open(&namespace).await
        };
        let mut snapshot = match store.load().await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                warning = Some(format!(
                    "could not read the offline queue, starting empty: {e}"
                ));
                Default::default()
            }
        };
        // A tab taking over the shared socket resumes from what it last received, when
        // that is older than the stored position: the previous holder may have stored a
        // position whose events it never got to broadcast. Replays are deduped per tab.
        if let Some(floor) = get("positions").as_string() {
            let floor: SortedMap<String, StreamPosition> = from_json(&floor).unwrap_or_default();
            for (channel, seen) in floor {
                match snapshot.positions.get_mut(&channel) {
                    Some(stored) if stored.epoch == seen.epoch && stored.offset > seen.offset => {
                        stored.offset = seen.offset;
                    }
                    Some(_) => {}
                    None => {
                        snapshot.positions.insert(channel, seen);
                    }
                }
            }
        }
        let durable = store.is_durable();
        let inner = Rc::new(RefCell::new(State {
            client: Client::new(options, seed),
            closed: false,
            socket: None,
            opening: None,
            on_events,
            token_provider,
            waiters: Waiters::default(),
            wake_at: None,
            wake_timer: None,
            wake_cb: None,
            flush_mode,
            pending_events: Vec::new(),
            flush_frame: None,
            flush_timer: None,
            flush_microtask: false,
            flush_cb: None,
            store: Some(store),
            persist_queue: VecDeque::new(),
            persisting: false,
            durable,
        }));
        let weak = Rc::downgrade(&inner);
        {
            let mut st = inner.borrow_mut();
            let w = weak.clone();
            st.wake_cb = Some(Closure::new(move || on_wake(&w)));
            let w = weak.clone();
            st.flush_cb = Some(Closure::new(move || flush(&w)));
            if let Some(message) = warning {
                st.pending_events.push(Event::StoreWarning { message });
            }
            let now = js::now();
            st.client.handle_input(now, Input::Restore(snapshot));
            drain(&mut st, &weak);
            st.schedule_flush();
        }
        Ok(WasmClient { inner, namespace })
    }

    /// The storage namespace (`tidings|<url>|<user>`), also used to name the tab channel.
    #[wasm_bindgen(getter)]
    pub fn namespace(&self) -> String {
        self.namespace.clone()
    }

    /// True while the offline queue is written to IndexedDB.
    #[wasm_bindgen(getter)]
    pub fn durable(&self) -> bool {
        self.inner.borrow().durable
    }

    /// Starts connecting; resolves once connected, rejects once failed or disconnected.
    pub fn connect(&self) -> Promise {
        self.with(|st| {
            let now = js::now();
            st.client.connect(now);
            if *st.client.state() == ConnectionState::Connected {
                return Promise::resolve(&JsValue::UNDEFINED);
            }
            let (promise, pair) = deferred();
            st.waiters.connect.push(pair);
            promise
        })
    }

    /// Closes the connection; subscriptions and the outbox are kept for the next connect.
    pub fn disconnect(&self) {
        self.with(|st| st.client.disconnect(js::now()));
    }

    /// Logs out: disconnects, fails queued messages with `cancelled`, forgets
    /// subscriptions and positions, and wipes this namespace from IndexedDB. Resolves
    /// once the store is wiped.
    pub fn clear(&self) -> Promise {
        self.with(|st| {
            st.client.clear(js::now());
            let (promise, pair) = deferred();
            st.waiters.store_idle.push(pair);
            promise
        })
    }

    /// Resolves once every store write asked for so far is done.
    #[wasm_bindgen(js_name = whenStored)]
    pub fn when_stored(&self) -> Promise {
        self.with(|st| {
            if !st.persisting && st.persist_queue.is_empty() {
                return Promise::resolve(&JsValue::UNDEFINED);
            }
            let (promise, pair) = deferred();
            st.waiters.store_idle.push(pair);
            promise
        })
    }

    /// Closes the IndexedDB connection under the client (tests of the fallback only).
    #[doc(hidden)]
    #[wasm_bindgen(js_name = __closeStoreForTests)]
    pub fn close_store_for_tests(&self) {
        if let Some(store) = self.inner.borrow().store.as_ref() {
            store.close_connection_for_tests();
        }
    }

    /// Subscribes; resolves once the server confirmed (works offline: waits).
    pub fn subscribe(&self, channel: &str) -> Promise {
        self.with(|st| match st.client.subscribe(js::now(), channel) {
            Err(e) => rejected(js_error(&e)),
            Ok(()) => match st.client.subscription_state(channel) {
                Some(SubscriptionState::Subscribed) => Promise::resolve(&JsValue::UNDEFINED),
                _ => {
                    let (promise, pair) = deferred();
                    st.waiters.subscribe.push((channel.to_owned(), pair));
                    promise
                }
            },
        })
    }

    /// Unsubscribes and forgets the channel's position.
    pub fn unsubscribe(&self, channel: &str) {
        self.with(|st| st.client.unsubscribe(js::now(), channel));
    }

    /// Queues a publish (`data` as JSON text). Returns `{ msgId, queued, acked }`: `queued` resolves once the
    /// message is durable (with its id), `acked` once the server stored it
    /// (`{ msgId, epoch, offset }`). Throws a `TidingsError` for invalid input.
    pub fn publish(&self, channel: &str, event: &str, data: &str) -> Result<Object, JsValue> {
        let data = from_json::<serde_json::Value>(data)
            .map(Payload::from)
            .map_err(|e| bad_request(&format!("data is not valid JSON: {e}")))?;
        self.with(|st| {
            let msg_id = st
                .client
                .publish(js::now(), channel, event, data)
                .map_err(|e| js_error(&e))?;
            let (queued, queued_pair) = deferred();
            let (acked, acked_pair) = deferred();
            st.waiters.queued.push((msg_id.clone(), queued_pair));
            st.waiters.acks.push((msg_id.clone(), acked_pair));
            let result = Object::new();
            let _ = Reflect::set(&result, &"msgId".into(), &msg_id.as_str().into());
            let _ = Reflect::set(&result, &"queued".into(), &queued);
            let _ = Reflect::set(&result, &"acked".into(), &acked);
            Ok(result)
        })
    }

    /// Cancels a message not sent yet (`unknown_message`, `not_cancellable`).
    pub fn cancel(&self, msg_id: &str) -> Result<(), JsValue> {
        self.with(|st| {
            st.client
                .cancel(js::now(), msg_id)
                .map_err(|e| js_error(&e))
        })
    }

    /// The outbox: messages not yet acked or failed, oldest first, with their status.
    pub fn outbox(&self) -> String {
        to_json(&self.inner.borrow().client.outbox())
    }

    /// Counters and gauges.
    pub fn stats(&self) -> String {
        to_json(&self.inner.borrow().client.stats())
    }

    /// The connection state (`{ state, ... }`).
    pub fn state(&self) -> String {
        to_json(self.inner.borrow().client.state())
    }

    /// A subscription's state (`{ state, ... }`) or `null`.
    #[wasm_bindgen(js_name = subscriptionState)]
    pub fn subscription_state(&self, channel: &str) -> String {
        to_json(&self.inner.borrow().client.subscription_state(channel))
    }

    /// Last positions per channel (`{ [channel]: { epoch, offset } }`).
    pub fn positions(&self) -> String {
        to_json(self.inner.borrow().client.positions())
    }

    /// Reports a lifecycle change: `online`, `offline`, `suspended`, `resumed`.
    pub fn lifecycle(&self, change: &str) -> Result<(), JsValue> {
        let change = match change {
            "online" => Lifecycle::Online,
            "offline" => Lifecycle::Offline,
            "suspended" => Lifecycle::Suspended,
            "resumed" => Lifecycle::Resumed,
            other => return Err(bad_request(&format!("unknown lifecycle change {other:?}"))),
        };
        self.with(|st| st.client.handle_input(js::now(), Input::Lifecycle(change)));
        Ok(())
    }

    /// Replaces the token (sent with `refresh` on a live connection).
    #[wasm_bindgen(js_name = setToken)]
    pub fn set_token(&self, token: String) {
        self.with(|st| st.client.set_token(token));
    }

    /// Stops the client: closes the socket, cancels timers, rejects pending promises with
    /// `closed` and flushes the last events. Store writes already asked for still finish.
    pub fn close(&self) {
        let weak = Rc::downgrade(&self.inner);
        let mut st = self.inner.borrow_mut();
        if st.closed {
            return;
        }
        st.client.disconnect(js::now());
        drain(&mut st, &weak);
        st.closed = true;
        if let Some(socket) = st.socket.take() {
            socket.retire();
        }
        st.wake_timer = None;
        st.wake_at = None;
        let waiters = std::mem::take(&mut st.waiters);
        let closed = js_error(&ClientError::Closed);
        for pair in waiters.connect {
            settle(pair, Err(closed.clone()));
        }
        for (_, pair) in waiters
            .subscribe
            .into_iter()
            .chain(waiters.acks)
            .chain(waiters.queued)
        {
            settle(pair, Err(closed.clone()));
        }
        for pair in waiters.store_idle {
            settle(pair, Ok(JsValue::UNDEFINED));
        }
        // Hand over the last events now: the page may be going away (pagehide) and a
        // tab group must broadcast them before the next tab takes over.
        drop(st);
        flush(&weak);
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let weak = Rc::downgrade(&self.inner);
        let mut st = self.inner.borrow_mut();
        let result = f(&mut st);
        drain(&mut st, &weak);
        result
    }
}

impl State {
    fn input(&mut self, input: Input) {
        self.client.handle_input(js::now(), input);
    }

    fn schedule_flush(&mut self) {
        if self.pending_events.is_empty()
            || self.flush_timer.is_some()
            || self.flush_frame.is_some()
            || self.flush_microtask
        {
            return;
        }
        let Some(cb) = self.flush_cb.as_ref() else {
            return;
        };
        let handler: &Function = cb.as_ref().unchecked_ref();
        match self.flush_mode {
            FlushMode::Microtask => {
                // A zero-delay timer keeps it out of the current call stack.
                self.flush_timer = Some(TimeoutHandle::start(handler, 0));
            }
            FlushMode::Frame => {
                if js::frames_available() {
                    self.flush_frame = js::request_frame(handler);
                    // Frames stop when the tab gets hidden: a timer makes sure it leaves.
                    self.flush_timer = Some(TimeoutHandle::start(handler, 100));
                } else if js::is_hidden_document() {
                    // A hidden tab paints nothing, and its timers wait up to a second; what
                    // it holds may be the shared socket's events for the other tabs. Hand
                    // them over in a microtask, once the current task (and borrow) is done.
                    self.flush_microtask = true;
                    let handler = handler.clone();
                    wasm_bindgen_futures::spawn_local(async move {
                        let _ = handler.call0(&JsValue::UNDEFINED);
                    });
                } else {
                    // Workers: no frames, and timers are not throttled.
                    self.flush_timer = Some(TimeoutHandle::start(handler, 16));
                }
            }
        }
    }

    fn resolve_waiters(&mut self, batch: &[Event]) {
        for event in batch {
            match event {
                Event::State { new, .. } => {
                    let outcome = match new {
                        ConnectionState::Connected => Some(Ok(JsValue::UNDEFINED)),
                        ConnectionState::Failed { code, message } => Some(Err(js::make_error(
                            code,
                            &format!("connection failed ({code}): {message}"),
                            false,
                            None,
                        ))),
                        ConnectionState::Disconnected => Some(Err(js_error(&ClientError::Closed))),
                        _ => None,
                    };
                    if let Some(outcome) = outcome {
                        for pair in self.waiters.connect.drain(..) {
                            settle(pair, outcome.clone());
                        }
                    }
                }
                Event::Subscription { channel, state } => {
                    let outcome = match state {
                        SubscriptionState::Subscribed => Some(Ok(JsValue::UNDEFINED)),
                        SubscriptionState::Failed { error } => Some(Err(js_error(error))),
                        SubscriptionState::Unsubscribed => {
                            Some(Err(js_error(&ClientError::Cancelled)))
                        }
                        SubscriptionState::Subscribing => None,
                    };
                    if let Some(outcome) = outcome {
                        for pair in take(&mut self.waiters.subscribe, channel) {
                            settle(pair, outcome.clone());
                        }
                    }
                }
                Event::Message { msg_id, status, .. } => {
                    if !matches!(status, MessageStatus::Persisting) {
                        for pair in take(&mut self.waiters.queued, msg_id) {
                            settle(
                                pair,
                                match status {
                                    MessageStatus::Failed { error } => Err(js_error(error)),
                                    _ => Ok(msg_id.as_str().into()),
                                },
                            );
                        }
                    }
                    let outcome = match status {
                        MessageStatus::Acked { epoch, offset } => {
                            let ack = Object::new();
                            let _ = Reflect::set(&ack, &"msgId".into(), &msg_id.as_str().into());
                            let _ = Reflect::set(&ack, &"epoch".into(), &epoch.as_str().into());
                            let _ = Reflect::set(&ack, &"offset".into(), &(*offset as f64).into());
                            Some(Ok(ack.into()))
                        }
                        MessageStatus::Failed { error } => Some(Err(js_error(error))),
                        _ => None,
                    };
                    if let Some(outcome) = outcome {
                        for pair in take(&mut self.waiters.acks, msg_id) {
                            settle(pair, outcome.clone());
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Performs every output until the core has nothing more to do.
fn drain(st: &mut State, weak: &Weak<RefCell<State>>) {
    loop {
        match st.client.poll_output() {
            Output::OpenTransport { transport, url } => {
                st.opening = Some(transport);
                if let Some(old) = st.socket.take() {
                    old.retire();
                }
                match open_socket(transport, &url, weak) {
                    Ok(socket) => st.socket = Some(socket),
                    Err(reason) => {
                        st.opening = None;
                        st.input(Input::TransportClosed { transport, reason });
                    }
                }
            }
            Output::CloseTransport { transport, .. } => {
                if st.opening == Some(transport) {
                    st.opening = None;
                }
                if st.socket.as_ref().is_some_and(|s| s.id == transport) {
                    if let Some(socket) = st.socket.take() {
                        socket.retire();
                    }
                }
            }
            Output::Transmit { transport, frame } => {
                let Some(socket) = st.socket.as_ref() else {
                    continue;
                };
                if socket.id != transport {
                    continue;
                }
                let text = match encode(&frame) {
                    Ok(text) => text,
                    Err(e) => {
                        log::error!("could not encode a frame: {e}");
                        continue;
                    }
                };
                if let Err(e) = socket.ws.send_with_str(&text) {
                    let reason = format!("send failed: {e:?}");
                    if let Some(socket) = st.socket.take() {
                        socket.retire();
                    }
                    st.input(Input::TransportClosed { transport, reason });
                }
            }
            Output::FetchToken => match st.token_provider.clone() {
                Some(provider) => {
                    let weak = weak.clone();
                    wasm_bindgen_futures::spawn_local(async move {
                        let result = fetch_token(&provider).await;
                        with_state(&weak, |st| st.input(Input::Token(result)));
                    });
                }
                None => st.input(Input::Token(Err("no token provider".into()))),
            },
            Output::Persist(op) => {
                st.persist_queue.push_back(op);
                if !st.persisting {
                    st.persisting = true;
                    let weak = weak.clone();
                    wasm_bindgen_futures::spawn_local(run_store(weak));
                }
            }
            Output::Events(batch) => {
                st.resolve_waiters(&batch);
                st.pending_events.extend(batch);
            }
            Output::Wake(at) => {
                if st.closed {
                    return;
                }
                if at != st.wake_at || (at.is_some() && st.wake_timer.is_none()) {
                    st.wake_timer = None;
                    st.wake_at = at;
                    if let (Some(at), Some(cb)) = (at, st.wake_cb.as_ref()) {
                        let delay = at.saturating_sub(js::now().mono_ms);
                        st.wake_timer =
                            Some(TimeoutHandle::start(cb.as_ref().unchecked_ref(), delay));
                    }
                }
                st.schedule_flush();
                return;
            }
        }
    }
}

/// Runs `f` on the state (if the client still exists), then drains.
fn with_state(weak: &Weak<RefCell<State>>, f: impl FnOnce(&mut State)) {
    let Some(inner) = weak.upgrade() else {
        return;
    };
    let mut st = inner.borrow_mut();
    if st.closed {
        return;
    }
    f(&mut st);
    drain(&mut st, weak);
}

fn on_wake(weak: &Weak<RefCell<State>>) {
    with_state(weak, |st| {
        st.wake_timer = None;
        st.wake_at = None;
        st.input(Input::Timeout);
    });
}

/// Hands the queued events to JavaScript as one array, outside any borrow.
fn flush(weak: &Weak<RefCell<State>>) {
    let Some(inner) = weak.upgrade() else {
        return;
    };
    let (events, callback) = {
        let mut st = inner.borrow_mut();
        if let Some(frame) = st.flush_frame.take() {
            js::cancel_frame(&frame);
        }
        // The timer may be the one running now; clearing a fired timeout is harmless.
        st.flush_timer = None;
        st.flush_microtask = false;
        if st.pending_events.is_empty() {
            return;
        }
        (std::mem::take(&mut st.pending_events), st.on_events.clone())
    };
    drop(inner);
    let batch = JsValue::from(to_json(&events));
    if let Err(e) = callback.call1(&JsValue::UNDEFINED, &batch) {
        js::console_error("tidings: an event listener threw", &e);
    }
}

async fn fetch_token(provider: &Function) -> Result<String, String> {
    let value = provider
        .call0(&JsValue::UNDEFINED)
        .map_err(|e| describe_js(&e))?;
    let value = wasm_bindgen_futures::JsFuture::from(Promise::resolve(&value))
        .await
        .map_err(|e| describe_js(&e))?;
    value
        .as_string()
        .ok_or_else(|| "the token provider must return a string".into())
}

fn describe_js(value: &JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

/// Applies store writes one at a time, in order, feeding each confirmation to the core.
/// Holds the state (never borrowed across an `await`) until the queue is empty.
async fn run_store(weak: Weak<RefCell<State>>) {
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let next = {
            let mut st = inner.borrow_mut();
            match (st.persist_queue.pop_front(), st.store.take()) {
                (Some(op), Some(store)) => Some((op, store)),
                (op, store) => {
                    st.store = store;
                    if let Some(op) = op {
                        st.persist_queue.push_front(op);
                    }
                    st.persisting = false;
                    let idle = std::mem::take(&mut st.waiters.store_idle);
                    for pair in idle {
                        settle(pair, Ok(JsValue::UNDEFINED));
                    }
                    None
                }
            }
        };
        let Some((op, mut store)) = next else {
            return;
        };
        // `inner` (not borrowed) stays alive across the write: writes asked for before the
        // client was closed and dropped by JavaScript still reach IndexedDB.
        let result = store.apply(&op.kind).await;
        let mut st = inner.borrow_mut();
        st.durable = store.is_durable();
        st.store = Some(store);
        let input = match result {
            Ok(()) => Input::Persisted(op.id),
            Err(message) => Input::PersistFailed { id: op.id, message },
        };
        // Even a closed client confirms writes (it opens nothing and sends nothing).
        st.input(input);
        drain(&mut st, &weak);
    }
}

fn encode(frame: &ClientFrame) -> Result<String, String> {
    JsonCodec.encode_client(frame).map_err(|e| e.to_string())
}

fn decode(text: &str) -> Result<ServerFrame, String> {
    crate::codec::decode_server(text)
}

fn open_socket(
    transport: TransportId,
    url: &str,
    weak: &Weak<RefCell<State>>,
) -> Result<Socket, String> {
    let ws = WebSocket::new(url).map_err(|e| describe_js(&e))?;
    let w = weak.clone();
    let on_open = Closure::<dyn FnMut()>::new(move || {
        with_state(&w, |st| {
            if st.opening == Some(transport) {
                st.opening = None;
                st.input(Input::TransportOpened(transport));
            }
        });
    });
    let w = weak.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let Some(text) = event.data().as_string() else {
            return;
        };
        match decode(&text) {
            Ok(frame) => with_state(&w, |st| st.input(Input::Frame { transport, frame })),
            Err(e) => log::warn!("undecodable frame ignored: {e}"),
        }
    });
    let w = weak.clone();
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
        with_state(&w, |st| {
            if st.socket.as_ref().is_some_and(|s| s.id == transport) {
                if let Some(socket) = st.socket.take() {
                    socket.retire();
                }
            }
            if st.opening == Some(transport) {
                st.opening = None;
            }
            let reason = format!("closed ({}) {}", event.code(), event.reason());
            st.input(Input::TransportClosed { transport, reason });
        });
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    Ok(Socket {
        id: transport,
        ws,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    })
}
