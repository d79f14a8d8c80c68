//! The native driver: runs the sans-IO [`crate::Client`] on tokio with tokio-tungstenite
//! (rustls for `wss://`). This is the API the JS and mobile SDKs mirror.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tidings::ClientError> {
//! use tidings::native::TidingsClient;
//! let client = TidingsClient::builder("ws://127.0.0.1:8080/ws").token("jwt...").build();
//! client.connect().await?;
//! let channel = client.channel("recognitions");
//! let mut publications = channel.publications();
//! channel.subscribe().await?;
//! channel.publish("recognition.created", &serde_json::json!({"to": "david"})).await?;
//! # let _ = &mut publications;
//! # Ok(()) }
//! ```

mod driver;
mod store;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::client::{Lifecycle, Stats};
use crate::error::ClientError;
use crate::event::{ConnectionState, Event};
use crate::options::Options;
use crate::outbox::PendingMessage;
use crate::protocol::{Payload, Publication};

pub use store::{FileStore, Store};
pub use tls::TlsOptions;

/// A boxed future, as returned by [`TokenProvider`] and [`Store`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Fetches a fresh token (e.g. from the app's back end). Any
/// `Fn() -> impl Future<Output = Result<String, String>>` is one.
pub trait TokenProvider: Send + Sync + 'static {
    /// Returns a new token, or an error message.
    fn fetch(&self) -> BoxFuture<'static, Result<String, String>>;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    fn fetch(&self) -> BoxFuture<'static, Result<String, String>> {
        Box::pin(self())
    }
}

/// Where a publish ended up on the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ack {
    /// Client message id.
    pub msg_id: String,
    /// Channel epoch.
    pub epoch: String,
    /// Offset assigned by the server.
    pub offset: u64,
}

/// Builds a [`TidingsClient`].
pub struct ClientBuilder {
    options: Options,
    store: Arc<dyn Store>,
    token_provider: Option<Arc<dyn TokenProvider>>,
    tls: TlsOptions,
    seed: Option<u64>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("options", &self.options.url)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A fixed token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.options.token = Some(token.into());
        self
    }

    /// A token provider, called before connecting without a valid token, before expiry,
    /// and once after a `token_expired` error.
    pub fn token_provider(mut self, provider: impl TokenProvider) -> Self {
        self.token_provider = Some(Arc::new(provider));
        self.options.token_provider = true;
        self
    }

    /// Replace all options (the URL, token and provider flag set so far are kept when the
    /// given options leave them empty).
    pub fn options(mut self, mut options: Options) -> Self {
        if options.url.is_empty() {
            options.url = std::mem::take(&mut self.options.url);
        }
        if options.token.is_none() {
            options.token = self.options.token.take();
        }
        options.token_provider |= self.options.token_provider;
        self.options = options;
        self
    }

    /// Change some options in place.
    pub fn configure(mut self, f: impl FnOnce(&mut Options)) -> Self {
        f(&mut self.options);
        self
    }

    /// The store for the outbox and recovery positions (default: in memory).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// TLS settings for `wss://` (extra CA certificates).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// A fixed seed for jitter and message ids (tests only; default: random).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Starts the driver task on the current tokio runtime (call it from within one: it
    /// panics outside a runtime, like `tokio::spawn`). The client loads its store, then
    /// waits for [`TidingsClient::connect`]. With only a token provider and no
    /// [`Options::user`], the provider is asked once first to learn the user the store is
    /// filed under; set `user` when the app may start offline.
    pub fn build(self) -> TidingsClient {
        let (commands, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let seed = self.seed.unwrap_or_else(|| fastrand::u64(..));
        let driver = driver::Driver::new(
            self.options,
            seed,
            self.store,
            self.token_provider,
            self.tls,
            shared.clone(),
        );
        tokio::spawn(driver.run(receiver));
        TidingsClient { commands, shared }
    }
}

/// State shared between the handle and the driver task.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) listeners: Mutex<Vec<mpsc::UnboundedSender<Arc<Vec<Event>>>>>,
    pub(crate) state: Mutex<Option<ConnectionState>>,
}

