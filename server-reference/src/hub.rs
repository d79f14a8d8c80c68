//! The node-local hub: which connections exist, what they subscribe to, and fan-out of
//! publications into their outbound queues.
//!
//! Each publication is encoded to text once and the same bytes are shared by every
//! subscriber's queue. Queues are bounded; a full queue disconnects its connection as
//! `slow_consumer`. One shared ticker ([`Hub::tick`]) drives heartbeats, staleness,
//! token expiry and the connect timeout for all connections; there are no
//! per-connection timers.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use tidings::protocol::{Codec, JsonCodec, Publication, ServerFrame};
use tokio::sync::{mpsc, Notify};

use crate::engine::PublicationSink;
use crate::util::now_secs;

/// One encoded frame waiting in a connection's outbound queue.
#[derive(Debug)]
pub struct OutFrame {
    /// The frame's JSON text (cheap to clone: shared bytes).
    pub text: Utf8Bytes,
    /// For publications: when the engine accepted it (for the delivery latency metric).
    pub accepted_at: Option<Instant>,
}

/// What travels through a connection's outbound queue (one pointer per slot).
pub type Outbound = Arc<OutFrame>;

/// Why the hub asks a connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The outbound queue was full.
    SlowConsumer = 1,
    /// Nothing received for ping interval + pong timeout.
    Stale = 2,
    /// The token's `exp` passed.
    TokenExpired = 3,
    /// The server is shutting down.
    Shutdown = 4,
    /// No `connect` within the connect timeout.
    ConnectTimeout = 5,
}

impl CloseReason {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::SlowConsumer,
            2 => Self::Stale,
            3 => Self::TokenExpired,
            4 => Self::Shutdown,
            5 => Self::ConnectTimeout,
            _ => return None,
        })
    }
}

/// State of one connection shared between its task and the hub.
#[derive(Debug)]
pub struct ConnShared {
    /// Node-local connection id.
    pub id: u64,
    accepted_ms: u64,
    last_seen_ms: AtomicU64,
    /// Token expiry, s since the Unix epoch; 0 = never.
    expires_at: AtomicU64,
    connected: AtomicBool,
    reason: AtomicU8,
    /// Signalled when the hub wants the connection closed (see [`ConnShared::reason`]).
    pub kill: Notify,
}

impl ConnShared {
    /// Asks the connection to close (the first reason wins).
    pub fn close(&self, reason: CloseReason) {
        if self
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.kill.notify_one();
        }
    }

    /// Why the connection was asked to close, if it was.
    pub fn reason(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.reason.load(Ordering::Acquire))
    }

    /// Records inbound activity at `now_ms` (hub clock).
    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Sets the token expiry (s since the Unix epoch), `None` = never.
    pub fn set_expires_at(&self, exp: Option<u64>) {
        self.expires_at.store(exp.unwrap_or(0), Ordering::Relaxed);
    }

    /// Marks the connection as past `connect`: it now gets pings and expiry checks.
    pub fn set_connected(&self) {
        self.connected.store(true, Ordering::Release);
    }
}

#[derive(Debug)]
struct Entry {
    tx: mpsc::Sender<Outbound>,
    shared: Arc<ConnShared>,
}

#[derive(Debug, Default)]
struct Inner {
    conns: HashMap<u64, Entry>,
    channels: HashMap<String, HashSet<u64>>,
    /// Pattern prefix (pattern without its `*`) -> connections.
    patterns: HashMap<String, HashSet<u64>>,
    users: HashMap<String, usize>,
    ips: HashMap<IpAddr, usize>,
}

/// Timing rules applied by [`Hub::tick`].
#[derive(Debug, Clone, Copy)]
pub struct TickRules {
    /// Silence after which a connected client is stale (ping interval + pong timeout).
    pub stale_after_ms: u64,
    /// Time allowed between accept and `connect`.
    pub connect_timeout_ms: u64,
}

/// The node-local registry of connections and subscriptions.
#[derive(Debug)]
pub struct Hub {
    start: Instant,
    queue_len: usize,
    next_id: AtomicU64,
    closing: AtomicBool,
    inner: RwLock<Inner>,
}

