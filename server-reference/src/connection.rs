//! One WebSocket connection: a single task that reads client frames and writes the
//! connection's outbound queue.
//!
//! Until `connect` succeeds nothing can be queued for the socket (it has no subscriptions
//! and gets no pings), so replies are written directly; `connected` is written directly
//! too, so it precedes every publication of the subscriptions made with it. After that,
//! every frame goes through the outbound queue and is written in the order it was queued.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use tidings::protocol::{
    disconnect_code, is_pattern, validate_channel, ClientFrame, Codec, ErrorBody, ErrorCode,
    JsonCodec, Limits, Payload, Publisher, ReconnectAdvice, Secret, ServerFrame, SubscribeRequest,
    SubscribeResult, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;

use crate::auth::{self, AuthError, Claims};
use crate::engine::PublishRequest;
use crate::hub::{encode, CloseReason, ConnShared, Outbound};
use crate::util::{now_ms, random_id};
use crate::AppState;

/// Largest message id and event name accepted, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Frames written per batch before one flush.
const MAX_BATCH: usize = 256;

/// How long the final `disconnect` may take to write.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Authenticated state of a connection.
#[derive(Debug)]
struct Session {
    client_id: String,
    claims: Claims,
    info: Option<Payload>,
}

enum Flow {
    Continue,
    Close,
}

/// Token bucket: `rate` tokens per second, burst `rate`.
#[derive(Debug)]
struct Bucket {
    tokens: f32,
    last: Instant,
    /// After a publish was refused for rate: its `msg_id`, when it may be retried, and
    /// when the hold lapses anyway. Until that message comes back (or the hold lapses),
    /// every other publish is refused too, so the publishes a client pipelined behind it
    /// cannot overtake it: retries arrive in their original order (docs/protocol.md).
    publish_hold: Option<(String, Instant, Instant)>,
}

/// How long a publish hold outlives its retry time when the refused message never
/// comes back (the client cancelled it).
const PUBLISH_HOLD_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

struct Conn {
    app: Arc<AppState>,
    shared: Arc<ConnShared>,
    tx: mpsc::Sender<Outbound>,
    ip: IpAddr,
    session: Option<Box<Session>>,
    subs: HashSet<String>,
    bucket: Bucket,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let user = self.session.as_ref().map(|s| s.claims.sub.as_str());
        self.app
            .hub
            .unregister(self.shared.id, self.ip, user, self.subs.iter());
        self.app.metrics.connections.dec();
    }
}

/// Serves one upgraded socket until it closes.
pub(crate) async fn serve(mut socket: WebSocket, app: Arc<AppState>, ip: IpAddr) {
    let Some((shared, tx, rx)) = app.hub.register(ip) else {
        // Shutting down.
        let _ = socket
            .send(text_of(&disconnect_frame(CloseReason::Shutdown, &app)))
            .await;
        return;
    };
    app.metrics.connections.inc();
    let rate = app.config.messages_per_second as f32;
    let conn = Conn {
        app,
        shared,
        tx,
        ip,
        session: None,
        subs: HashSet::new(),
        bucket: Bucket {
            tokens: rate,
            last: Instant::now(),
            publish_hold: None,
        },
    };
    // The task future holds only the idle select state (see `Conn::run`).
    conn.run(socket, rx).await;
}

fn text_of(frame: &ServerFrame) -> Message {
    match JsonCodec.encode_server(frame) {
        Ok(text) => Message::Text(text.into()),
        Err(_) => Message::Text(Utf8Bytes::from_static("{}")),
    }
}

