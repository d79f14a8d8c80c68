//! The sans-IO client state machine.

use std::collections::VecDeque;

use crate::collections::{SortedMap, SortedSet};
use crate::error::ClientError;
use crate::event::{ConnectionState, Event, MessageStatus, SubscriptionState};
use crate::json::{ObjectWriter, ToJson};
use crate::jwt::peek_claims;
use crate::options::{Options, OutboxFullPolicy};
use crate::outbox::{Outbox, PendingMessage, Slot};
use crate::protocol::{
    is_pattern, pattern_matches, validate_channel, ClientFrame, ClientInfo, ErrorBody, ErrorCode,
    Payload, Publication, ReconnectAdvice, Secret, ServerFrame, StreamPosition, SubscribeRequest,
    SubscribeResult, PROTOCOL_VERSION,
};
use crate::store::{OutboxEntry, PersistId, PersistKind, PersistOp, Snapshot};
use crate::time::Now;

/// Identifies one transport (socket) the core asked a driver to open. Inputs about an
/// older transport are ignored, so a late callback of a dead socket can do no harm.
pub type TransportId = u64;

/// Platform lifecycle changes a driver reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Lifecycle {
    /// The network came back.
    Online,
    /// The network went away.
    Offline,
    /// The app or tab went to the background / froze: timers may stop or be throttled.
    Suspended,
    /// The app woke up, came to the foreground or the tab was resumed.
    Resumed,
}

/// Everything a driver feeds into the core.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The transport asked for by `Output::OpenTransport` is open.
    TransportOpened(TransportId),
    /// The transport closed or could not be opened.
    TransportClosed {
        /// Which transport.
        transport: TransportId,
        /// Why, for logs and the state event.
        reason: String,
    },
    /// A decoded frame arrived on a transport.
    Frame {
        /// Which transport.
        transport: TransportId,
        /// The frame.
        frame: ServerFrame,
    },
    /// The wake-up time returned by `Output::Wake` has come.
    Timeout,
    /// A platform lifecycle change.
    Lifecycle(Lifecycle),
    /// The stored snapshot, fed once at start before `connect()`.
    Restore(Snapshot),
    /// A `Persist` request is durable.
    Persisted(PersistId),
    /// A `Persist` request failed; the client carries on in memory and warns the app.
    PersistFailed {
        /// The request.
        id: PersistId,
        /// What the store said.
        message: String,
    },
    /// Answer to `Output::FetchToken`.
    Token(Result<String, String>),
}

/// What the core asks its driver to do. Drain with [`Client::poll_output`] until `Wake`.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Open a WebSocket to `url`; report `TransportOpened` / `TransportClosed` with this id.
    OpenTransport {
        /// Id for the new transport.
        transport: TransportId,
        /// Where to connect.
        url: String,
    },
    /// Close a transport (the core already considers it gone).
    CloseTransport {
        /// Which transport.
        transport: TransportId,
        /// Why.
        reason: String,
    },
    /// Encode and send a frame on a transport.
    Transmit {
        /// Which transport.
        transport: TransportId,
        /// The frame.
        frame: ClientFrame,
    },
    /// Call the token provider and feed back `Input::Token`.
    FetchToken,
    /// Make a write durable and feed back `Input::Persisted`.
    Persist(PersistOp),
    /// Hand a batch of events to the app, in order.
    Events(Vec<Event>),
    /// Nothing more to do: call `handle_input(Timeout)` at this monotonic time (or never).
    Wake(Option<u64>),
}

/// Counters and gauges for observability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Stats {
    /// Current state name.
    pub state: String,
    /// Smoothed round-trip time (connect, pings, acks), ms.
    pub rtt_ms: Option<u64>,
    /// Reconnects scheduled since start.
    pub reconnects: u64,
    /// Messages in the outbox.
    pub queue_depth: usize,
    /// Subscriptions (channels and patterns) wanted.
    pub subscriptions: usize,
    /// Resubscriptions that recovered everything missed.
    pub recoveries_succeeded: u64,
    /// Resubscriptions that could not recover (the app was told to reload).
    pub recoveries_failed: u64,
    /// Publications delivered to the app.
    pub publications_delivered: u64,
    /// Publications dropped because they were already delivered.
    pub duplicates_dropped: u64,
    /// Publishes acked by the server.
    pub messages_acked: u64,
    /// Server-assigned id of the current connection.
    pub client_id: Option<String>,
    /// Id of the server session (changes when the server restarts).
    pub session_id: Option<String>,
}

