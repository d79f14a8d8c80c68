//! The objects Kotlin and Swift use: [`TidingsClient`], [`Channel`], [`ListenerHandle`],
//! and the foreign traits [`ClientListener`], [`ChannelListener`], [`TokenProvider`].

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tidings::native::{self, BoxFuture, Store, TlsOptions};
use tidings::{Event, Lifecycle, Options, PersistKind, Snapshot, SubscriptionState};
use tokio::runtime::Runtime;

use crate::error::TidingsError;
use crate::store::SqliteStore;
use crate::types::{
    Ack, ClientConfig, ConnectionState, MessageStatus, PendingMessage, Publication, Stats,
};

// ------------------------------------------------------------------ the shared runtime

/// One multi-thread tokio runtime (2 workers, named `tidings-rt`) for every client of
/// the process, created on first use. Async calls from Kotlin/Swift run their work here;
/// the foreign side only awaits the result.
fn runtime() -> Result<&'static Runtime, TidingsError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("tidings-rt")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| TidingsError::Connection {
            code: "runtime".into(),
            detail: format!("could not start the tokio runtime: {e}"),
        })
}

/// Runs `work` on the shared runtime and waits for it from whatever executor polls us
/// (Kotlin coroutines, Swift tasks, or another tokio runtime in tests). Dropping the
/// returned future (a cancelled coroutine) does not stop `work`: it finishes in the
/// background, so a publish that was handed over is never half done.
async fn on_runtime<T, F>(work: F) -> Result<T, TidingsError>
where
    F: Future<Output = Result<T, TidingsError>> + Send + 'static,
    T: Send + 'static,
{
    runtime()?
        .spawn(work)
        .await
        .map_err(|e| TidingsError::Connection {
            code: "closed".into(),
            detail: format!("the call did not complete: {e}"),
        })?
}

// ------------------------------------------------------------------ foreign traits

/// Fetches a fresh token from the app's back end. Called before connecting without a
/// valid token, shortly before the token expires (the new one is sent on the live
/// connection), and once after a `token_expired` error.
///
/// Kotlin: `suspend fun fetchToken(): String`; Swift: `func fetchToken() async throws
/// -> String`. Throwing fails the attempt with code `token_provider` (the client retries
/// with backoff).
#[uniffi::export(with_foreign)]
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync {
    /// A new token (JWT).
    async fn fetch_token(&self) -> Result<String, TidingsError>;
}

/// Connection-wide events. Called on a Tidings worker thread, in order; keep the work
/// short and hop to the main thread for UI.
#[uniffi::export(callback_interface)]
pub trait ClientListener: Send + Sync {
    /// The connection state changed; `reason` is a stable code such as
    /// `connect_called`, `transport_closed`, `heartbeat_timeout`, `liveness_timeout`,
    /// `server_disconnect:shutdown`, `online`, `resumed`.
    fn on_state_changed(&self, old: ConnectionState, new: ConnectionState, reason: String);
    /// An error not tied to a call: a server error frame, a refused subscription, a
    /// token problem, or (`store_warning`) a store that failed while the client keeps
    /// working in memory.
    fn on_error(&self, code: String, message: String);
    /// A queued publish changed status (for an outbox UI: queued → sent → acked).
    fn on_message_status(&self, msg_id: String, channel: String, status: MessageStatus);
}

/// Events of one channel (or pattern). Called on a Tidings worker thread, in order.
#[uniffi::export(callback_interface)]
pub trait ChannelListener: Send + Sync {
    /// Publications, in order, exactly once per `(channel, offset)`; several arrive
    /// together when they were received or recovered together.
    fn on_publications(&self, batch: Vec<Publication>);
    /// The subscription became live. `recovered`: everything missed since the last
    /// position was replayed. `needs_reload`: a position existed but could not be
    /// recovered — reload the channel's state from your back end.
    fn on_subscribed(&self, recovered: bool, needs_reload: bool);
}

// ------------------------------------------------------------------ listener handles