impl Hub {
    /// A hub whose connections each get an outbound queue of `queue_len` frames.
    pub fn new(queue_len: usize) -> Self {
        Self {
            start: Instant::now(),
            queue_len: queue_len.max(1),
            next_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// Monotonic ms since the hub started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new socket from `ip`; `None` while the server shuts down.
    #[allow(clippy::type_complexity)]
    pub fn register(
        &self,
        ip: IpAddr,
    ) -> Option<(
        Arc<ConnShared>,
        mpsc::Sender<Outbound>,
        mpsc::Receiver<Outbound>,
    )> {
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let shared = Arc::new(ConnShared {
            id,
            accepted_ms: now,
            last_seen_ms: AtomicU64::new(now),
            expires_at: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            reason: AtomicU8::new(0),
            kill: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(self.queue_len);
        let mut inner = self.write();
        inner.conns.insert(
            id,
            Entry {
                tx: tx.clone(),
                shared: shared.clone(),
            },
        );
        *inner.ips.entry(ip).or_insert(0) += 1;
        Some((shared, tx, rx))
    }

    /// Open sockets from `ip` (including unauthenticated ones).
    pub fn ip_count(&self, ip: IpAddr) -> usize {
        self.read().ips.get(&ip).copied().unwrap_or(0)
    }

    /// Counts one more connection of `user` unless it already has `limit`.
    pub fn try_add_user(&self, user: &str, limit: usize) -> bool {
        let mut inner = self.write();
        let count = inner.users.entry(user.to_owned()).or_insert(0);
        if *count >= limit {
            if *count == 0 {
                inner.users.remove(user);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// Removes a connection and everything it subscribed to.
    pub fn unregister<'a>(
        &self,
        id: u64,
        ip: IpAddr,
        user: Option<&str>,
        subs: impl IntoIterator<Item = &'a String>,
    ) {
        let mut inner = self.write();
        inner.conns.remove(&id);
        for name in subs {
            remove_sub(&mut inner, id, name);
        }
        if let Some(count) = inner.ips.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                inner.ips.remove(&ip);
            }
        }
        if let Some(user) = user {
            if let Some(count) = inner.users.get_mut(user) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    inner.users.remove(user);
                }
            }
        }
    }

    /// Subscribes connection `id` to a channel or pattern.
    pub fn subscribe(&self, id: u64, name: &str) {
        let mut inner = self.write();
        let map = match name.strip_suffix('*') {
            Some(prefix) => inner.patterns.entry(prefix.to_owned()),
            None => inner.channels.entry(name.to_owned()),
        };
        map.or_default().insert(id);
    }

    /// Unsubscribes connection `id` from a channel or pattern.
    pub fn unsubscribe(&self, id: u64, name: &str) {
        remove_sub(&mut self.write(), id, name);
    }

    /// Number of registered sockets.
    pub fn len(&self) -> usize {
        self.read().conns.len()
    }

    /// Whether no socket is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops accepting sockets and asks every connection to close with `reason`.
    pub fn close_all(&self, reason: CloseReason) {
        self.closing.store(true, Ordering::Release);
        for entry in self.read().conns.values() {
            entry.shared.close(reason);
        }
    }

    /// One run of the shared ticker: closes stale, expired and never-connected sockets;
    /// when `ping` is given, queues it to every other connected socket.
    pub fn tick(&self, rules: TickRules, ping: Option<&Outbound>) {
        let now = self.now_ms();
        let now_s = now_secs();
        let inner = self.read();
        for entry in inner.conns.values() {
            let shared = &entry.shared;
            if !shared.connected.load(Ordering::Acquire) {
                if now.saturating_sub(shared.accepted_ms) > rules.connect_timeout_ms {
                    shared.close(CloseReason::ConnectTimeout);
                }
                continue;
            }
            let silent = now.saturating_sub(shared.last_seen_ms.load(Ordering::Relaxed));
            let exp = shared.expires_at.load(Ordering::Relaxed);
            if silent > rules.stale_after_ms {
                shared.close(CloseReason::Stale);
            } else if exp != 0 && exp <= now_s {
                shared.close(CloseReason::TokenExpired);
            } else if let Some(ping) = ping {
                send(entry, ping);
            }
        }
    }
}

fn remove_sub(inner: &mut Inner, id: u64, name: &str) {
    let map = match name.strip_suffix('*') {
        Some(_) => &mut inner.patterns,
        None => &mut inner.channels,
    };
    let key = name.strip_suffix('*').unwrap_or(name);
    if let Some(set) = map.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

fn send(entry: &Entry, frame: &Outbound) {
    match entry.tx.try_send(frame.clone()) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => entry.shared.close(CloseReason::SlowConsumer),
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

/// Encodes a server frame for a queue.
pub fn encode(frame: &ServerFrame, accepted_at: Option<Instant>) -> Option<Outbound> {
    match JsonCodec.encode_server(frame) {
        Ok(text) => Some(Arc::new(OutFrame {
            text: text.into(),
            accepted_at,
        })),
        Err(err) => {
            tracing::error!(%err, "failed to encode a frame");
            None
        }
    }
}

impl PublicationSink for Hub {
    fn deliver(&self, publication: Publication, accepted_at: Instant) {
        let channel = publication.channel.clone();
        let Some(frame) = encode(&ServerFrame::Publication(publication), Some(accepted_at)) else {
            return;
        };
        let inner = self.read();
        let direct = inner.channels.get(&channel);
        let mut via_patterns: Vec<u64> = Vec::new();
        for (prefix, ids) in &inner.patterns {
            if channel.starts_with(prefix.as_str()) {
                via_patterns.extend(ids.iter().copied());
            }
        }
        let deliver_to = |id: &u64| {
            if let Some(entry) = inner.conns.get(id) {
                send(entry, &frame);
            }
        };
        if via_patterns.is_empty() {
            direct.into_iter().flatten().for_each(deliver_to);
        } else {
            // A connection reached through several subscriptions gets it once.
            let mut all: HashSet<u64> = direct.cloned().unwrap_or_default();
            all.extend(via_patterns);
            all.iter().for_each(deliver_to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings::protocol::{Payload, Publisher};

    fn publication(channel: &str) -> Publication {
        Publication {
            channel: channel.into(),
            epoch: "e".into(),
            offset: 1,
            id: "m".into(),
            event: "ev".into(),
            data: Payload::null(),
            ts: 1,
            publisher: Publisher::default(),
        }
    }

    #[test]
    fn fan_out_dedupes_and_full_queue_closes() {
        let hub = Hub::new(1);
        let ip = IpAddr::from([127, 0, 0, 1]);
        let (a, _, mut rx_a) = hub.register(ip).expect("register");
        let (b, _, mut rx_b) = hub.register(ip).expect("register");
        assert_eq!(hub.ip_count(ip), 2);
        hub.subscribe(a.id, "chat:1");
        hub.subscribe(a.id, "chat:*");
        hub.subscribe(b.id, "chat:*");
        hub.deliver(publication("chat:1"), Instant::now());
        assert!(rx_a.try_recv().is_ok());
        assert!(rx_a.try_recv().is_err());
        assert!(rx_b.try_recv().is_ok());
        hub.deliver(publication("chat:2"), Instant::now());
        hub.deliver(publication("chat:3"), Instant::now());
        assert_eq!(a.reason(), Some(CloseReason::SlowConsumer));
        hub.unregister(
            a.id,
            ip,
            None,
            &["chat:1".to_string(), "chat:*".to_string()],
        );
        hub.unregister(b.id, ip, None, &["chat:*".to_string()]);
        assert!(hub.is_empty());
        assert_eq!(hub.ip_count(ip), 0);
        assert!(hub.read().patterns.is_empty() && hub.read().channels.is_empty());
    }

    #[test]
    fn user_limit() {
        let hub = Hub::new(4);
        assert!(hub.try_add_user("u", 1));
        assert!(!hub.try_add_user("u", 1));
        hub.unregister(0, IpAddr::from([127, 0, 0, 1]), Some("u"), &[]);
        assert!(hub.try_add_user("u", 1));
    }
}