/// Every counter by its field name; absent values are `null`.
impl ToJson for Stats {
    fn write_json(&self, out: &mut String) {
        let mut obj = ObjectWriter::new(out);
        obj.str("state", &self.state);
        match self.rtt_ms {
            Some(ms) => obj.u64("rtt_ms", ms),
            None => obj.raw("rtt_ms", "null"),
        };
        obj.u64("reconnects", self.reconnects)
            .u64("queue_depth", self.queue_depth as u64)
            .u64("subscriptions", self.subscriptions as u64)
            .u64("recoveries_succeeded", self.recoveries_succeeded)
            .u64("recoveries_failed", self.recoveries_failed)
            .u64("publications_delivered", self.publications_delivered)
            .u64("duplicates_dropped", self.duplicates_dropped)
            .u64("messages_acked", self.messages_acked);
        for (key, value) in [
            ("client_id", &self.client_id),
            ("session_id", &self.session_id),
        ] {
            match value {
                Some(id) => obj.str(key, id),
                None => obj.raw(key, "null"),
            };
        }
        obj.end();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenPurpose {
    Connect,
    Refresh,
}

#[derive(Debug, Clone, PartialEq)]
enum Link {
    Idle,
    AwaitingToken {
        deadline: u64,
    },
    Opening {
        transport: TransportId,
        deadline: u64,
    },
    Handshaking {
        transport: TransportId,
        connect_id: u64,
        deadline: u64,
        sent_at: u64,
        subs: Vec<String>,
    },
    Live {
        transport: TransportId,
    },
}

#[derive(Debug, Clone)]
enum PendingKind {
    Subscribe(String),
    Unsubscribe,
    Publish(String),
    Ping,
    Refresh,
}

#[derive(Debug, Clone)]
struct Pending {
    kind: PendingKind,
    sent_at: u64,
    deadline: u64,
}

#[derive(Debug)]
struct Subscription {
    state: SubscriptionState,
    /// Command id of the subscribe in flight (or the connect carrying it).
    awaiting: Option<u64>,
    /// Publications that arrived before the subscribe reply.
    buffer: Vec<Publication>,
    /// For patterns: server time the subscription was last known live.
    since: Option<u64>,
    /// After a fresh (non-recovered) subscribe: `(top, last)`. Publications at or below
    /// the reply's top offset may still arrive live (the server registered the
    /// subscription before reading the top, and fan-out can lag); they are delivered
    /// once each, in order, until one above `top` arrives.
    fresh: Option<(u64, u64)>,
}

/// The client state machine. See the crate docs for the driver loop.
#[derive(Debug)]
pub struct Client {
    options: Options,
    rng: fastrand::Rng,
    now: Now,
    /// `wall - mono` at the last input, to notice sleeps.
    clock_offset: Option<i128>,
    scheduled_wake: Option<u64>,

    state: ConnectionState,
    want_connected: bool,
    online: bool,
    suspended: bool,
    link: Link,
    next_transport: TransportId,
    attempt: u32,
    retry_at: Option<u64>,
    connected_at: Option<u64>,

    token: Option<String>,
    token_exp_ms: Option<u64>,
    token_request: Option<TokenPurpose>,
    expired_retry_used: bool,
    refresh_at: Option<u64>,
    user: Option<String>,

    next_command: u64,
    pending: SortedMap<u64, Pending>,
    last_received: u64,
    ping_interval_ms: u64,
    max_frame_bytes: usize,
    max_channels: usize,
    liveness_deadline: Option<u64>,
    last_rtt_sample: Option<u64>,

    subs: SortedMap<String, Subscription>,
    positions: SortedMap<String, StreamPosition>,
    dirty_positions: SortedSet<String>,
    dirty_patterns: SortedSet<String>,
    restored_since: SortedMap<String, u64>,
    /// When to retry subscriptions refused with a temporary error.
    resubscribe_at: Option<u64>,

    outbox: Outbox,
    hold_sends_until: Option<u64>,
    slow_start: bool,
    next_persist: PersistId,

    outputs: VecDeque<Output>,
    events: Vec<Event>,
    batch_deadline: Option<u64>,
    stats: Stats,
}

const MAX_EVENT_NAME: usize = 128;
/// Longest message id a caller may choose (the server's limit).
const MAX_MESSAGE_ID: usize = 128;
/// Pause before asking the token provider again after it failed during a refresh.
const TOKEN_RETRY_MS: u64 = 5_000;

impl Client {
    /// A new client. `seed` feeds the jitter and message-id generator: pass a random value
    /// (a fixed one in tests).
    pub fn new(options: Options, seed: u64) -> Self {
        let token = options.token.clone();
        let user = options.effective_user();
        let mut client = Self {
            ping_interval_ms: options.ping_interval_ms,
            max_frame_bytes: options.max_frame_bytes,
            max_channels: options.max_channels,
            options,
            rng: fastrand::Rng::with_seed(seed),
            now: Now::default(),
            clock_offset: None,
            scheduled_wake: None,
            state: ConnectionState::Disconnected,
            want_connected: false,
            online: true,
            suspended: false,
            link: Link::Idle,
            next_transport: 1,
            attempt: 0,
            retry_at: None,
            connected_at: None,
            token: None,
            token_exp_ms: None,
            token_request: None,
            expired_retry_used: false,
            refresh_at: None,
            user,
            next_command: 1,
            pending: SortedMap::new(),
            last_received: 0,
            liveness_deadline: None,
            last_rtt_sample: None,
            subs: SortedMap::new(),
            positions: SortedMap::new(),
            dirty_positions: SortedSet::new(),
            dirty_patterns: SortedSet::new(),
            restored_since: SortedMap::new(),
            resubscribe_at: None,
            outbox: Outbox::default(),
            hold_sends_until: None,
            slow_start: false,
            next_persist: 1,
            outputs: VecDeque::new(),
            events: Vec::new(),
            batch_deadline: None,
            stats: Stats::default(),
        };
        if let Some(token) = token {
            // Refreshes are scheduled once connected, when the clocks are known.
            client.adopt_token(token);
        }
        client
    }

    /// The options this client runs with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The current connection state.
    pub fn state(&self) -> &ConnectionState {
        &self.state
    }

    /// A subscription's state, if it is wanted.
    pub fn subscription_state(&self, channel: &str) -> Option<&SubscriptionState> {
        self.subs.get(channel).map(|s| &s.state)
    }

    /// Last position seen per concrete channel.
    pub fn positions(&self) -> &SortedMap<String, StreamPosition> {
        &self.positions
    }

    /// The outbox: every message not yet acked or failed, oldest first.
    pub fn outbox(&self) -> Vec<PendingMessage> {
        self.outbox.view()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.state = self.state.name().into();
        stats.queue_depth = self.outbox.len();
        stats.subscriptions = self.subs.len();
        stats
    }

    // ----------------------------------------------------------------- app commands

    /// Start connecting (also restarts a client that failed or gave up).
    pub fn connect(&mut self, now: Now) {
        self.begin(now);
        self.want_connected = true;
        if matches!(self.link, Link::Idle) {
            self.attempt = 0;
            self.retry_at = None;
            self.set_state(ConnectionState::Connecting, "connect_called");
            self.start_attempt();
        }
    }

    /// Close the connection and stop reconnecting. Subscriptions and the outbox are kept
    /// and resume on the next `connect()`.
    pub fn disconnect(&mut self, now: Now) {
        self.begin(now);
        self.want_connected = false;
        self.drop_link("disconnect_called");
        self.retry_at = None;
        self.set_state(ConnectionState::Disconnected, "disconnect_called");
    }

    /// Log out: disconnect, fail every queued message with `cancelled`, forget every
    /// subscription and position, and ask the store to wipe this namespace.
    pub fn clear(&mut self, now: Now) {
        self.begin(now);
        self.disconnect(now);
        let slots: Vec<Slot> = self.outbox.drain().collect();
        for slot in slots {
            self.push_event(Event::Message {
                msg_id: slot.entry.msg_id,
                channel: slot.entry.channel,
                status: MessageStatus::Failed {
                    error: ClientError::Cancelled,
                },
            });
        }
        let channels: Vec<String> = self.subs.keys().cloned().collect();
        for channel in channels {
            self.subs.remove(&channel);
            self.push_event(Event::Subscription {
                channel,
                state: SubscriptionState::Unsubscribed,
            });
        }
        self.positions.clear();
        self.restored_since.clear();
        self.dirty_positions.clear();
        self.dirty_patterns.clear();
        self.token = None;
        self.token_exp_ms = None;
        self.refresh_at = None;
        self.persist(PersistKind::Clear);
    }

    /// Replace the token (e.g. after the app signed in again). Used at the next connect;
    /// on a live connection it is sent with `refresh`.
    pub fn set_token(&mut self, token: String) {
        self.adopt_token(token);
        self.schedule_refresh();
        if let Link::Live { .. } = self.link {
            self.send_refresh();
        }
    }

    /// Subscribe to a channel, or to a pattern ending in `*`. Works offline: the
    /// subscription is made (and recovered) when connected.
    pub fn subscribe(&mut self, now: Now, channel: &str) -> Result<(), ClientError> {
        self.begin(now);
        validate_channel(channel).map_err(|reason| ClientError::InvalidChannel {
            name: channel.into(),
            reason,
        })?;
        if let Some(sub) = self.subs.get(channel) {
            if !matches!(sub.state, SubscriptionState::Failed { .. }) {
                return Ok(());
            }
        } else if self.subs.len() >= self.max_channels {
            return Err(ClientError::TooManyChannels(self.max_channels));
        }
        let since = self.restored_since.get(channel).copied();
        self.subs.insert(
            channel.to_owned(),
            Subscription {
                state: SubscriptionState::Subscribing,
                awaiting: None,
                buffer: Vec::new(),
                since,
                fresh: None,
            },
        );
        self.push_event(Event::Subscription {
            channel: channel.into(),
            state: SubscriptionState::Subscribing,
        });
        if let Link::Live { .. } = self.link {
            self.send_subscribe(channel);
        }
        Ok(())
    }

    /// Stop receiving a channel or pattern and forget its position.
    pub fn unsubscribe(&mut self, now: Now, channel: &str) {
        self.begin(now);
        if self.subs.remove(channel).is_none() {
            return;
        }
        self.push_event(Event::Subscription {
            channel: channel.into(),
            state: SubscriptionState::Unsubscribed,
        });
        if is_pattern(channel) {
            self.restored_since.remove(channel);
        } else if self.positions.remove(channel).is_some() {
            self.dirty_positions.remove(channel);
            self.persist(PersistKind::RemovePosition {
                channel: channel.into(),
            });
        }
        if let Link::Live { .. } = self.link {
            let id = self.command_id();
            self.track(id, PendingKind::Unsubscribe);
            self.transmit(ClientFrame::Unsubscribe {
                id,
                channel: channel.into(),
            });
        }
    }

    /// Queue a message for `channel`. Returns its client message id at once; follow it
    /// with `Event::Message`. It is sent once the store confirmed it durable, retried
    /// across reconnects until acked (the server dedupes by id), and fails after the
    /// outbox TTL.
    pub fn publish(
        &mut self,
        now: Now,
        channel: &str,
        event: &str,
        data: Payload,
    ) -> Result<String, ClientError> {
        self.publish_with_id(now, channel, event, data, None)
    }

    /// [`Client::publish`] with a message id chosen by the caller (1..=128 printable ASCII
    /// bytes; `None`: a new one), the server's idempotency key. A caller that may hand the
    /// same message to more than one client (tabs sharing one socket: a follower's publish
    /// retried through the next leader) keeps its id, so the server stores it once. An id
    /// already in the outbox for the same channel is not queued again: its current status
    /// is reported once more as an `Event::Message`.
    pub fn publish_with_id(
        &mut self,
        now: Now,
        channel: &str,
        event: &str,
        data: Payload,
        chosen_id: Option<&str>,
    ) -> Result<String, ClientError> {
        self.begin(now);
        validate_channel(channel).map_err(|reason| ClientError::InvalidChannel {
            name: channel.into(),
            reason,
        })?;
        if is_pattern(channel) {
            return Err(ClientError::PublishToPattern(channel.into()));
        }
        if event.is_empty() || event.len() > MAX_EVENT_NAME {
            return Err(ClientError::InvalidEvent);
        }
        let msg_id = match chosen_id {
            None => self.new_message_id(),
            Some(id) => {
                if id.is_empty()
                    || id.len() > MAX_MESSAGE_ID
                    || !id.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(ClientError::InvalidMessageId(
                        "must be 1..=128 printable ASCII bytes",
                    ));
                }
                let queued = self
                    .outbox
                    .get_mut(id)
                    .map(|slot| (slot.entry.channel == channel, slot.status.clone()));
                if let Some((same_channel, status)) = queued {
                    if !same_channel {
                        return Err(ClientError::InvalidMessageId(
                            "already queued for another channel",
                        ));
                    }
                    self.push_event(Event::Message {
                        msg_id: id.into(),
                        channel: channel.into(),
                        status,
                    });
                    return Ok(id.into());
                }
                id.into()
            }
        };
        let frame = ClientFrame::Publish {
            id: u64::MAX,
            channel: channel.into(),
            msg_id: msg_id.clone(),
            event: event.into(),
            data,
        };
        let size = frame.to_json().len();
        if size > self.max_frame_bytes {
            return Err(ClientError::FrameTooLarge {
                size,
                limit: self.max_frame_bytes,
            });
        }
        let ClientFrame::Publish { data, .. } = frame else {
            unreachable!("built above")
        };
        if self.outbox.len() >= self.options.outbox.max_messages {
            match self.options.outbox.full_policy {
                OutboxFullPolicy::RejectNew => {
                    return Err(ClientError::OutboxFull(self.outbox.len()))
                }
                OutboxFullPolicy::DropOldest => match self.outbox.oldest_unsent() {
                    Some(oldest) => self.fail_message(&oldest, ClientError::Overflow),
                    None => return Err(ClientError::OutboxFull(self.outbox.len())),
                },
            }
        }
        let entry = OutboxEntry {
            msg_id: msg_id.clone(),
            channel: channel.into(),
            event: event.into(),
            data,
            created_at_ms: now.wall_ms,
            user: self.user.clone(),
        };
        let persist_id = self.persist(PersistKind::PutMessage {
            entry: entry.clone(),
        });
        self.outbox.push(Slot {
            entry,
            status: MessageStatus::Persisting,
            persist_id: Some(persist_id),
        });
        self.push_event(Event::Message {
            msg_id: msg_id.clone(),
            channel: channel.into(),
            status: MessageStatus::Persisting,
        });
        Ok(msg_id)
    }

    /// Cancel a message that has not been sent yet.
    pub fn cancel(&mut self, now: Now, msg_id: &str) -> Result<(), ClientError> {
        self.begin(now);
        let slot = self
            .outbox
            .get_mut(msg_id)
            .ok_or_else(|| ClientError::UnknownMessage(msg_id.into()))?;
        if matches!(slot.status, MessageStatus::Sent) {
            return Err(ClientError::NotCancellable(msg_id.into()));
        }
        self.fail_message(msg_id, ClientError::Cancelled);
        Ok(())
    }

    // ----------------------------------------------------------------- inputs

    /// Feed one input. Then drain [`Client::poll_output`].
    pub fn handle_input(&mut self, now: Now, input: Input) {
        self.begin(now);
        match input {
            Input::TransportOpened(transport) => self.on_transport_opened(transport),
            Input::TransportClosed { transport, reason } => {
                if self.current_transport() == Some(transport) {
                    log::info!("transport {transport} closed: {reason}");
                    self.connection_lost("transport_closed", None);
                }
            }
            Input::Frame { transport, frame } => {
                if self.current_transport() == Some(transport) {
                    self.on_frame(frame);
                }
            }
            Input::Timeout => self.on_timeout(),
            Input::Lifecycle(change) => self.on_lifecycle(change),
            Input::Restore(snapshot) => self.restore(snapshot),
            Input::Persisted(id) => self.on_persisted(id),
            Input::PersistFailed { id, message } => {
                log::warn!("store write {id} failed: {message}");
                self.push_event(Event::StoreWarning {
                    message: format!("store write failed, continuing in memory: {message}"),
                });
                self.on_persisted(id);
            }
            Input::Token(result) => self.on_token(result),
        }
    }

    /// The next thing for the driver to do. Ends each drain with `Output::Wake`.
    pub fn poll_output(&mut self) -> Output {
        if let Some(output) = self.outputs.pop_front() {
            return output;
        }
        if let Some(channel) = self.dirty_positions.pop_first() {
            if let Some(position) = self.positions.get(&channel).cloned() {
                let id = self.next_persist_id();
                return Output::Persist(PersistOp {
                    id,
                    kind: PersistKind::PutPosition { channel, position },
                });
            }
        }
        if let Some(pattern) = self.dirty_patterns.pop_first() {
            if let Some(since) = self.subs.get(&pattern).and_then(|s| s.since) {
                let id = self.next_persist_id();
                return Output::Persist(PersistOp {
                    id,
                    kind: PersistKind::PutPatternSince { pattern, since },
                });
            }
        }
        if !self.events.is_empty()
            && self
                .batch_deadline
                .is_none_or(|deadline| self.now.mono_ms >= deadline)
        {
            self.batch_deadline = None;
            return Output::Events(std::mem::take(&mut self.events));
        }
        let wake = self.next_wake();
        self.scheduled_wake = wake;
        Output::Wake(wake)
    }

    // ----------------------------------------------------------------- internals: time

    fn begin(&mut self, now: Now) {
        let now = Now {
            mono_ms: now.mono_ms.max(self.now.mono_ms),
            wall_ms: now.wall_ms,
        };
        let offset = now.wall_ms as i128 - now.mono_ms as i128;
        let jumped = self.clock_offset.is_some_and(|previous| {
            (offset - previous).unsigned_abs() > self.options.clock_jump_ms as u128
        });
        self.clock_offset = Some(offset);
        self.now = now;
        if jumped {
            log::info!("clock jump detected (sleep or throttled timers)");
            self.check_liveness();
        }
    }

    fn next_wake(&self) -> Option<u64> {
        let mut wake: Option<u64> = None;
        let mut consider = |t: Option<u64>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        match &self.link {
            Link::Idle => consider(self.retry_at),
            Link::AwaitingToken { deadline }
            | Link::Opening { deadline, .. }
            | Link::Handshaking { deadline, .. } => consider(Some(*deadline)),
            Link::Live { .. } => {
                if self.liveness_deadline.is_some() {
                    // A liveness check decides; older deadlines that already passed
                    // (which is why it was started) must not wake us in a loop.
                    consider(self.liveness_deadline);
                } else {
                    if !self.suspended {
                        consider(Some(self.heartbeat_deadline()));
                    }
                    consider(self.pending.values().map(|p| p.deadline).min());
                }
                consider(self.resubscribe_at);
                consider(self.refresh_at);
                if self.outbox.has_queued() {
                    consider(self.hold_sends_until);
                }
            }
        }
        consider(self.next_expiry());
        consider(self.batch_deadline.filter(|_| !self.events.is_empty()));
        wake
    }

    fn heartbeat_deadline(&self) -> u64 {
        self.last_received + self.ping_interval_ms + self.options.heartbeat_grace_ms
    }

    fn next_expiry(&self) -> Option<u64> {
        let ttl = self.options.outbox.ttl_ms;
        self.outbox
            .iter()
            .filter(|s| !matches!(s.status, MessageStatus::Sent))
            .map(|s| s.entry.created_at_ms.saturating_add(ttl))
            .min()
            .map(|expires_wall| {
                let in_ms = expires_wall.saturating_sub(self.now.wall_ms);
                self.now.mono_ms + in_ms
            })
    }

    fn on_timeout(&mut self) {
        let now = self.now.mono_ms;
        let late = self
            .scheduled_wake
            .is_some_and(|w| now.saturating_sub(w) > self.options.clock_jump_ms);
        match self.link.clone() {
            Link::Idle => {
                if self.retry_at.is_some_and(|t| now >= t) && self.want_connected {
                    self.retry_at = None;
                    self.start_attempt();
                }
            }
            Link::AwaitingToken { deadline }
            | Link::Opening { deadline, .. }
            | Link::Handshaking { deadline, .. } => {
                if now >= deadline {
                    self.connection_lost("connect_timeout", None);
                }
            }
            Link::Live { .. } => {
                if self.liveness_deadline.is_some_and(|d| now >= d) {
                    self.connection_lost("liveness_timeout", None);
                } else if !self.suspended && now >= self.heartbeat_deadline() {
                    if late {
                        self.check_liveness();
                    } else {
                        self.connection_lost("heartbeat_timeout", None);
                    }
                } else if self.pending.values().any(|p| now >= p.deadline) {
                    if late {
                        self.check_liveness();
                    } else {
                        self.connection_lost("command_timeout", None);
                    }
                }
            }
        }
        if let Link::Live { .. } = self.link {
            if self.refresh_at.is_some_and(|t| now >= t) {
                self.refresh_at = None;
                if self.options.token_provider {
                    self.request_token(TokenPurpose::Refresh);
                }
            }
            if self.hold_sends_until.is_some_and(|t| now >= t) {
                self.hold_sends_until = None;
                self.flush_outbox();
            }
            if self.resubscribe_at.is_some_and(|t| now >= t) {
                self.resubscribe_at = None;
                for name in self.unsent_subscriptions() {
                    self.send_subscribe(&name);
                }
            }
        }
        self.expire_messages();
    }

    // ----------------------------------------------------------------- internals: link

    fn current_transport(&self) -> Option<TransportId> {
        match &self.link {
            Link::Opening { transport, .. }
            | Link::Handshaking { transport, .. }
            | Link::Live { transport } => Some(*transport),
            Link::Idle | Link::AwaitingToken { .. } => None,
        }
    }

    fn token_usable(&self) -> bool {
        match (&self.token, self.token_exp_ms) {
            (None, _) => false,
            (Some(_), Some(exp)) if self.options.token_provider => exp > self.now.wall_ms + 1_000,
            (Some(_), _) => true,
        }
    }

    fn start_attempt(&mut self) {
        if !self.online {
            self.link = Link::Idle;
            return;
        }
        if !self.token_usable() {
            if self.options.token_provider {
                self.link = Link::AwaitingToken {
                    deadline: self.now.mono_ms + self.options.connect_timeout_ms,
                };
                self.request_token(TokenPurpose::Connect);
                return;
            }
            if self.token.is_none() {
                self.fail("unauthorized", "no token: set `token` or a token provider");
                return;
            }
        }
        let transport = self.next_transport;
        self.next_transport += 1;
        self.link = Link::Opening {
            transport,
            deadline: self.now.mono_ms + self.options.connect_timeout_ms,
        };
        self.outputs.push_back(Output::OpenTransport {
            transport,
            url: self.options.url.clone(),
        });
    }

    fn on_transport_opened(&mut self, transport: TransportId) {
        let Link::Opening {
            transport: t,
            deadline,
        } = self.link.clone()
        else {
            return;
        };
        if t != transport {
            return;
        }
        let Some(token) = self.token.clone() else {
            self.connection_lost("no_token", None);
            return;
        };
        let connect_id = self.command_id();
        let mut names = Vec::new();
        let mut requests = Vec::new();
        let wanted: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| !matches!(s.state, SubscriptionState::Failed { .. }))
            .map(|(name, _)| name.clone())
            .collect();
        // Subscriptions ride on `connect` while the frame stays under the frame limit (a
        // larger one would be refused and the handshake would never finish); the others
        // stay unsent and go out as `subscribe` frames once connected.
        let client = ClientInfo {
            name: self.options.client_name.clone(),
            version: self.options.client_version.clone(),
        };
        let bare = ClientFrame::Connect {
            id: connect_id,
            version: PROTOCOL_VERSION,
            token: Secret(token),
            client,
            subs: Vec::new(),
        };
        let mut room = self
            .max_frame_bytes
            .saturating_sub(bare.to_json().len() + "\"subs\":[],".len());
        for name in wanted {
            let request = self.subscribe_request(&name);
            let size = request.to_json().len() + 1;
            if size > room {
                continue;
            }
            room -= size;
            requests.push(request);
            if let Some(sub) = self.subs.get_mut(&name) {
                sub.awaiting = Some(connect_id);
            }
            names.push(name);
        }
        self.link = Link::Handshaking {
            transport,
            connect_id,
            deadline,
            sent_at: self.now.mono_ms,
            subs: names,
        };
        self.last_received = self.now.mono_ms;
        let mut frame = bare;
        if let ClientFrame::Connect { subs, .. } = &mut frame {
            *subs = requests;
        }
        self.outputs
            .push_back(Output::Transmit { transport, frame });
    }