/// Returned by `add_listener`: delivery goes on until [`ListenerHandle::cancel`] or the
/// client's `close()`. Dropping the handle does not stop it (so a forgotten handle
/// never stops delivery at the whim of a garbage collector).
#[derive(Debug, uniffi::Object)]
pub struct ListenerHandle {
    cancelled: Arc<AtomicBool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[uniffi::export]
impl ListenerHandle {
    /// Stops delivery: no callback starts after this returns.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }

    /// Whether callbacks may still be delivered.
    pub fn is_active(&self) -> bool {
        !self.cancelled.load(Ordering::SeqCst)
            && self
                .task
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|t| !t.is_finished())
    }
}

/// Calls into foreign code from a runtime worker without stalling the runtime, and
/// survives a callback that throws (the panic is caught and logged).
fn deliver(cancelled: &AtomicBool, call: impl FnOnce()) {
    if cancelled.load(Ordering::SeqCst) {
        return;
    }
    tokio::task::block_in_place(|| {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).is_err() {
            log::error!("a Tidings listener callback failed; delivery continues");
        }
    });
}

/// Starts a task feeding every event batch of `client` to `handle_batch`.
fn listen(
    shared: &ClientShared,
    client: &native::TidingsClient,
    mut handle_batch: impl FnMut(&AtomicBool, &[Event]) + Send + 'static,
) -> Result<Arc<ListenerHandle>, TidingsError> {
    let runtime = runtime()?;
    let cancelled = Arc::new(AtomicBool::new(false));
    // Registered now, so nothing that happens after `add_listener` returns is missed.
    let mut events = client.events();
    let flag = cancelled.clone();
    let task = runtime.spawn(async move {
        while let Some(batch) = events.next_batch().await {
            if flag.load(Ordering::SeqCst) {
                break;
            }
            handle_batch(&flag, &batch);
        }
    });
    let handle = Arc::new(ListenerHandle {
        cancelled,
        task: Mutex::new(Some(task)),
    });
    let mut handles = shared.handles.lock().unwrap_or_else(|e| e.into_inner());
    handles.retain(|h| h.strong_count() > 0);
    handles.push(Arc::downgrade(&handle));
    Ok(handle)
}

// ------------------------------------------------------------------ stores

/// One SQLite store per database file in the process, shared by the clients using it.
fn sqlite_store(path: &str) -> Result<Arc<SqliteStore>, TidingsError> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<SqliteStore>>>> = OnceLock::new();
    let key = PathBuf::from(path);
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    open.retain(|_, store| store.strong_count() > 0);
    if let Some(store) = open.get(&key).and_then(Weak::upgrade) {
        return Ok(store);
    }
    let store = Arc::new(SqliteStore::open(&key).map_err(TidingsError::store)?);
    open.insert(key, Arc::downgrade(&store));
    Ok(store)
}

/// [`Store`] over a shared [`SqliteStore`].
struct SharedSqlite(Arc<SqliteStore>);

impl Store for SharedSqlite {
    fn load(&self, namespace: &str) -> BoxFuture<'_, Result<Snapshot, String>> {
        self.0.load(namespace)
    }

    fn apply<'a>(
        &'a self,
        namespace: &'a str,
        kind: &'a PersistKind,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.0.apply(namespace, kind)
    }
}

// ------------------------------------------------------------------ the client

/// What a client and its channels share. When the last of them is freed (Kotlin's
/// `AutoCloseable.close()` or the garbage collector, Swift's deinit), the client stops as
/// with `close()`, without waiting; a channel still in use keeps its client running.
#[derive(Debug)]
struct ClientShared {
    client: native::TidingsClient,
    handles: Mutex<Vec<Weak<ListenerHandle>>>,
}

impl Drop for ClientShared {
    fn drop(&mut self) {
        self.cancel_all();
        if let Ok(runtime) = runtime() {
            let client = self.client.clone();
            runtime.spawn(async move { client.close().await });
        }
    }
}

impl ClientShared {
    fn cancel_all(&self) {
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles.iter().filter_map(Weak::upgrade) {
            handle.cancel();
        }
    }
}

