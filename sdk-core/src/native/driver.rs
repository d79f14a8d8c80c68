//! The tokio task that runs one sans-IO client.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Ack, Command, Shared, Store, TlsOptions, TokenProvider, Waiters};
use crate::client::{Client, Input, Output, TransportId};
use crate::error::ClientError;
use crate::event::{ConnectionState, Event, MessageStatus, SubscriptionState};
use crate::options::Options;
use crate::protocol::{Codec, JsonCodec};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Results of work done off the driver task.
enum Background {
    Opened(TransportId, Box<Socket>),
    OpenFailed(TransportId, String),
    Token(Result<String, String>),
}

pub(crate) struct Driver {
    client: Client,
    namespace: String,
    store: Arc<dyn Store>,
    token_provider: Option<Arc<dyn TokenProvider>>,
    tls: TlsOptions,
    shared: Arc<Shared>,
    started: Instant,
    socket: Option<(TransportId, Socket)>,
    waiters: Waiters,
    background_tx: mpsc::UnboundedSender<Background>,
    background_rx: mpsc::UnboundedReceiver<Background>,
    wake: Option<u64>,
    closing: bool,
    /// The transport the core is waiting to see opened; any other socket that finishes
    /// opening (a timed-out attempt) is closed instead of replacing the live one.
    opening: Option<TransportId>,
    options: Options,
}

/// Small buffers: a load generator holds thousands of these.
pub(crate) fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

impl Driver {
    pub(crate) fn new(
        options: Options,
        seed: u64,
        store: Arc<dyn Store>,
        token_provider: Option<Arc<dyn TokenProvider>>,
        tls: TlsOptions,
        shared: Arc<Shared>,
    ) -> Self {
        let namespace = options.storage_namespace();
        let (background_tx, background_rx) = mpsc::unbounded_channel();
        Self {
            client: Client::new(options.clone(), seed),
            options,
            namespace,
            store,
            token_provider,
            tls,
            shared,
            started: Instant::now(),
            socket: None,
            waiters: Waiters::default(),
            background_tx,
            background_rx,
            wake: None,
            closing: false,
            opening: None,
        }
    }

    fn now(&self) -> crate::time::Now {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        crate::time::Now::new(self.started.elapsed().as_millis() as u64, wall)
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        // Storage is per user: with only a token provider, learn the user first.
        if self.options.effective_user().is_none() {
            if let Some(provider) = self.token_provider.clone() {
                if let Ok(token) = provider.fetch().await {
                    self.options.token = Some(token.clone());
                    self.namespace = self.options.storage_namespace();
                    self.client.set_token(token);
                }
            }
        }
        match self.store.load(&self.namespace).await {
            Ok(snapshot) => self.input(Input::Restore(snapshot)),
            Err(message) => {
                self.shared.dispatch(vec![Event::StoreWarning {
                    message: format!("could not load the store, starting empty: {message}"),
                }]);
            }
        }
        self.drain().await;
        while !self.closing {
            let wake = self.wake;
            let sleep = async move {
                match wake {
                    Some(at) => {
                        tokio::time::sleep_until(tokio::time::Instant::from_std(
                            self.started + Duration::from_millis(at),
                        ))
                        .await
                    }
                    None => std::future::pending().await,
                }
            };
            let frame = async {
                match self.socket.as_mut() {
                    Some((id, socket)) => (*id, socket.next().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                (transport, message) = frame => self.on_socket(transport, message),
                Some(background) = self.background_rx.recv() => self.on_background(background),
                () = sleep => self.input(Input::Timeout),
            }
            self.drain().await;
        }
        if let Some((_, mut socket)) = self.socket.take() {
            let _ = socket.close(None).await;
        }
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        self.client.handle_input(now, input);
    }

    fn on_socket(
        &mut self,
        transport: TransportId,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        match message {
            Some(Ok(Message::Text(text))) => match JsonCodec.decode_server(text.as_str()) {
                Ok(frame) => self.input(Input::Frame { transport, frame }),
                Err(e) => log::warn!("undecodable frame ignored: {e}"),
            },
            Some(Ok(Message::Close(close))) => {
                let reason = close
                    .map(|c| format!("closed by server ({}) {}", c.code, c.reason))
                    .unwrap_or_else(|| "closed by server".into());
                self.socket = None;
                self.input(Input::TransportClosed { transport, reason });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                self.socket = None;
                self.input(Input::TransportClosed {
                    transport,
                    reason: e.to_string(),
                });
            }
            None => {
                self.socket = None;
                self.input(Input::TransportClosed {
                    transport,
                    reason: "connection ended".into(),
                });
            }
        }
    }

    fn on_background(&mut self, background: Background) {
        match background {
            Background::Opened(transport, socket) => {
                if self.opening != Some(transport) {
                    let mut socket = *socket;
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                    });
                    return;
                }
                self.opening = None;
                self.socket = Some((transport, *socket));
                self.input(Input::TransportOpened(transport));
            }
            Background::OpenFailed(transport, reason) => {
                self.input(Input::TransportClosed { transport, reason })
            }
            Background::Token(result) => self.input(Input::Token(result)),
        }
    }