    /// Closes the current transport (if any) and forgets in-flight commands.
    fn drop_link(&mut self, reason: &str) {
        if let Some(transport) = self.current_transport() {
            self.outputs.push_back(Output::CloseTransport {
                transport,
                reason: reason.into(),
            });
        }
        self.link = Link::Idle;
        self.liveness_deadline = None;
        self.token_request = None;
        self.refresh_at = None;
        self.hold_sends_until = None;
        self.resubscribe_at = None;
        let pending = std::mem::take(&mut self.pending);
        for (_, p) in pending {
            if let PendingKind::Publish(msg_id) = p.kind {
                self.set_message_status(&msg_id, MessageStatus::Queued);
            }
        }
        let channels: Vec<String> = self.subs.keys().cloned().collect();
        for channel in channels {
            let Some(sub) = self.subs.get_mut(&channel) else {
                continue;
            };
            sub.awaiting = None;
            sub.buffer.clear();
            sub.fresh = None;
            if matches!(sub.state, SubscriptionState::Subscribed) {
                sub.state = SubscriptionState::Subscribing;
                self.push_event(Event::Subscription {
                    channel,
                    state: SubscriptionState::Subscribing,
                });
            }
        }
    }

    fn connection_lost(&mut self, reason: &str, advice: Option<ReconnectAdvice>) {
        self.drop_link(reason);
        if !self.want_connected {
            self.set_state(ConnectionState::Disconnected, reason);
            return;
        }
        let not_before = match advice {
            Some(ReconnectAdvice {
                reconnect: false, ..
            }) => {
                self.fail(
                    "server_refused",
                    &format!(
                        "server closed the connection ({reason}) and advised not to reconnect"
                    ),
                );
                return;
            }
            Some(ReconnectAdvice { not_before_ms, .. }) => not_before_ms.unwrap_or(0),
            None => 0,
        };
        self.schedule_reconnect(reason, not_before);
    }