/// A real-time client: one connection, its subscriptions and its durable outbox.
///
/// Create it with a [`ClientConfig`] (and optionally a [`TokenProvider`]), register
/// listeners, `connect()`, then use [`TidingsClient::channel`]. Report app lifecycle
/// changes with `on_background()` / `on_foreground()` / `on_network_changed(online)`.
/// Call `close()` when done: it stops the client's tasks and ends every listener.
#[derive(uniffi::Object)]
pub struct TidingsClient {
    inner: native::TidingsClient,
    shared: Arc<ClientShared>,
}

impl std::fmt::Debug for TidingsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TidingsClient")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn parse_json(what: &str, json: &str) -> Result<serde_json::Value, TidingsError> {
    serde_json::from_str(json).map_err(|e| TidingsError::invalid_json(what, e))
}

#[uniffi::export]
impl TidingsClient {
    /// Builds a client (it does not connect yet). Opens the SQLite database when
    /// `config.database_path` is set and loads the stored outbox and positions.
    #[uniffi::constructor(default(token_provider = None))]
    pub fn new(
        config: ClientConfig,
        token_provider: Option<Arc<dyn TokenProvider>>,
    ) -> Result<Arc<Self>, TidingsError> {
        let mut options = match config.options_json.as_deref() {
            Some(json) => serde_json::from_str::<Options>(json).map_err(|e| {
                TidingsError::InvalidArgument {
                    code: "invalid_config".into(),
                    detail: format!("options_json: {e}"),
                }
            })?,
            None => Options::default(),
        };
        if config.url.is_empty() {
            return Err(TidingsError::InvalidArgument {
                code: "invalid_config".into(),
                detail: "url is required (ws://... or wss://...)".into(),
            });
        }
        options.url = config.url;
        if config.token.is_some() {
            options.token = config.token;
        }
        if config.user.is_some() {
            options.user = config.user;
        }
        if options.client_name == Options::default().client_name {
            options.client_name = "tidings-mobile".into();
        }
        let mut builder = native::TidingsClient::builder(String::new()).options(options);
        if let Some(path) = config.database_path.as_deref() {
            builder = builder.store(SharedSqlite(sqlite_store(path)?));
        }
        if let Some(pem) = config.ca_pem {
            // Without a certificate block the PEM would be silently ignored.
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(TidingsError::InvalidArgument {
                    code: "invalid_config".into(),
                    detail: "ca_pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
                });
            }
            builder = builder.tls(TlsOptions::default().with_ca_pem(pem));
        }
        if let Some(provider) = token_provider {
            builder = builder.token_provider(move || {
                let provider = provider.clone();
                async move { provider.fetch_token().await.map_err(|e| e.to_string()) }
            });
        }
        let runtime = runtime()?;
        let inner = {
            let _enter = runtime.enter();
            builder.build()
        };
        Ok(Arc::new(Self {
            shared: Arc::new(ClientShared {
                client: inner.clone(),
                handles: Mutex::default(),
            }),
            inner,
        }))
    }

    /// Connects; returns once connected, or throws once the client failed
    /// (`unauthorized`, `connection_failed` after giving up, `closed`). While the server
    /// is unreachable it keeps retrying and waiting; wrap it in a timeout if needed.
    pub async fn connect(&self) -> Result<(), TidingsError> {
        let inner = self.inner.clone();
        on_runtime(async move { Ok(inner.connect().await?) }).await
    }

    /// Closes the connection; subscriptions and the outbox are kept for the next connect.
    pub async fn disconnect(&self) -> Result<(), TidingsError> {
        let inner = self.inner.clone();
        on_runtime(async move { Ok(inner.disconnect().await?) }).await
    }

    /// Logout: disconnects and wipes this user's outbox and positions from the store.
    pub async fn clear(&self) -> Result<(), TidingsError> {
        let inner = self.inner.clone();
        on_runtime(async move { Ok(inner.clear().await?) }).await
    }

    /// Stops the client for good: closes the socket, ends every listener and its task.
    /// Outstanding calls fail with `closed`. Call it when the client is no longer needed
    /// (foreign futures cannot cancel Rust work, so nothing else stops it).
    pub async fn close(&self) {
        let inner = self.inner.clone();
        let _ = on_runtime(async move {
            inner.close().await;
            Ok(())
        })
        .await;
        self.shared.cancel_all();
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.inner.state().into()
    }

    /// A handle on a channel, or a pattern such as `specs:E13-*`.
    pub fn channel(&self, name: String) -> Arc<Channel> {
        Arc::new(Channel {
            inner: self.inner.channel(name),
            client: self.inner.clone(),
            shared: self.shared.clone(),
        })
    }

    /// Publishes and returns once the server acked it (the message is durable in the
    /// outbox first, so it is retried across reconnects and app restarts).
    /// `data` is JSON text.
    pub async fn publish(
        &self,
        channel: String,
        event: String,
        data: String,
    ) -> Result<Ack, TidingsError> {
        let value = parse_json("data", &data)?;
        let inner = self.inner.clone();
        on_runtime(async move { Ok(inner.publish(&channel, &event, &value).await?.into()) }).await
    }

    /// Queues a message and returns its id once it is durable in the store; it is sent
    /// as soon as possible and retried until acked (the server dedupes by this id).
    pub async fn publish_queued(
        &self,
        channel: String,
        event: String,
        data: String,
    ) -> Result<String, TidingsError> {
        let value = parse_json("data", &data)?;
        let inner = self.inner.clone();
        on_runtime(async move { Ok(inner.publish_queued(&channel, &event, &value).await?) }).await
    }

    /// Messages not yet acked, oldest first, with their status.
    pub async fn outbox(&self) -> Result<Vec<PendingMessage>, TidingsError> {
        let inner = self.inner.clone();
        on_runtime(async move {
            Ok(inner
                .outbox()
                .await?
                .iter()
                .map(PendingMessage::from)
                .collect())
        })
        .await
    }

    /// Cancels a queued message that was not sent yet (`not_cancellable` once sent).
    pub async fn cancel(&self, msg_id: String) -> Result<(), TidingsError> {
        let inner = self.inner.clone();
        on_runtime(async move { Ok(inner.cancel(&msg_id).await?) }).await
    }

    /// Counters and gauges.
    pub async fn stats(&self) -> Result<Stats, TidingsError> {
        let inner = self.inner.clone();
        on_runtime(async move { Ok(inner.stats().await?.into()) }).await
    }

    /// Replaces the token (sent with `refresh` on a live connection).
    pub fn set_token(&self, token: String) {
        self.inner.set_token(token);
    }

    /// The app went to the background (Android `ON_STOP`, iOS
    /// `didEnterBackground`): timers may stop.
    pub fn on_background(&self) {
        self.inner.lifecycle(Lifecycle::Suspended);
    }

    /// The app came to the foreground: a live connection is checked at once with a
    /// liveness ping (answered within 3 s, else it reconnects); a lost one reconnects
    /// at once with a fresh backoff and recovers missed messages.
    pub fn on_foreground(&self) {
        self.inner.lifecycle(Lifecycle::Resumed);
    }

    /// The network changed (Android `ConnectivityManager` callback, iOS
    /// `NWPathMonitor`). Offline: the client stops retrying and waits; online: it
    /// checks or reconnects at once.
    pub fn on_network_changed(&self, online: bool) {
        self.inner.lifecycle(if online {
            Lifecycle::Online
        } else {
            Lifecycle::Offline
        });
    }

    /// Registers a listener for state changes, errors and message statuses.
    pub fn add_listener(
        &self,
        listener: Box<dyn ClientListener>,
    ) -> Result<Arc<ListenerHandle>, TidingsError> {
        listen(&self.shared, &self.inner, move |cancelled, batch| {
            for event in batch {
                match event {
                    Event::State { old, new, reason } => deliver(cancelled, || {
                        listener.on_state_changed(
                            old.clone().into(),
                            new.clone().into(),
                            reason.clone(),
                        )
                    }),
                    Event::Error { error } => deliver(cancelled, || {
                        listener.on_error(error.code().into(), error.to_string())
                    }),
                    Event::StoreWarning { message } => deliver(cancelled, || {
                        listener.on_error("store_warning".into(), message.clone())
                    }),
                    Event::Message {
                        msg_id,
                        channel,
                        status,
                    } => deliver(cancelled, || {
                        listener.on_message_status(msg_id.clone(), channel.clone(), status.into())
                    }),
                    _ => {}
                }
            }
        })
    }
}