impl Shared {
    pub(crate) fn dispatch(&self, batch: Vec<Event>) {
        let batch = Arc::new(batch);
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.retain(|l| l.send(batch.clone()).is_ok());
    }
}

pub(crate) type Reply<T> = oneshot::Sender<T>;

/// Requests from handles to the driver task.
pub(crate) enum Command {
    Connect(Reply<Result<(), ClientError>>),
    Disconnect(Reply<()>),
    Clear(Reply<()>),
    Subscribe(String, Reply<Result<(), ClientError>>),
    Unsubscribe(String, Reply<()>),
    Publish {
        channel: String,
        event: String,
        data: Payload,
        /// Resolved once the message is durable (with its id) ...
        accepted: Reply<Result<String, ClientError>>,
        /// ... and once the server acked it.
        acked: Option<Reply<Result<Ack, ClientError>>>,
    },
    Cancel(String, Reply<Result<(), ClientError>>),
    Outbox(Reply<Vec<PendingMessage>>),
    Stats(Reply<Stats>),
    Lifecycle(Lifecycle),
    SetToken(String),
    Close(Reply<()>),
}

/// A running client. Cheap to clone; the driver stops when [`TidingsClient::close`] is
/// called or every handle is dropped.
#[derive(Clone)]
pub struct TidingsClient {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TidingsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TidingsClient")
            .field("state", &self.state())
            .finish()
    }
}

impl TidingsClient {
    /// Starts building a client for a server URL (`ws://` or `wss://`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            options: Options::new(url),
            store: Arc::new(crate::store::MemoryStore::new()),
            token_provider: None,
            tls: TlsOptions::default(),
            seed: None,
        }
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ClientError> {
        let (reply, wait) = oneshot::channel();
        self.commands
            .send(make(reply))
            .map_err(|_| ClientError::Closed)?;
        wait.await.map_err(|_| ClientError::Closed)
    }

    /// Connects, resolving once connected, or with an error once the client failed
    /// (`unauthorized`, gave up, ...). While the server is unreachable it keeps retrying
    /// and waiting; wrap it in a timeout if you need one.
    pub async fn connect(&self) -> Result<(), ClientError> {
        self.request(Command::Connect).await?
    }

    /// Closes the connection; subscriptions and the outbox are kept for the next connect.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.request(Command::Disconnect).await
    }

    /// Logs out: disconnects and wipes this user's outbox and positions from the store.
    pub async fn clear(&self) -> Result<(), ClientError> {
        self.request(Command::Clear).await
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or(ConnectionState::Disconnected)
    }

    /// Every event, in batches, from now on.
    pub fn events(&self) -> EventStream {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sender);
        EventStream { receiver }
    }

    /// A handle on one channel (or pattern).
    pub fn channel(&self, name: impl Into<String>) -> Channel {
        Channel {
            client: self.clone(),
            name: name.into(),
        }
    }

    /// Queues a message and resolves with its id once it is durable in the store
    /// (it is then sent as soon as possible and retried until acked).
    pub async fn publish_queued<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        event: &str,
        data: &T,
    ) -> Result<String, ClientError> {
        self.send_publish(channel, event, data, None)?
            .await
            .map_err(|_| ClientError::Closed)?
    }

    /// Publishes and resolves once the server acked it (or with the reason it failed).
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        event: &str,
        data: &T,
    ) -> Result<Ack, ClientError> {
        let (acked, acked_wait) = oneshot::channel();
        let accepted_wait = self.send_publish(channel, event, data, Some(acked))?;
        accepted_wait.await.map_err(|_| ClientError::Closed)??;
        acked_wait.await.map_err(|_| ClientError::Closed)?
    }

    /// Hands a publish to the driver; the returned receiver resolves once it is durable.
    fn send_publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        event: &str,
        data: &T,
        acked: Option<Reply<Result<Ack, ClientError>>>,
    ) -> Result<oneshot::Receiver<Result<String, ClientError>>, ClientError> {
        let (accepted, accepted_wait) = oneshot::channel();
        self.commands
            .send(Command::Publish {
                channel: channel.into(),
                event: event.into(),
                data: to_payload(data)?,
                accepted,
                acked,
            })
            .map_err(|_| ClientError::Closed)?;
        Ok(accepted_wait)
    }

    /// Cancels a message that was not sent yet.
    pub async fn cancel(&self, msg_id: &str) -> Result<(), ClientError> {
        let msg_id = msg_id.to_owned();
        self.request(|r| Command::Cancel(msg_id, r)).await?
    }

    /// Messages not yet acked or failed, oldest first, with their status.
    pub async fn outbox(&self) -> Result<Vec<PendingMessage>, ClientError> {
        self.request(Command::Outbox).await
    }

    /// Counters and gauges.
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        self.request(Command::Stats).await
    }

    /// Reports a platform lifecycle change (network, foreground, background).
    pub fn lifecycle(&self, change: Lifecycle) {
        let _ = self.commands.send(Command::Lifecycle(change));
    }

    /// Replaces the token (sent with `refresh` on a live connection).
    pub fn set_token(&self, token: impl Into<String>) {
        let _ = self.commands.send(Command::SetToken(token.into()));
    }

    /// Stops the driver: closes the socket and ends every event stream.
    pub async fn close(&self) {
        let _ = self.request(Command::Close).await;
    }
}