fn error_frame(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> ServerFrame {
    ServerFrame::Error {
        id,
        error: ErrorBody::new(code, message),
    }
}

fn disconnect(
    code: &str,
    reason: &str,
    reconnect: bool,
    not_before_ms: Option<u64>,
) -> ServerFrame {
    ServerFrame::Disconnect {
        code: code.to_owned(),
        reason: reason.to_owned(),
        advice: ReconnectAdvice {
            reconnect,
            not_before_ms,
        },
    }
}

fn disconnect_frame(reason: CloseReason, app: &AppState) -> ServerFrame {
    match reason {
        CloseReason::SlowConsumer => disconnect(
            disconnect_code::SLOW_CONSUMER,
            "outbound queue full",
            true,
            None,
        ),
        CloseReason::Stale => disconnect(disconnect_code::STALE, "no pong received", true, None),
        CloseReason::TokenExpired => {
            disconnect(disconnect_code::TOKEN_EXPIRED, "token expired", true, None)
        }
        CloseReason::Shutdown => disconnect(
            disconnect_code::SHUTDOWN,
            "server shutting down",
            true,
            Some(fastrand::u64(0..=app.config.shutdown_spread_ms)),
        ),
        CloseReason::ConnectTimeout => disconnect(
            disconnect_code::BAD_REQUEST,
            "no connect frame in time",
            true,
            None,
        ),
    }
}

/// Best-effort extraction of the command id of a frame that did not decode.
fn extract_id(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get("id")?
        .as_u64()
}

fn refused(channel: String, code: ErrorCode, message: impl Into<String>) -> SubscribeResult {
    SubscribeResult {
        channel,
        epoch: String::new(),
        offset: 0,
        recovered: false,
        publications: Vec::new(),
        unrecovered: Vec::new(),
        server_time: now_ms(),
        error: Some(ErrorBody::new(code, message)),
    }
}

/// Writes `first` and everything else already queued, then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    rx: &mut mpsc::Receiver<Outbound>,
    first: Outbound,
    app: &AppState,
) -> Result<(), axum::Error> {
    let mut next = Some(first);
    let mut written: u64 = 0;
    while let Some(frame) = next.take() {
        socket.feed(Message::Text(frame.text.clone())).await?;
        written += 1;
        if let Some(at) = frame.accepted_at {
            app.metrics
                .delivery_latency
                .observe(at.elapsed().as_secs_f64());
        }
        if written < MAX_BATCH as u64 {
            next = rx.try_recv().ok();
        }
    }
    socket.flush().await?;
    app.metrics.messages_out.inc_by(written);
    Ok(())
}

impl Conn {
    async fn run(mut self, mut socket: WebSocket, mut rx: mpsc::Receiver<Outbound>) {
        let shared = self.shared.clone();
        loop {
            // Unbiased on purpose: a busy outbound queue must not starve reading (pongs
            // would go unread and the connection would look stale), nor the reverse.
            tokio::select! {
                _ = shared.kill.notified() => {
                    Box::pin(self.close_for_reason(&mut socket)).await;
                    return;
                }
                out = rx.recv() => {
                    let Some(first) = out else { return };
                    tokio::select! {
                        res = Box::pin(write_batch(&mut socket, &mut rx, first, &self.app)) => {
                            if res.is_err() {
                                return;
                            }
                        }
                        _ = shared.kill.notified() => {
                            Box::pin(self.close_for_reason(&mut socket)).await;
                            return;
                        }
                    }
                }
                msg = socket.recv() => {
                    let Some(Ok(msg)) = msg else { return };
                    self.shared.touch(self.app.hub.now_ms());
                    // Boxed: command handling is large and rare; the idle task stays small.
                    if let Flow::Close = Box::pin(self.on_message(&mut socket, msg)).await {
                        return;
                    }
                }
            }
        }
    }