    fn schedule_reconnect(&mut self, reason: &str, not_before_ms: u64) {
        let now = self.now.mono_ms;
        if let Some(at) = self.connected_at.take() {
            if now.saturating_sub(at) >= self.options.reconnect.reset_after_ms {
                self.attempt = 0;
            }
        }
        self.stats.reconnects += 1;
        if !self.online {
            self.retry_at = None;
            self.set_state(
                ConnectionState::Reconnecting {
                    attempt: self.attempt + 1,
                    retry_in_ms: None,
                },
                reason,
            );
            return;
        }
        self.attempt += 1;
        if self
            .options
            .reconnect
            .max_attempts
            .is_some_and(|max| self.attempt > max)
        {
            let attempts = self.attempt - 1;
            self.fail(
                "gave_up",
                &format!(
                    "gave up after {attempts} reconnect attempts; call connect() to try again"
                ),
            );
            return;
        }
        let delay = self
            .options
            .reconnect
            .delay_ms(self.attempt, &mut self.rng)
            .max(not_before_ms);
        self.retry_at = Some(now + delay);
        self.set_state(
            ConnectionState::Reconnecting {
                attempt: self.attempt,
                retry_in_ms: Some(delay),
            },
            reason,
        );
    }

    fn fail(&mut self, code: &str, message: &str) {
        self.drop_link(code);
        self.retry_at = None;
        self.set_state(
            ConnectionState::Failed {
                code: code.into(),
                message: message.into(),
            },
            code,
        );
    }