// ------------------------------------------------------------------ channels

/// A channel or pattern of a [`TidingsClient`].
#[derive(uniffi::Object)]
pub struct Channel {
    inner: native::Channel,
    client: native::TidingsClient,
    shared: Arc<ClientShared>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.inner.name())
            .finish_non_exhaustive()
    }
}

#[uniffi::export]
impl Channel {
    /// The channel or pattern name.
    pub fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    /// Subscribes; returns once the server confirmed (throws with the refusal, e.g.
    /// `forbidden`). Offline, it waits for the connection. The subscription is kept and
    /// resumed from the stored position after reconnects and app restarts. Add the
    /// channel listener first to see recovered messages too.
    pub async fn subscribe(&self) -> Result<(), TidingsError> {
        let inner = self.inner.clone();
        on_runtime(async move { Ok(inner.subscribe().await?) }).await
    }

    /// Unsubscribes and forgets the channel's position.
    pub async fn unsubscribe(&self) -> Result<(), TidingsError> {
        let inner = self.inner.clone();
        on_runtime(async move { Ok(inner.unsubscribe().await?) }).await
    }

    /// Publishes into this channel (JSON `data`) and returns once acked.
    pub async fn publish(&self, event: String, data: String) -> Result<Ack, TidingsError> {
        let value = parse_json("data", &data)?;
        let inner = self.inner.clone();
        on_runtime(async move { Ok(inner.publish(&event, &value).await?.into()) }).await
    }