fn to_payload<T: Serialize + ?Sized>(data: &T) -> Result<Payload, ClientError> {
    Payload::from_value(data).map_err(|e| ClientError::Server {
        code: crate::protocol::ErrorCode::BadRequest,
        message: format!("data is not serializable: {e}"),
        temporary: false,
        retry_after_ms: None,
    })
}

/// A channel or pattern of a [`TidingsClient`].
#[derive(Clone, Debug)]
pub struct Channel {
    client: TidingsClient,
    name: String,
}

impl Channel {
    /// The channel or pattern name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Subscribes, resolving once the server confirmed (or with the refusal). Offline,
    /// it waits for the connection; the subscription itself is kept either way.
    pub async fn subscribe(&self) -> Result<(), ClientError> {
        let name = self.name.clone();
        self.client.request(|r| Command::Subscribe(name, r)).await?
    }

    /// Unsubscribes and forgets the channel's position.
    pub async fn unsubscribe(&self) -> Result<(), ClientError> {
        let name = self.name.clone();
        self.client.request(|r| Command::Unsubscribe(name, r)).await
    }

    /// Publishes into this channel and waits for the ack.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<Ack, ClientError> {
        self.client.publish(&self.name, event, data).await
    }

    /// Publications of this channel (or of every channel matching this pattern), in order,
    /// from now on. Create it before subscribing to see recovered messages too.
    pub fn publications(&self) -> PublicationStream {
        PublicationStream {
            events: self.client.events(),
            name: self.name.clone(),
            ready: std::collections::VecDeque::new(),
        }
    }
}

/// Batches of events, in order.
#[derive(Debug)]
pub struct EventStream {
    receiver: mpsc::UnboundedReceiver<Arc<Vec<Event>>>,
}

impl EventStream {
    /// The next batch, or `None` once the client closed.
    pub async fn next_batch(&mut self) -> Option<Arc<Vec<Event>>> {
        self.receiver.recv().await
    }
}

impl Stream for EventStream {
    type Item = Arc<Vec<Event>>;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

/// Publications of one channel or pattern.
#[derive(Debug)]
pub struct PublicationStream {
    events: EventStream,
    name: String,
    ready: std::collections::VecDeque<Publication>,
}

impl PublicationStream {
    /// The next publication, or `None` once the client closed.
    pub async fn next(&mut self) -> Option<Publication> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Some(p);
            }
            let batch = self.events.next_batch().await?;
            for event in batch.iter() {
                if let Event::Publication(p) = event {
                    if crate::protocol::pattern_matches(&self.name, &p.channel) {
                        self.ready.push_back(p.clone());
                    }
                }
            }
        }
    }
}

/// Waiters the driver resolves from events.
#[derive(Default)]
pub(crate) struct Waiters {
    pub connect: Vec<Reply<Result<(), ClientError>>>,
    pub subscribe: HashMap<String, Vec<Reply<Result<(), ClientError>>>>,
    pub acks: HashMap<String, Reply<Result<Ack, ClientError>>>,
    pub accepted: HashMap<String, Reply<Result<String, ClientError>>>,
}