    async fn close_for_reason(&mut self, socket: &mut WebSocket) {
        let Some(reason) = self.shared.reason() else {
            return;
        };
        tracing::debug!(conn = self.shared.id, ?reason, "closing connection");
        let frame = disconnect_frame(reason, &self.app);
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
            socket.send(text_of(&frame)).await?;
            socket.send(Message::Close(None)).await
        })
        .await;
        self.app.metrics.messages_out.inc();
    }

    /// Sends a frame: directly before `connect` completed, through the queue after.
    async fn reply(&mut self, socket: &mut WebSocket, frame: ServerFrame) -> Flow {
        if let ServerFrame::Error { error, .. } = &frame {
            self.app.metrics.error(&error.code);
        }
        if self.session.is_none() {
            self.app.metrics.messages_out.inc();
            return match socket.send(text_of(&frame)).await {
                Ok(()) => Flow::Continue,
                Err(_) => Flow::Close,
            };
        }
        let Some(out) = encode(&frame, None) else {
            return Flow::Continue;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(out) {
            self.shared.close(CloseReason::SlowConsumer);
        }
        Flow::Continue
    }

    /// Sends an error and a disconnect, then closes (only used before `connect` completes).
    async fn refuse(
        &mut self,
        socket: &mut WebSocket,
        id: u64,
        error: ErrorBody,
        disconnect: ServerFrame,
    ) -> Flow {
        self.app.metrics.error(&error.code);
        let _ = socket
            .send(text_of(&ServerFrame::Error {
                id: Some(id),
                error,
            }))
            .await;
        let _ = socket.send(text_of(&disconnect)).await;
        let _ = socket.send(Message::Close(None)).await;
        self.app.metrics.messages_out.inc_by(2);
        Flow::Close
    }

    fn take_token(&mut self) -> Result<(), u64> {
        let rate = self.app.config.messages_per_second as f32;
        if rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.bucket.last).as_secs_f32();
        self.bucket.last = now;
        self.bucket.tokens = (self.bucket.tokens + elapsed * rate).min(rate);
        if self.bucket.tokens >= 1.0 {
            self.bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.bucket.tokens) / rate;
            Err(((wait * 1000.0).ceil() as u64).max(1))
        }
    }

    async fn on_message(&mut self, socket: &mut WebSocket, msg: Message) -> Flow {
        match msg {
            Message::Text(text) => {
                self.app.metrics.messages_in.inc();
                self.on_text(socket, text).await
            }
            Message::Binary(_) => {
                self.app.metrics.messages_in.inc();
                if let Err(retry) = self.take_token() {
                    return self.rate_limited(socket, None, retry).await;
                }
                self.reply(
                    socket,
                    error_frame(
                        None,
                        ErrorCode::BadRequest,
                        "binary frames are not supported",
                    ),
                )
                .await
            }
            Message::Close(_) => Flow::Close,
            // WebSocket-level pings are answered by the library; both count as activity.
            Message::Ping(_) | Message::Pong(_) => Flow::Continue,
        }
    }

    async fn rate_limited(&mut self, socket: &mut WebSocket, id: Option<u64>, retry: u64) -> Flow {
        let mut error = ErrorBody::new(ErrorCode::RateLimited, "too many messages");
        error.temporary = true;
        error.retry_after_ms = Some(retry);
        self.reply(socket, ServerFrame::Error { id, error }).await
    }

    async fn on_text(&mut self, socket: &mut WebSocket, text: Utf8Bytes) -> Flow {
        let max = self.app.config.max_frame_bytes;
        if text.len() > max {
            let id = extract_id(text.as_str());
            if let Err(retry) = self.take_token() {
                return self.rate_limited(socket, id, retry).await;
            }
            let message = format!(
                "frame of {} bytes exceeds max_frame_bytes ({max})",
                text.len()
            );
            return self
                .reply(socket, error_frame(id, ErrorCode::FrameTooLarge, message))
                .await;
        }
        let frame = match JsonCodec.decode_client(text.as_str()) {
            Ok(frame) => frame,
            Err(err) => {
                let id = extract_id(text.as_str());
                if let Err(retry) = self.take_token() {
                    return self.rate_limited(socket, id, retry).await;
                }
                return self
                    .reply(
                        socket,
                        error_frame(id, ErrorCode::BadRequest, format!("invalid frame: {err}")),
                    )
                    .await;
            }
        };
        let publish_id = match &frame {
            ClientFrame::Publish { msg_id, .. } => Some(msg_id.clone()),
            _ => None,
        };
        if let (Some(msg_id), Some((held, retry_at, lapses))) =
            (&publish_id, &self.bucket.publish_hold)
        {
            let now = Instant::now();
            if msg_id == held || now >= *lapses {
                self.bucket.publish_hold = None;
            } else {
                let retry = retry_at.saturating_duration_since(now).as_millis().max(1) as u64;
                return self.rate_limited(socket, frame.id(), retry).await;
            }
        }
        if !matches!(frame, ClientFrame::Pong { .. }) {
            if let Err(retry) = self.take_token() {
                if let Some(msg_id) = publish_id {
                    let retry_at = Instant::now() + std::time::Duration::from_millis(retry);
                    self.bucket.publish_hold =
                        Some((msg_id, retry_at, retry_at + PUBLISH_HOLD_GRACE));
                }
                return self.rate_limited(socket, frame.id(), retry).await;
            }
        }
        self.on_frame(socket, frame).await
    }

    async fn on_frame(&mut self, socket: &mut WebSocket, frame: ClientFrame) -> Flow {
        if self.session.is_none() {
            return match frame {
                ClientFrame::Connect {
                    id,
                    version,
                    token,
                    subs,
                    ..
                } => self.on_connect(socket, id, version, token, subs).await,
                ClientFrame::Pong { .. } => Flow::Continue,
                other => {
                    self.reply(
                        socket,
                        error_frame(other.id(), ErrorCode::NotConnected, "send connect first"),
                    )
                    .await
                }
            };
        }
        match frame {
            ClientFrame::Connect { id, .. } => {
                self.reply(
                    socket,
                    error_frame(Some(id), ErrorCode::BadRequest, "already connected"),
                )
                .await
            }
            ClientFrame::Subscribe { id, request } => {
                let result = self.subscribe(request).await;
                let frame = match result.error {
                    Some(error) => ServerFrame::Error {
                        id: Some(id),
                        error,
                    },
                    None => ServerFrame::Subscribed { id, result },
                };
                self.reply(socket, frame).await
            }
            ClientFrame::Unsubscribe { id, channel } => {
                if self.subs.remove(&channel) {
                    self.app.hub.unsubscribe(self.shared.id, &channel);
                }
                self.reply(
                    socket,
                    ServerFrame::Unsubscribed {
                        id: Some(id),
                        channel,
                    },
                )
                .await
            }
            ClientFrame::Publish {
                id,
                channel,
                msg_id,
                event,
                data,
            } => {
                let frame = self.publish(id, channel, msg_id, event, data).await;
                self.reply(socket, frame).await
            }
            ClientFrame::Ping { id } => self.reply(socket, ServerFrame::Pong { id }).await,
            ClientFrame::Pong { .. } => Flow::Continue,
            ClientFrame::Refresh { id, token } => {
                let frame = self.refresh(id, token);
                self.reply(socket, frame).await
            }
        }
    }

    async fn on_connect(
        &mut self,
        socket: &mut WebSocket,
        id: u64,
        version: u32,
        token: Secret,
        subs: Vec<SubscribeRequest>,
    ) -> Flow {
        if version != PROTOCOL_VERSION {
            let message =
                format!("protocol version {version} is not supported (speak {PROTOCOL_VERSION})");
            return self
                .refuse(
                    socket,
                    id,
                    ErrorBody::new(ErrorCode::UnsupportedVersion, message.clone()),
                    disconnect(disconnect_code::UNSUPPORTED_VERSION, &message, false, None),
                )
                .await;
        }
        let claims = match auth::verify(&self.app.config.jwt_secret, &token.0) {
            Ok(claims) => claims,
            Err(AuthError::TokenExpired) => {
                let mut error = ErrorBody::new(ErrorCode::TokenExpired, "token expired");
                error.temporary = false;
                return self
                    .refuse(
                        socket,
                        id,
                        error,
                        disconnect(disconnect_code::TOKEN_EXPIRED, "token expired", true, None),
                    )
                    .await;
            }
            Err(err @ AuthError::Unauthorized(_)) => {
                let message = err.to_string();
                return self
                    .refuse(
                        socket,
                        id,
                        ErrorBody::new(ErrorCode::Unauthorized, message.clone()),
                        disconnect(disconnect_code::UNAUTHORIZED, &message, false, None),
                    )
                    .await;
            }
        };
        let config = &self.app.config;
        let too_many = if self.app.hub.ip_count(self.ip) > config.max_connections_per_ip {
            Some("too many connections from this address")
        } else if !self
            .app
            .hub
            .try_add_user(&claims.sub, config.max_connections_per_user)
        {
            Some("too many connections for this user")
        } else {
            None
        };
        if let Some(message) = too_many {
            return self
                .refuse(
                    socket,
                    id,
                    ErrorBody::new(ErrorCode::TooManyConnections, message),
                    disconnect(
                        disconnect_code::TOO_MANY_CONNECTIONS,
                        message,
                        true,
                        Some(5000),
                    ),
                )
                .await;
        }
        let expires_at = claims.exp;
        self.shared.set_expires_at(expires_at);
        let info = claims.info.clone().map(Payload::from);
        tracing::debug!(conn = self.shared.id, user = %claims.sub, "connected");
        // From here on the user is counted; `Drop` uncounts it.
        let client_id = random_id();
        self.session = Some(Box::new(Session {
            client_id: client_id.clone(),
            claims,
            info,
        }));
        // Subscriptions are made before `connected` is written (nothing falls in a gap);
        // `connected` is written directly so it precedes their live publications.
        let mut results = Vec::with_capacity(subs.len());
        for request in subs {
            results.push(self.subscribe(request).await);
        }
        let config = &self.app.config;
        let frame = ServerFrame::Connected {
            id,
            client_id,
            session_id: self.app.session_id.clone(),
            server_time: now_ms(),
            ping_interval_ms: config.ping_interval_ms,
            limits: Limits {
                max_frame_bytes: u32::try_from(config.max_frame_bytes).unwrap_or(u32::MAX),
                max_channels: u32::try_from(config.max_channels).unwrap_or(u32::MAX),
                max_messages_per_second: config.messages_per_second,
            },
            expires_at,
            subs: results,
        };
        self.app.metrics.messages_out.inc();
        if socket.send(text_of(&frame)).await.is_err() {
            return Flow::Close;
        }
        self.shared.set_connected();
        Flow::Continue
    }

    /// Subscribes (idempotently) and computes the result; refusals carry `error`.
    async fn subscribe(&mut self, request: SubscribeRequest) -> SubscribeResult {
        let SubscribeRequest {
            channel,
            recover,
            positions,
            since,
        } = request;
        if let Err(message) = validate_channel(&channel) {
            return refused(channel, ErrorCode::BadRequest, message);
        }
        let allowed = self
            .session
            .as_ref()
            .is_some_and(|s| s.claims.can_subscribe(&channel));
        if !allowed {
            return refused(channel, ErrorCode::Forbidden, "not allowed by the token");
        }
        let new = !self.subs.contains(&channel);
        if new {
            if self.subs.len() >= self.app.config.max_channels {
                let message = format!(
                    "at most {} channels per connection",
                    self.app.config.max_channels
                );
                return refused(channel, ErrorCode::TooManyChannels, message);
            }
            // Registered before history is read, so no publication falls in between.
            self.app.hub.subscribe(self.shared.id, &channel);
            self.subs.insert(channel.clone());
        }
        let server_time = now_ms();
        let engine = &self.app.engine;
        let result = if is_pattern(&channel) {
            let asked = since.is_some() || !positions.is_empty();
            if asked {
                engine
                    .recover_pattern(channel.clone(), positions.into_iter().collect(), since)
                    .await
                    .map(|r| SubscribeResult {
                        channel: channel.clone(),
                        epoch: String::new(),
                        offset: 0,
                        recovered: r.unrecovered.is_empty(),
                        publications: r.publications,
                        unrecovered: r.unrecovered,
                        server_time,
                        error: None,
                    })
            } else {
                Ok(SubscribeResult {
                    channel: channel.clone(),
                    epoch: String::new(),
                    offset: 0,
                    recovered: false,
                    publications: Vec::new(),
                    unrecovered: Vec::new(),
                    server_time,
                    error: None,
                })
            }
        } else {
            engine
                .recover(channel.clone(), recover)
                .await
                .map(|r| SubscribeResult {
                    channel: channel.clone(),
                    epoch: r.epoch,
                    offset: r.offset,
                    recovered: r.recovered,
                    publications: r.publications,
                    unrecovered: Vec::new(),
                    server_time,
                    error: None,
                })
        };
        match result {
            Ok(result) => result,
            Err(err) => {
                tracing::error!(%err, "history read failed");
                if new {
                    self.subs.remove(&channel);
                    self.app.hub.unsubscribe(self.shared.id, &channel);
                }
                refused(channel, ErrorCode::Internal, "history unavailable")
            }
        }
    }

    async fn publish(
        &mut self,
        id: u64,
        channel: String,
        msg_id: String,
        event: String,
        data: Payload,
    ) -> ServerFrame {
        let Some(session) = self.session.as_ref() else {
            return error_frame(Some(id), ErrorCode::NotConnected, "send connect first");
        };
        if let Err(message) = validate_channel(&channel) {
            return error_frame(Some(id), ErrorCode::BadRequest, message);
        }
        if !session.claims.can_publish(&channel) {
            return error_frame(
                Some(id),
                ErrorCode::Forbidden,
                "publishing into this channel is not allowed by the token",
            );
        }
        if let Err(message) = check_ids(&msg_id, &event) {
            return error_frame(Some(id), ErrorCode::BadRequest, message);
        }
        let request = PublishRequest {
            channel,
            msg_id: msg_id.clone(),
            event,
            data,
            publisher: Publisher {
                user: session.claims.sub.clone(),
                client: Some(session.client_id.clone()),
                info: session.info.clone(),
            },
        };
        match self.app.publish(request).await {
            Ok(outcome) => ServerFrame::Ack {
                id,
                msg_id,
                epoch: outcome.epoch,
                offset: outcome.offset,
                duplicate: outcome.duplicate,
            },
            Err(err) => {
                tracing::error!(%err, "publish failed");
                error_frame(Some(id), ErrorCode::Internal, "publish failed")
            }
        }
    }

    fn refresh(&mut self, id: u64, token: Secret) -> ServerFrame {
        let Some(session) = self.session.as_mut() else {
            return error_frame(Some(id), ErrorCode::NotConnected, "send connect first");
        };
        match auth::verify(&self.app.config.jwt_secret, &token.0) {
            Ok(claims) if claims.sub == session.claims.sub => {
                let expires_at = claims.exp;
                session.info = claims.info.clone().map(Payload::from);
                session.claims = claims;
                self.shared.set_expires_at(expires_at);
                ServerFrame::Refreshed { id, expires_at }
            }
            Ok(_) => error_frame(
                Some(id),
                ErrorCode::Unauthorized,
                "the new token is for another user",
            ),
            // `token_expired` tells the client to fetch another token; `unauthorized`
            // that this one will never work.
            Err(err) => error_frame(Some(id), err.code(), err.to_string()),
        }
    }
}

/// Checks a publish's message id and event name.
pub(crate) fn check_ids(msg_id: &str, event: &str) -> Result<(), String> {
    if msg_id.is_empty() || msg_id.len() > MAX_ID_BYTES {
        return Err(format!("msg_id must be 1..={MAX_ID_BYTES} bytes"));
    }
    if event.is_empty() || event.len() > MAX_ID_BYTES {
        return Err(format!("event must be 1..={MAX_ID_BYTES} bytes"));
    }
    Ok(())
}