    /// Queues a message for this channel; returns its id once durable.
    pub async fn publish_queued(
        &self,
        event: String,
        data: String,
    ) -> Result<String, TidingsError> {
        let value = parse_json("data", &data)?;
        let client = self.client.clone();
        let name = self.inner.name().to_owned();
        on_runtime(async move { Ok(client.publish_queued(&name, &event, &value).await?) }).await
    }

    /// Registers a listener for this channel's publications and subscription events.
    pub fn add_listener(
        &self,
        listener: Box<dyn ChannelListener>,
    ) -> Result<Arc<ListenerHandle>, TidingsError> {
        let name = self.inner.name().to_owned();
        listen(&self.shared, &self.client, move |cancelled, batch| {
            let mut publications = Vec::new();
            for event in batch {
                match event {
                    Event::Publication(p)
                        if tidings::protocol::pattern_matches(&name, &p.channel) =>
                    {
                        publications.push(Publication::from(p));
                    }
                    Event::Subscribed {
                        channel,
                        recovered,
                        needs_reload,
                    } if *channel == name => {
                        // Keep the order: publications before this event go first.
                        if !publications.is_empty() {
                            let ready = std::mem::take(&mut publications);
                            deliver(cancelled, || listener.on_publications(ready));
                        }
                        deliver(cancelled, || {
                            listener.on_subscribed(*recovered, *needs_reload)
                        });
                    }
                    Event::Subscription {
                        channel,
                        state: SubscriptionState::Failed { error },
                    } if *channel == name => {
                        log::warn!("subscription to {name} failed: {error}");
                    }
                    _ => {}
                }
            }
            if !publications.is_empty() {
                deliver(cancelled, || listener.on_publications(publications));
            }
        })
    }
}

/// The SDK's version.
#[uniffi::export]
pub fn sdk_version() -> String {
    env!("CARGO_PKG_VERSION").into()
}