    fn command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Connect(reply) => {
                self.client.connect(now);
                match self.client.state() {
                    ConnectionState::Connected => {
                        let _ = reply.send(Ok(()));
                    }
                    _ => self.waiters.connect.push(reply),
                }
            }
            Command::Disconnect(reply) => {
                self.client.disconnect(now);
                let _ = reply.send(());
            }
            Command::Clear(reply) => {
                self.client.clear(now);
                let _ = reply.send(());
            }
            Command::Subscribe(channel, reply) => match self.client.subscribe(now, &channel) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(()) => match self.client.subscription_state(&channel) {
                    Some(SubscriptionState::Subscribed) => {
                        let _ = reply.send(Ok(()));
                    }
                    _ => self
                        .waiters
                        .subscribe
                        .entry(channel)
                        .or_default()
                        .push(reply),
                },
            },
            Command::Unsubscribe(channel, reply) => {
                self.client.unsubscribe(now, &channel);
                let _ = reply.send(());
            }
            Command::Publish {
                channel,
                event,
                data,
                accepted,
                acked,
            } => match self.client.publish(now, &channel, &event, data) {
                Err(e) => {
                    if let Some(acked) = acked {
                        let _ = acked.send(Err(e.clone()));
                    }
                    let _ = accepted.send(Err(e));
                }
                Ok(msg_id) => {
                    // Resolved when the store confirmed the write (status `queued`).
                    if let Some(acked) = acked {
                        self.waiters.acks.insert(msg_id.clone(), acked);
                    }
                    self.waiters.accepted.insert(msg_id, accepted);
                }
            },
            Command::Cancel(msg_id, reply) => {
                let _ = reply.send(self.client.cancel(now, &msg_id));
            }
            Command::Outbox(reply) => {
                let _ = reply.send(self.client.outbox());
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.client.stats());
            }
            Command::Lifecycle(change) => self.client.handle_input(now, Input::Lifecycle(change)),
            Command::SetToken(token) => self.client.set_token(token),
            Command::Close(reply) => {
                self.client.disconnect(now);
                self.closing = true;
                let _ = reply.send(());
            }
        }
    }

    /// Performs every output until the core has nothing more to do.
    async fn drain(&mut self) {
        loop {
            match self.client.poll_output() {
                Output::OpenTransport { transport, url } => {
                    self.opening = Some(transport);
                    self.open(transport, url);
                }
                Output::CloseTransport { transport, .. } => {
                    if self.opening == Some(transport) {
                        self.opening = None;
                    }
                    if self.socket.as_ref().is_some_and(|(id, _)| *id == transport) {
                        if let Some((_, mut socket)) = self.socket.take() {
                            // Closing may wait on a dead peer; do it off the loop.
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(2),
                                    socket.close(None),
                                )
                                .await;
                            });
                        }
                    }
                }
                Output::Transmit { transport, frame } => {
                    let Some((id, socket)) = self.socket.as_mut() else {
                        continue;
                    };
                    if *id != transport {
                        continue;
                    }
                    let text = match JsonCodec.encode_client(&frame) {
                        Ok(text) => text,
                        Err(e) => {
                            log::error!("could not encode frame: {e}");
                            continue;
                        }
                    };
                    if let Err(e) = socket.send(Message::text(text)).await {
                        let transport = *id;
                        self.socket = None;
                        self.input(Input::TransportClosed {
                            transport,
                            reason: format!("send failed: {e}"),
                        });
                    }
                }
                Output::FetchToken => match self.token_provider.clone() {
                    Some(provider) => {
                        let tx = self.background_tx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(Background::Token(provider.fetch().await));
                        });
                    }
                    None => self.input(Input::Token(Err("no token provider".into()))),
                },
                Output::Persist(op) => {
                    let input = match self.store.apply(&self.namespace, &op.kind).await {
                        Ok(()) => Input::Persisted(op.id),
                        Err(message) => Input::PersistFailed { id: op.id, message },
                    };
                    self.input(input);
                }
                Output::Events(batch) => {
                    self.resolve_waiters(&batch);
                    self.shared.dispatch(batch);
                }
                Output::Wake(at) => {
                    self.wake = at;
                    return;
                }
            }
        }
    }

    fn open(&mut self, transport: TransportId, url: String) {
        let tx = self.background_tx.clone();
        let connector = match self.tls.connector(&url) {
            Ok(connector) => connector,
            Err(e) => {
                let _ = tx.send(Background::OpenFailed(transport, e));
                return;
            }
        };
        tokio::spawn(async move {
            let result = tokio_tungstenite::connect_async_tls_with_config(
                url.as_str(),
                Some(websocket_config()),
                true,
                connector,
            )
            .await;
            let message = match result {
                Ok((socket, _response)) => Background::Opened(transport, Box::new(socket)),
                Err(e) => Background::OpenFailed(transport, e.to_string()),
            };
            let _ = tx.send(message);
        });
    }

    fn resolve_waiters(&mut self, batch: &[Event]) {
        for event in batch {
            match event {
                Event::State { new, .. } => {
                    *self.shared.state.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(new.clone());
                    let outcome = match new {
                        ConnectionState::Connected => Some(Ok(())),
                        ConnectionState::Failed { code, message } => {
                            Some(Err(failure(code, message)))
                        }
                        ConnectionState::Disconnected => Some(Err(ClientError::Closed)),
                        _ => None,
                    };
                    if let Some(outcome) = outcome {
                        for waiter in self.waiters.connect.drain(..) {
                            let _ = waiter.send(outcome.clone());
                        }
                    }
                }
                Event::Subscription { channel, state } => {
                    let outcome = match state {
                        SubscriptionState::Subscribed => Some(Ok(())),
                        SubscriptionState::Failed { error } => Some(Err(error.clone())),
                        SubscriptionState::Unsubscribed => Some(Err(ClientError::Cancelled)),
                        SubscriptionState::Subscribing => None,
                    };
                    if let Some(outcome) = outcome {
                        for waiter in self.waiters.subscribe.remove(channel).unwrap_or_default() {
                            let _ = waiter.send(outcome.clone());
                        }
                    }
                }
                Event::Message { msg_id, status, .. } => {
                    if !matches!(status, MessageStatus::Persisting) {
                        if let Some(waiter) = self.waiters.accepted.remove(msg_id) {
                            let _ = waiter.send(match status {
                                MessageStatus::Failed { error } => Err(error.clone()),
                                _ => Ok(msg_id.clone()),
                            });
                        }
                    }
                    let outcome = match status {
                        MessageStatus::Acked { epoch, offset } => Some(Ok(Ack {
                            msg_id: msg_id.clone(),
                            epoch: epoch.clone(),
                            offset: *offset,
                        })),
                        MessageStatus::Failed { error } => Some(Err(error.clone())),
                        _ => None,
                    };
                    if let Some(outcome) = outcome {
                        if let Some(waiter) = self.waiters.acks.remove(msg_id) {
                            let _ = waiter.send(outcome);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The error a `connect()` waiter gets when the client fails.
fn failure(code: &str, message: &str) -> ClientError {
    match code.parse() {
        Ok(crate::protocol::ErrorCode::Other) | Err(_) => ClientError::ConnectionFailed {
            reason: code.into(),
            message: message.into(),
        },
        Ok(code) => ClientError::Server {
            code,
            message: message.into(),
            temporary: false,
            retry_after_ms: None,
        },
    }
}