    fn set_state(&mut self, new: ConnectionState, reason: &str) {
        if self.state == new {
            return;
        }
        let old = std::mem::replace(&mut self.state, new.clone());
        log::debug!("state {} -> {} ({reason})", old.name(), new.name());
        self.push_event(Event::State {
            old,
            new,
            reason: reason.into(),
        });
    }

    fn check_liveness(&mut self) {
        if !matches!(self.link, Link::Live { .. }) || self.liveness_deadline.is_some() {
            return;
        }
        let id = self.command_id();
        self.track(id, PendingKind::Ping);
        self.liveness_deadline = Some(self.now.mono_ms + self.options.liveness_timeout_ms);
        self.transmit(ClientFrame::Ping { id });
    }

    fn on_lifecycle(&mut self, change: Lifecycle) {
        match change {
            Lifecycle::Offline => {
                self.online = false;
                match self.link {
                    Link::Live { .. } => self.check_liveness(),
                    Link::Idle if matches!(self.state, ConnectionState::Reconnecting { .. }) => {
                        self.retry_at = None;
                        self.set_state(
                            ConnectionState::Reconnecting {
                                attempt: self.attempt + 1,
                                retry_in_ms: None,
                            },
                            "offline",
                        );
                    }
                    _ => {}
                }
            }
            Lifecycle::Suspended => self.suspended = true,
            Lifecycle::Online | Lifecycle::Resumed => {
                let reason = if change == Lifecycle::Online {
                    self.online = true;
                    "online"
                } else {
                    self.suspended = false;
                    "resumed"
                };
                match &self.link {
                    Link::Live { .. } => {
                        self.last_received = self
                            .last_received
                            .max(self.now.mono_ms.saturating_sub(self.ping_interval_ms));
                        self.check_liveness();
                    }
                    Link::Idle if self.want_connected => {
                        let gave_up = matches!(&self.state, ConnectionState::Failed { code, .. } if code == "gave_up");
                        let waiting = matches!(
                            self.state,
                            ConnectionState::Reconnecting { .. } | ConnectionState::Connecting
                        );
                        if waiting || gave_up {
                            // A network change or wake-up is the best moment to retry:
                            // start now, with a fresh backoff.
                            self.attempt = 0;
                            self.retry_at = None;
                            self.set_state(ConnectionState::Connecting, reason);
                            self.start_attempt();
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    // ----------------------------------------------------------------- internals: token

    fn request_token(&mut self, purpose: TokenPurpose) {
        if self.token_request.is_none() {
            self.outputs.push_back(Output::FetchToken);
        }
        self.token_request = Some(purpose);
    }

    fn on_token(&mut self, result: Result<String, String>) {
        let Some(purpose) = self.token_request.take() else {
            if let Ok(token) = result {
                self.set_token(token);
            }
            return;
        };
        match result {
            Ok(token) => {
                self.adopt_token(token);
                match (purpose, &self.link) {
                    (TokenPurpose::Connect, Link::AwaitingToken { .. }) => {
                        self.link = Link::Idle;
                        if self.token_usable() {
                            self.start_attempt();
                        } else {
                            self.push_event(Event::Error {
                                error: ClientError::TokenProvider(
                                    "provider returned an expired token".into(),
                                ),
                            });
                            self.connection_lost("token_error", None);
                        }
                    }
                    (TokenPurpose::Refresh, Link::Live { .. }) => {
                        self.send_refresh();
                        self.schedule_refresh();
                    }
                    _ => {}
                }
            }
            Err(message) => {
                log::warn!("token provider failed: {message}");
                self.push_event(Event::Error {
                    error: ClientError::TokenProvider(message),
                });
                match purpose {
                    TokenPurpose::Connect => self.connection_lost("token_error", None),
                    // Try again shortly; the server disconnects only once `exp` passes.
                    TokenPurpose::Refresh => {
                        self.refresh_at = Some(self.now.mono_ms + TOKEN_RETRY_MS);
                    }
                }
            }
        }
    }

    /// Takes a token's expiry and (unless `Options::user` is set) its user.
    fn adopt_token(&mut self, token: String) {
        let claims = peek_claims(&token);
        self.token_exp_ms = claims.exp.map(|s| s.saturating_mul(1000));
        if self.options.user.is_none() {
            if let Some(sub) = claims.sub {
                self.user = Some(sub);
            }
        }
        self.token = Some(token);
    }

    fn schedule_refresh(&mut self) {
        self.refresh_at = self.token_exp_ms.map(|exp| {
            let remaining = exp.saturating_sub(self.now.wall_ms);
            let margin = self.options.token_refresh_margin_ms.min(remaining / 2);
            self.now.mono_ms + remaining.saturating_sub(margin)
        });
    }

    fn send_refresh(&mut self) {
        let Some(token) = self.token.clone() else {
            return;
        };
        let id = self.command_id();
        self.track(id, PendingKind::Refresh);
        self.transmit(ClientFrame::Refresh {
            id,
            token: Secret(token),
        });
    }

    // ----------------------------------------------------------------- internals: frames

    fn on_frame(&mut self, frame: ServerFrame) {
        self.last_received = self.now.mono_ms;
        self.liveness_deadline = None;
        match frame {
            ServerFrame::Connected {
                id,
                client_id,
                session_id,
                ping_interval_ms,
                limits,
                subs,
                ..
            } => self.on_connected(
                id,
                client_id,
                session_id,
                ping_interval_ms,
                limits.max_frame_bytes as usize,
                limits.max_channels as usize,
                subs,
            ),
            ServerFrame::Subscribed { id, result } => {
                if let Some(Pending {
                    kind: PendingKind::Subscribe(channel),
                    ..
                }) = self.pending.remove(&id)
                {
                    let awaited = self.subs.get(&channel).and_then(|s| s.awaiting) == Some(id);
                    if awaited {
                        self.on_subscribe_result(&channel, result);
                    }
                }
            }
            ServerFrame::Unsubscribed { id, channel } => match id {
                Some(id) => {
                    self.pending.remove(&id);
                }
                None => {
                    if self.subs.remove(&channel).is_some() {
                        self.push_event(Event::Subscription {
                            channel,
                            state: SubscriptionState::Unsubscribed,
                        });
                    }
                }
            },
            ServerFrame::Ack {
                id,
                msg_id,
                epoch,
                offset,
                ..
            } => {
                if let Some(p) = self.pending.remove(&id) {
                    self.rtt_sample(p.sent_at);
                }
                self.slow_start = false;
                if let Some(slot) = self.outbox.remove(&msg_id) {
                    self.stats.messages_acked += 1;
                    self.persist(PersistKind::RemoveMessage {
                        msg_id: msg_id.clone(),
                    });
                    self.emit_message(
                        &msg_id,
                        slot.entry.channel,
                        MessageStatus::Acked { epoch, offset },
                    );
                }
                self.flush_outbox();
            }
            ServerFrame::Publication(publication) => self.route_publication(publication),
            ServerFrame::Ping { id } => {
                self.transmit(ClientFrame::Pong { id });
                let stale = self
                    .last_rtt_sample
                    .is_none_or(|t| self.now.mono_ms.saturating_sub(t) >= self.ping_interval_ms);
                if stale && self.liveness_deadline.is_none() {
                    let id = self.command_id();
                    self.track(id, PendingKind::Ping);
                    self.transmit(ClientFrame::Ping { id });
                }
            }
            ServerFrame::Pong { id } => {
                if let Some(p) = self.pending.remove(&id) {
                    self.rtt_sample(p.sent_at);
                }
            }
            ServerFrame::Refreshed { id, .. } => {
                self.pending.remove(&id);
            }
            ServerFrame::Error { id, error } => self.on_error(id, error),
            ServerFrame::Disconnect {
                code,
                reason,
                advice,
            } => {
                log::info!("server disconnect {code}: {reason}");
                if code == crate::protocol::disconnect_code::TOKEN_EXPIRED {
                    if self.options.token_provider {
                        self.token_exp_ms = Some(0);
                    } else {
                        self.fail(
                            "token_expired",
                            "the token expired and no token provider is set",
                        );
                        return;
                    }
                }
                if !advice.reconnect && code == crate::protocol::disconnect_code::UNAUTHORIZED {
                    self.fail("unauthorized", &reason);
                    return;
                }
                self.connection_lost(&format!("server_disconnect:{code}"), Some(advice));
            }
            ServerFrame::Unknown => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_connected(
        &mut self,
        id: u64,
        client_id: String,
        session_id: String,
        ping_interval_ms: u64,
        max_frame_bytes: usize,
        max_channels: usize,
        results: Vec<SubscribeResult>,
    ) {
        let Link::Handshaking {
            transport,
            connect_id,
            sent_at,
            subs,
            ..
        } = self.link.clone()
        else {
            return;
        };
        if id != connect_id {
            return;
        }
        self.link = Link::Live { transport };
        self.connected_at = Some(self.now.mono_ms);
        self.expired_retry_used = false;
        if ping_interval_ms > 0 {
            self.ping_interval_ms = ping_interval_ms;
        }
        if max_frame_bytes > 0 {
            self.max_frame_bytes = max_frame_bytes;
        }
        if max_channels > 0 {
            self.max_channels = max_channels;
        }
        self.rtt_sample(sent_at);
        self.stats.client_id = Some(client_id);
        self.stats.session_id = Some(session_id);
        self.set_state(ConnectionState::Connected, "connected");
        self.schedule_refresh();
        let added_during_handshake = self.unsent_subscriptions();
        for (name, result) in subs.iter().zip(results) {
            if self.subs.get(name).and_then(|s| s.awaiting) == Some(connect_id) {
                self.on_subscribe_result(name, result);
            }
        }
        // Subscriptions added while handshaking were not part of `connect`.
        for name in added_during_handshake {
            self.send_subscribe(&name);
        }
        self.flush_outbox();
    }

    fn on_error(&mut self, id: Option<u64>, error: ErrorBody) {
        let Some(id) = id else {
            log::warn!("server error {}: {}", error.code, error.message);
            self.push_event(Event::Error {
                error: error.into(),
            });
            return;
        };
        if let Link::Handshaking { connect_id, .. } = self.link {
            if connect_id == id {
                self.on_connect_error(error);
                return;
            }
        }
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match pending.kind {
            PendingKind::Subscribe(channel) => {
                if self.subs.get(&channel).and_then(|s| s.awaiting) == Some(id) {
                    self.on_subscribe_failed(&channel, error);
                }
            }
            PendingKind::Publish(msg_id) => self.on_publish_error(&msg_id, error),
            PendingKind::Ping | PendingKind::Unsubscribe => {}
            PendingKind::Refresh => {
                // The connection keeps its previous token. A provider that handed out an
                // already expired token is asked again shortly, before the server's
                // disconnect at `exp`; a refused (`unauthorized`) one is not.
                if error.code == ErrorCode::TokenExpired && self.options.token_provider {
                    self.refresh_at = Some(self.now.mono_ms + TOKEN_RETRY_MS);
                }
                self.push_event(Event::Error {
                    error: error.into(),
                });
            }
        }
    }

    fn on_connect_error(&mut self, error: ErrorBody) {
        log::warn!("connect refused: {} {}", error.code, error.message);
        match error.code {
            ErrorCode::Unauthorized => self.fail("unauthorized", &error.message),
            ErrorCode::TokenExpired => {
                if self.options.token_provider && !self.expired_retry_used {
                    // One fresh token and one more try, not counted as a reconnect attempt.
                    self.expired_retry_used = true;
                    self.token_exp_ms = Some(0);
                    self.drop_link("token_expired");
                    self.start_attempt();
                } else {
                    self.fail("token_expired", &error.message);
                }
            }
            ErrorCode::UnsupportedVersion => self.fail("unsupported_version", &error.message),
            _ if error.temporary => {
                // The server follows with `disconnect` carrying its advice; wait for it.
                self.push_event(Event::Error {
                    error: error.into(),
                });
            }
            _ => {
                let message = error.message.clone();
                self.push_event(Event::Error {
                    error: error.into(),
                });
                self.fail("server_refused", &message);
            }
        }
    }

    // ----------------------------------------------------------------- internals: subscriptions

    fn subscribe_request(&self, channel: &str) -> SubscribeRequest {
        if is_pattern(channel) {
            SubscribeRequest {
                channel: channel.into(),
                recover: None,
                positions: self
                    .positions
                    .iter()
                    .filter(|(c, _)| pattern_matches(channel, c))
                    .map(|(c, p)| (c.clone(), p.clone()))
                    .collect(),
                since: self.subs.get(channel).and_then(|s| s.since),
            }
        } else {
            SubscribeRequest {
                channel: channel.into(),
                recover: self.positions.get(channel).cloned(),
                positions: SortedMap::new(),
                since: None,
            }
        }
    }

    /// Subscriptions that are wanted but not on the wire (none of their commands pending).
    fn unsent_subscriptions(&self) -> Vec<String> {
        self.subs
            .iter()
            .filter(|(_, s)| {
                matches!(s.state, SubscriptionState::Subscribing) && s.awaiting.is_none()
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn send_subscribe(&mut self, channel: &str) {
        let id = self.command_id();
        let request = self.subscribe_request(channel);
        let Some(sub) = self.subs.get_mut(channel) else {
            return;
        };
        sub.awaiting = Some(id);
        self.track(id, PendingKind::Subscribe(channel.into()));
        self.transmit(ClientFrame::Subscribe { id, request });
    }

    fn on_subscribe_failed(&mut self, channel: &str, error: ErrorBody) {
        let Some(sub) = self.subs.get_mut(channel) else {
            return;
        };
        sub.awaiting = None;
        sub.buffer.clear();
        if error.temporary {
            // Retried after the advised delay (1 s by default); tell the app meanwhile.
            let at = self.now.mono_ms + error.retry_after_ms.unwrap_or(1_000);
            self.resubscribe_at = Some(self.resubscribe_at.map_or(at, |t| t.min(at)));
            self.push_event(Event::Error {
                error: error.into(),
            });
            return;
        }
        let error: ClientError = error.into();
        sub.state = SubscriptionState::Failed {
            error: error.clone(),
        };
        self.push_event(Event::Subscription {
            channel: channel.into(),
            state: SubscriptionState::Failed {
                error: error.clone(),
            },
        });
        self.push_event(Event::Error { error });
    }

    fn on_subscribe_result(&mut self, channel: &str, result: SubscribeResult) {
        if let Some(error) = result.error {
            self.on_subscribe_failed(channel, error);
            return;
        }
        let pattern = is_pattern(channel);
        let was_recovering = if pattern {
            self.subs.get(channel).is_some_and(|s| s.since.is_some())
                || self.positions.keys().any(|c| pattern_matches(channel, c))
        } else {
            self.positions.contains_key(channel)
        };
        let needs_reload = was_recovering && !result.recovered;
        if was_recovering {
            if result.recovered {
                self.stats.recoveries_succeeded += 1;
            } else {
                self.stats.recoveries_failed += 1;
            }
        }
        if pattern {
            for lost in &result.unrecovered {
                if self.positions.remove(lost).is_some() {
                    self.dirty_positions.remove(lost);
                    self.persist(PersistKind::RemovePosition {
                        channel: lost.clone(),
                    });
                }
            }
        } else if !(result.recovered && was_recovering) {
            let top = StreamPosition {
                epoch: result.epoch.clone(),
                offset: result.offset,
            };
            if self.positions.get(channel) != Some(&top) {
                self.positions.insert(channel.into(), top);
                self.dirty_positions.insert(channel.into());
            }
        }
        let Some(sub) = self.subs.get_mut(channel) else {
            return;
        };
        sub.awaiting = None;
        sub.state = SubscriptionState::Subscribed;
        sub.fresh =
            (!(pattern || result.recovered && was_recovering)).then_some((result.offset, 0));
        if pattern && result.server_time > 0 {
            sub.since = Some(sub.since.unwrap_or(0).max(result.server_time));
            self.dirty_patterns.insert(channel.into());
        }
        let buffered = std::mem::take(&mut sub.buffer);
        self.push_event(Event::Subscription {
            channel: channel.into(),
            state: SubscriptionState::Subscribed,
        });
        self.push_event(Event::Subscribed {
            channel: channel.into(),
            recovered: result.recovered,
            needs_reload,
        });
        for publication in result.publications.into_iter().chain(buffered) {
            self.deliver(publication);
        }
    }

    fn route_publication(&mut self, publication: Publication) {
        let channel = publication.channel.clone();
        let target = if self.subs.contains_key(&channel) {
            Some(channel)
        } else {
            // Prefer a live pattern subscription, else buffer in one still subscribing.
            let mut matching = self.subs.iter().filter(|(name, _)| {
                is_pattern(name) && pattern_matches(name, &publication.channel)
            });
            let live = matching
                .clone()
                .find(|(_, s)| matches!(s.state, SubscriptionState::Subscribed));
            live.or_else(|| matching.next()).map(|(n, _)| n.clone())
        };
        let Some(target) = target else {
            return;
        };
        let Some(sub) = self.subs.get_mut(&target) else {
            return;
        };
        match sub.state {
            SubscriptionState::Subscribed => self.deliver(publication),
            SubscriptionState::Subscribing => sub.buffer.push(publication),
            _ => {}
        }
    }

    /// Hands a publication to the app unless it was delivered already.
    fn deliver(&mut self, publication: Publication) {
        let channel = &publication.channel;
        let mut advance = true;
        if let Some(position) = self.positions.get(channel) {
            let same_epoch = position.epoch == publication.epoch;
            if same_epoch && publication.offset <= position.offset {
                let fresh = self.subs.get_mut(channel).and_then(|s| s.fresh.as_mut());
                match fresh {
                    Some((top, last))
                        if publication.offset <= *top && publication.offset > *last =>
                    {
                        *last = publication.offset;
                        advance = false;
                    }
                    _ => {
                        self.stats.duplicates_dropped += 1;
                        return;
                    }
                }
            } else if same_epoch && publication.offset > position.offset + 1 {
                log::warn!(
                    "gap in {channel}: {} -> {}",
                    position.offset,
                    publication.offset
                );
            }
        }
        if advance {
            if let Some(sub) = self.subs.get_mut(channel) {
                sub.fresh = None;
            }
        }
        if !advance {
            self.stats.publications_delivered += 1;
            self.push_event(Event::Publication(publication));
            return;
        }
        self.positions.insert(
            publication.channel.clone(),
            StreamPosition {
                epoch: publication.epoch.clone(),
                offset: publication.offset,
            },
        );
        self.dirty_positions.insert(publication.channel.clone());
        let patterns: Vec<String> = self
            .subs
            .keys()
            .filter(|name| is_pattern(name) && pattern_matches(name, &publication.channel))
            .cloned()
            .collect();
        for pattern in patterns {
            if let Some(sub) = self.subs.get_mut(&pattern) {
                if sub.since.is_none_or(|s| s < publication.ts) {
                    sub.since = Some(publication.ts);
                    self.dirty_patterns.insert(pattern);
                }
            }
        }
        self.stats.publications_delivered += 1;
        self.push_event(Event::Publication(publication));
    }

    // ----------------------------------------------------------------- internals: outbox

    fn restore(&mut self, snapshot: Snapshot) {
        let mut restored = Vec::new();
        for entry in snapshot.outbox {
            self.push_event(Event::Message {
                msg_id: entry.msg_id.clone(),
                channel: entry.channel.clone(),
                status: MessageStatus::Queued,
            });
            restored.push(Slot {
                entry,
                status: MessageStatus::Queued,
                persist_id: None,
            });
        }
        self.outbox.restore_front(restored);
        for (channel, position) in snapshot.positions {
            self.positions.get_or_insert_with(channel, || position);
        }
        for (pattern, since) in snapshot.pattern_since {
            if let Some(sub) = self.subs.get_mut(&pattern) {
                sub.since.get_or_insert(since);
            }
            self.restored_since.get_or_insert_with(pattern, || since);
        }
        self.flush_outbox();
    }

    fn on_persisted(&mut self, id: PersistId) {
        let Some(slot) = self.outbox.by_persist_id(id) else {
            return;
        };
        slot.persist_id = None;
        if matches!(slot.status, MessageStatus::Persisting) {
            let msg_id = slot.entry.msg_id.clone();
            self.set_message_status(&msg_id, MessageStatus::Queued);
            self.flush_outbox();
        }
    }

    fn flush_outbox(&mut self) {
        let Link::Live { .. } = self.link else {
            return;
        };
        if self.hold_sends_until.is_some() {
            return;
        }
        let window = if self.slow_start {
            1
        } else {
            self.options.outbox.max_in_flight.max(1)
        };
        let mut in_flight = self.outbox.in_flight();
        for msg_id in self.outbox.queued_ids() {
            if in_flight >= window {
                break;
            }
            let Some(slot) = self.outbox.get_mut(&msg_id) else {
                continue;
            };
            if slot.entry.user.is_some() && slot.entry.user != self.user {
                self.fail_message(&msg_id, ClientError::UserMismatch);
                continue;
            }
            let (channel, event, data) = (
                slot.entry.channel.clone(),
                slot.entry.event.clone(),
                slot.entry.data.clone(),
            );
            let id = self.command_id();
            let frame = ClientFrame::Publish {
                id,
                channel,
                msg_id: msg_id.clone(),
                event,
                data,
            };
            self.track(id, PendingKind::Publish(msg_id.clone()));
            self.transmit(frame);
            self.set_message_status(&msg_id, MessageStatus::Sent);
            in_flight += 1;
        }
    }

    fn on_publish_error(&mut self, msg_id: &str, error: ErrorBody) {
        if error.code == ErrorCode::RateLimited || error.temporary {
            let wait = error.retry_after_ms.unwrap_or(1_000);
            self.hold_sends_until = Some(self.now.mono_ms + wait);
            self.slow_start = true;
            self.set_message_status(msg_id, MessageStatus::Queued);
            return;
        }
        self.fail_message(msg_id, error.into());
        self.flush_outbox();
    }

    fn expire_messages(&mut self) {
        let ttl = self.options.outbox.ttl_ms;
        let now = self.now.wall_ms;
        let expired: Vec<(String, u64)> = self
            .outbox
            .iter()
            .filter(|s| !matches!(s.status, MessageStatus::Sent))
            .filter(|s| now >= s.entry.created_at_ms.saturating_add(ttl))
            .map(|s| (s.entry.msg_id.clone(), now - s.entry.created_at_ms))
            .collect();
        for (msg_id, waited_ms) in expired {
            self.fail_message(&msg_id, ClientError::Expired { waited_ms });
        }
    }

    fn fail_message(&mut self, msg_id: &str, error: ClientError) {
        if let Some(slot) = self.outbox.remove(msg_id) {
            self.persist(PersistKind::RemoveMessage {
                msg_id: msg_id.into(),
            });
            self.emit_message(msg_id, slot.entry.channel, MessageStatus::Failed { error });
        }
    }

    fn set_message_status(&mut self, msg_id: &str, status: MessageStatus) {
        let Some(slot) = self.outbox.get_mut(msg_id) else {
            return;
        };
        if slot.status == status {
            return;
        }
        slot.status = status.clone();
        let channel = slot.entry.channel.clone();
        self.push_event(Event::Message {
            msg_id: msg_id.into(),
            channel,
            status,
        });
    }

    fn emit_message(&mut self, msg_id: &str, channel: String, status: MessageStatus) {
        self.push_event(Event::Message {
            msg_id: msg_id.into(),
            channel,
            status,
        });
    }

    // ----------------------------------------------------------------- internals: plumbing

    fn command_id(&mut self) -> u64 {
        let id = self.next_command;
        self.next_command += 1;
        id
    }

    fn track(&mut self, id: u64, kind: PendingKind) {
        self.pending.insert(
            id,
            Pending {
                kind,
                sent_at: self.now.mono_ms,
                deadline: self.now.mono_ms + self.options.command_timeout_ms,
            },
        );
    }

    fn transmit(&mut self, frame: ClientFrame) {
        if let Some(transport) = self.current_transport() {
            self.outputs
                .push_back(Output::Transmit { transport, frame });
        }
    }

    fn next_persist_id(&mut self) -> PersistId {
        let id = self.next_persist;
        self.next_persist += 1;
        id
    }

    fn persist(&mut self, kind: PersistKind) -> PersistId {
        let id = self.next_persist_id();
        self.outputs
            .push_back(Output::Persist(PersistOp { id, kind }));
        id
    }

    fn push_event(&mut self, event: Event) {
        if self.events.is_empty() && self.options.batch_window_ms > 0 {
            self.batch_deadline = Some(self.now.mono_ms + self.options.batch_window_ms);
        }
        self.events.push(event);
    }

    fn rtt_sample(&mut self, sent_at: u64) {
        let sample = self.now.mono_ms.saturating_sub(sent_at);
        self.last_rtt_sample = Some(self.now.mono_ms);
        self.stats.rtt_ms = Some(match self.stats.rtt_ms {
            Some(previous) => (previous * 7 + sample) / 8,
            None => sample,
        });
    }

    fn new_message_id(&mut self) -> String {
        format!("{:016x}{:016x}", self.rng.u64(..), self.rng.u64(..))
    }
}
