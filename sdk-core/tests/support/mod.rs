//! Test support: an in-process model of a Tidings server and a virtual network, driven on
//! a virtual clock. Deterministic for a given seed.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tidings::protocol::{
    is_pattern, pattern_matches, ClientFrame, ErrorBody, ErrorCode, Limits, Publication, Publisher,
    ServerFrame, StreamPosition, SubscribeRequest, SubscribeResult,
};
use tidings::{Client, Event, Input, MemoryStore, MessageStatus, Now, Options, Output};

pub const WALL_ORIGIN: u64 = 1_800_000_000_000;

pub fn now_at(mono: u64) -> Now {
    Now::new(mono, WALL_ORIGIN + mono)
}

/// One channel's history in the model server.
#[derive(Default, Debug)]
pub struct ChannelLog {
    pub publications: Vec<Publication>,
}

/// A server-side connection.
#[derive(Debug)]
pub struct ServerConn {
    pub client: usize,
    pub transport: u64,
    pub subs: BTreeSet<String>,
    pub connected: bool,
    /// Silently dead: frames in both directions vanish.
    pub blackholed: bool,
}

/// The model server: channels with history, idempotent publish, recovery, patterns.
#[derive(Debug)]
pub struct ModelServer {
    pub epoch: String,
    pub channels: BTreeMap<String, ChannelLog>,
    pub accepted: HashMap<(String, String), u64>,
    pub conns: Vec<ServerConn>,
    pub up: bool,
    pub ping_interval_ms: u64,
    /// Keep only this many publications per channel (older ones are "trimmed").
    pub history_limit: usize,
    /// Top offset of each channel when a client first registered a fresh subscription:
    /// that client must get everything after it.
    pub first_registration_top: BTreeMap<(usize, String), u64>,
}

impl ModelServer {
    pub fn new(epoch: &str) -> Self {
        Self {
            epoch: epoch.into(),
            channels: BTreeMap::new(),
            accepted: HashMap::new(),
            conns: Vec::new(),
            up: true,
            ping_interval_ms: 30_000,
            history_limit: usize::MAX,
            first_registration_top: BTreeMap::new(),
        }
    }

    fn top(&self, channel: &str) -> u64 {
        self.channels
            .get(channel)
            .and_then(|c| c.publications.last())
            .map_or(0, |p| p.offset)
    }

    fn retained_after(&self, channel: &str, offset: u64) -> Option<Vec<Publication>> {
        let log = self.channels.get(channel);
        let pubs = log.map(|c| c.publications.as_slice()).unwrap_or(&[]);
        let first_retained = pubs.first().map_or(self.top(channel) + 1, |p| p.offset);
        if offset + 1 < first_retained && offset < self.top(channel) {
            return None;
        }
        Some(pubs.iter().filter(|p| p.offset > offset).cloned().collect())
    }

    fn subscribe(&self, request: &SubscribeRequest, now_wall: u64) -> SubscribeResult {
        let mut result = SubscribeResult {
            channel: request.channel.clone(),
            epoch: String::new(),
            offset: 0,
            recovered: false,
            publications: Vec::new(),
            unrecovered: Vec::new(),
            server_time: now_wall,
            error: None,
        };
        if is_pattern(&request.channel) {
            let asked = !request.positions.is_empty() || request.since.is_some();
            // Positions from another epoch (or of channels that no longer exist) cannot be
            // recovered, whether or not the channel has history now.
            for (name, pos) in &request.positions {
                if pos.epoch != self.epoch {
                    result.unrecovered.push(name.clone());
                }
            }
            for (name, log) in &self.channels {
                if !pattern_matches(&request.channel, name) {
                    continue;
                }
                match request.positions.get(name) {
                    Some(pos) if pos.epoch == self.epoch => {
                        match self.retained_after(name, pos.offset) {
                            Some(pubs) => result.publications.extend(pubs),
                            None => result.unrecovered.push(name.clone()),
                        }
                    }
                    Some(_) => {}
                    None => {
                        if let Some(since) = request.since {
                            result
                                .publications
                                .extend(log.publications.iter().filter(|p| p.ts >= since).cloned());
                        }
                    }
                }
            }
            result.recovered = asked && result.unrecovered.is_empty();
        } else {
            result.epoch = self.epoch.clone();
            result.offset = self.top(&request.channel);
            if let Some(pos) = &request.recover {
                if pos.epoch == self.epoch {
                    if let Some(pubs) = self.retained_after(&request.channel, pos.offset) {
                        result.recovered = true;
                        result.publications = pubs;
                    }
                }
            }
        }
        result
    }

    /// Registers the subscriptions of a `connect` or `subscribe` at once (fan-out starts
    /// now); returns true when the reply should be computed later.
    pub fn register(&mut self, conn: usize, frame: &ClientFrame) -> bool {
        let client = self.conns[conn].client;
        let requests: Vec<&SubscribeRequest> = match frame {
            ClientFrame::Connect { subs, .. } => subs.iter().collect(),
            ClientFrame::Subscribe { request, .. } => vec![request],
            _ => Vec::new(),
        };
        for request in requests {
            if !is_pattern(&request.channel) && request.recover.is_none() {
                let top = self.top(&request.channel);
                self.first_registration_top
                    .entry((client, request.channel.clone()))
                    .or_insert(top);
            }
        }
        match frame {
            ClientFrame::Connect { subs, .. } => {
                for request in subs {
                    self.conns[conn].subs.insert(request.channel.clone());
                }
                self.conns[conn].connected = true;
                true
            }
            ClientFrame::Subscribe { request, .. } => {
                self.conns[conn].subs.insert(request.channel.clone());
                true
            }
            _ => false,
        }
    }

    /// Handles one frame from a connection; returns frames to send to connections
    /// (connection index, frame).
    pub fn handle(
        &mut self,
        conn: usize,
        frame: ClientFrame,
        now_wall: u64,
    ) -> Vec<(usize, ServerFrame)> {
        let mut out = Vec::new();
        match frame {
            ClientFrame::Connect { id, subs, .. } => {
                let mut results = Vec::new();
                for request in &subs {
                    self.conns[conn].subs.insert(request.channel.clone());
                    results.push(self.subscribe(request, now_wall));
                }
                self.conns[conn].connected = true;
                out.push((
                    conn,
                    ServerFrame::Connected {
                        id,
                        client_id: format!("c{conn}"),
                        session_id: self.epoch.clone(),
                        server_time: now_wall,
                        ping_interval_ms: self.ping_interval_ms,
                        limits: Limits::default(),
                        expires_at: None,
                        subs: results,
                    },
                ));
            }
            ClientFrame::Subscribe { id, request } => {
                self.conns[conn].subs.insert(request.channel.clone());
                let result = self.subscribe(&request, now_wall);
                out.push((conn, ServerFrame::Subscribed { id, result }));
            }
            ClientFrame::Unsubscribe { id, channel } => {
                self.conns[conn].subs.remove(&channel);
                out.push((
                    conn,
                    ServerFrame::Unsubscribed {
                        id: Some(id),
                        channel,
                    },
                ));
            }
            ClientFrame::Publish {
                id,
                channel,
                msg_id,
                event,
                data,
            } => {
                if is_pattern(&channel) {
                    out.push((
                        conn,
                        ServerFrame::Error {
                            id: Some(id),
                            error: ErrorBody::new(ErrorCode::BadRequest, "pattern"),
                        },
                    ));
                    return out;
                }
                if let Some(offset) = self.accepted.get(&(channel.clone(), msg_id.clone())) {
                    out.push((
                        conn,
                        ServerFrame::Ack {
                            id,
                            msg_id,
                            epoch: self.epoch.clone(),
                            offset: *offset,
                            duplicate: true,
                        },
                    ));
                    return out;
                }
                let offset = self.top(&channel) + 1;
                let publication = Publication {
                    channel: channel.clone(),
                    epoch: self.epoch.clone(),
                    offset,
                    id: msg_id.clone(),
                    event,
                    data,
                    ts: now_wall,
                    publisher: Publisher {
                        user: format!("u{}", self.conns[conn].client),
                        client: Some(format!("c{conn}")),
                        info: None,
                    },
                };
                self.accepted
                    .insert((channel.clone(), msg_id.clone()), offset);
                let limit = self.history_limit;
                let log = self.channels.entry(channel.clone()).or_default();
                log.publications.push(publication.clone());
                if log.publications.len() > limit {
                    log.publications.remove(0);
                }
                for (index, c) in self.conns.iter().enumerate() {
                    if c.connected && c.subs.iter().any(|s| pattern_matches(s, &channel)) {
                        out.push((index, ServerFrame::Publication(publication.clone())));
                    }
                }
                out.push((
                    conn,
                    ServerFrame::Ack {
                        id,
                        msg_id,
                        epoch: self.epoch.clone(),
                        offset,
                        duplicate: false,
                    },
                ));
            }
            ClientFrame::Ping { id } => out.push((conn, ServerFrame::Pong { id })),
            ClientFrame::Pong { .. } => {}
            ClientFrame::Refresh { id, .. } => out.push((
                conn,
                ServerFrame::Refreshed {
                    id,
                    expires_at: None,
                },
            )),
        }
        out
    }
}

/// A frame in flight.
#[derive(Debug)]
struct Flight {
    at: u64,
    seq: u64,
    to_server: bool,
    conn: usize,
    kind: FlightKind,
}

#[derive(Debug)]
enum FlightKind {
    ClientFrame(ClientFrame),
    ServerFrame(ServerFrame),
    Opened,
    Refused,
    Closed,
}

/// One simulated app: a core client plus its store and what it saw.
#[derive(Debug)]
pub struct SimClient {
    pub client: Client,
    pub store: MemoryStore,
    pub namespace: String,
    pub options: Options,
    pub channels: Vec<String>,
    pub wake: Option<u64>,
    /// Publications delivered to the app, per concrete channel, in order.
    pub received: BTreeMap<String, Vec<u64>>,
    /// Every message id this app published that reached `Queued` (durable).
    pub durable: BTreeSet<String>,
    pub acked: BTreeSet<String>,
    pub failed: BTreeMap<String, String>,
    pub needs_reload: usize,
    pub events: Vec<Event>,
    /// transport id -> server conn index
    pub transports: HashMap<u64, usize>,
    pending_persists: Vec<(u64, u64)>,
}

/// The whole world: model server, clients, network, virtual clock.
#[derive(Debug)]
pub struct World {
    pub now: u64,
    pub rng: fastrand::Rng,
    pub server: ModelServer,
    pub clients: Vec<SimClient>,
    flights: Vec<Flight>,
    seq: u64,
    next_ping: u64,
    /// Latest delivery time per (conn, direction), to keep TCP order.
    lane_tail: HashMap<(usize, bool), u64>,
    pub max_delay_ms: u64,
    pub persist_delay_ms: u64,
    /// Subscribe/connect replies computed this long (at most) after registration, like a
    /// server reading history after registering: live publications race the reply.
    pub history_read_delay_ms: u64,
    /// Chance (percent) that a publication frame is sent twice (at-least-once wire).
    pub duplicate_percent: u32,
    deferred: Vec<(u64, usize, ClientFrame)>,
}

impl World {
    pub fn new(seed: u64) -> Self {
        Self {
            now: 0,
            rng: fastrand::Rng::with_seed(seed),
            server: ModelServer::new("epoch-1"),
            clients: Vec::new(),
            flights: Vec::new(),
            seq: 0,
            next_ping: 30_000,
            lane_tail: HashMap::new(),
            max_delay_ms: 40,
            persist_delay_ms: 5,
            history_read_delay_ms: 30,
            duplicate_percent: 3,
            deferred: Vec::new(),
        }
    }

    pub fn add_client(&mut self, mut options: Options, channels: &[&str]) -> usize {
        options.url = "ws://model".into();
        let index = self.clients.len();
        if options.token.is_none() {
            options.token = Some("token".into());
        }
        options.user = Some(format!("u{index}"));
        let store = MemoryStore::new();
        let namespace = options.storage_namespace();
        let seed = self.rng.u64(..);
        self.clients.push(SimClient {
            client: Client::new(options.clone(), seed),
            store,
            namespace,
            options,
            channels: channels.iter().map(|c| c.to_string()).collect(),
            wake: None,
            received: BTreeMap::new(),
            durable: BTreeSet::new(),
            acked: BTreeSet::new(),
            failed: BTreeMap::new(),
            needs_reload: 0,
            events: Vec::new(),
            transports: HashMap::new(),
            pending_persists: Vec::new(),
        });
        self.start_client(index);
        index
    }

    /// Starts (or restarts, like a page reload) a client from its store.
    pub fn start_client(&mut self, index: usize) {
        let now = now_at(self.now);
        let seed = self.rng.u64(..);
        for conn in self.server.conns.iter_mut().filter(|c| c.client == index) {
            conn.connected = false;
        }
        let c = &mut self.clients[index];
        c.client = Client::new(c.options.clone(), seed);
        c.pending_persists.clear();
        c.transports.clear();
        let snapshot = c.store.load(&c.namespace);
        c.client.handle_input(now, Input::Restore(snapshot));
        c.client.connect(now);
        for channel in c.channels.clone() {
            c.client.subscribe(now, &channel).expect("valid channel");
        }
        self.drain(index);
    }

    fn delay(&mut self, conn: usize, to_server: bool) -> u64 {
        let at = self.now + 1 + self.rng.u64(0..self.max_delay_ms);
        let tail = self.lane_tail.entry((conn, to_server)).or_insert(0);
        let at = at.max(*tail);
        *tail = at;
        at
    }

    fn send(&mut self, conn: usize, to_server: bool, kind: FlightKind) {
        let at = self.delay(conn, to_server);
        self.seq += 1;
        self.flights.push(Flight {
            at,
            seq: self.seq,
            to_server,
            conn,
            kind,
        });
    }

    /// Performs a client's outputs.
    pub fn drain(&mut self, index: usize) {
        loop {
            let output = self.clients[index].client.poll_output();
            match output {
                Output::OpenTransport { transport, .. } => {
                    let conn = self.server.conns.len();
                    self.server.conns.push(ServerConn {
                        client: index,
                        transport,
                        subs: BTreeSet::new(),
                        connected: false,
                        blackholed: false,
                    });
                    self.clients[index].transports.insert(transport, conn);
                    let kind = if self.server.up {
                        FlightKind::Opened
                    } else {
                        FlightKind::Refused
                    };
                    self.send(conn, false, kind);
                }
                Output::CloseTransport { transport, .. } => {
                    if let Some(conn) = self.clients[index].transports.get(&transport) {
                        self.server.conns[*conn].connected = false;
                    }
                }
                Output::Transmit { transport, frame } => {
                    if let Some(&conn) = self.clients[index].transports.get(&transport) {
                        if !self.server.conns[conn].blackholed {
                            self.send(conn, true, FlightKind::ClientFrame(frame));
                        }
                    }
                }
                Output::FetchToken => {
                    let now = now_at(self.now);
                    self.clients[index]
                        .client
                        .handle_input(now, Input::Token(Ok("token".into())));
                }
                Output::Persist(op) => {
                    let c = &mut self.clients[index];
                    c.store.apply(&c.namespace, &op.kind);
                    let at = self.now + self.rng.u64(0..=self.persist_delay_ms);
                    self.clients[index].pending_persists.push((at, op.id));
                }
                Output::Events(batch) => self.record(index, batch),
                Output::Wake(at) => {
                    self.clients[index].wake = at;
                    return;
                }
            }
        }
    }

    fn record(&mut self, index: usize, batch: Vec<Event>) {
        let c = &mut self.clients[index];
        for event in batch {
            match &event {
                Event::Publication(p) => c
                    .received
                    .entry(p.channel.clone())
                    .or_default()
                    .push(p.offset),
                Event::Message { msg_id, status, .. } => match status {
                    MessageStatus::Queued => {
                        c.durable.insert(msg_id.clone());
                    }
                    MessageStatus::Acked { .. } => {
                        c.acked.insert(msg_id.clone());
                    }
                    MessageStatus::Failed { error } => {
                        c.failed.insert(msg_id.clone(), error.code().into());
                    }
                    _ => {}
                },
                Event::Subscribed {
                    needs_reload: true, ..
                } => c.needs_reload += 1,
                _ => {}
            }
            c.events.push(event);
        }
    }

    /// Publishes from a client (the app calling `publish`).
    pub fn publish(&mut self, index: usize, channel: &str, n: u64) {
        let now = now_at(self.now);
        let data = tidings::Payload::from_json(&n.to_string()).expect("json");
        self.clients[index]
            .client
            .publish(now, channel, "test.event", data)
            .expect("publish accepted");
        self.drain(index);
    }

    fn deliver_to_client(&mut self, conn: usize, input: impl FnOnce(u64) -> Input) {
        let index = self.server.conns[conn].client;
        let transport = self.server.conns[conn].transport;
        if self.clients[index].transports.get(&transport) != Some(&conn) {
            return; // the client restarted: that socket is gone
        }
        let now = now_at(self.now);
        self.clients[index]
            .client
            .handle_input(now, input(transport));
        self.drain(index);
    }

    /// Next time anything happens.
    fn next_time(&self) -> u64 {
        let mut t = self.next_ping;
        for f in &self.flights {
            t = t.min(f.at);
        }
        for (at, _, _) in &self.deferred {
            t = t.min(*at);
        }
        for c in &self.clients {
            if let Some(w) = c.wake {
                t = t.min(w);
            }
            for (at, _) in &c.pending_persists {
                t = t.min(*at);
            }
        }
        t
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: u64) {
        loop {
            let t = self.next_time().max(self.now);
            if t > until {
                self.now = until;
                return;
            }
            self.now = t;
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.now;
        // Network deliveries due now, in send order.
        let mut due: Vec<Flight> = Vec::new();
        let mut rest = Vec::new();
        for f in self.flights.drain(..) {
            if f.at <= now {
                due.push(f);
            } else {
                rest.push(f);
            }
        }
        self.flights = rest;
        due.sort_by_key(|f| (f.at, f.seq));
        for flight in due {
            let conn = flight.conn;
            if self.server.conns[conn].blackholed {
                continue;
            }
            match flight.kind {
                FlightKind::ClientFrame(frame) => {
                    if !self.server.up {
                        continue;
                    }
                    if self.server.register(conn, &frame) {
                        let at = now + self.rng.u64(0..=self.history_read_delay_ms);
                        self.deferred.push((at, conn, frame));
                    } else {
                        self.server_handle(conn, frame);
                    }
                }
                FlightKind::ServerFrame(frame) => {
                    self.deliver_to_client(conn, |transport| Input::Frame { transport, frame })
                }
                FlightKind::Opened => self.deliver_to_client(conn, Input::TransportOpened),
                FlightKind::Refused | FlightKind::Closed => {
                    self.deliver_to_client(conn, |transport| Input::TransportClosed {
                        transport,
                        reason: "closed".into(),
                    })
                }
            }
        }
        // Deferred subscribe/connect replies.
        let (ready, later): (Vec<_>, Vec<_>) =
            self.deferred.drain(..).partition(|(at, _, _)| *at <= now);
        self.deferred = later;
        for (_, conn, frame) in ready {
            if self.server.up && self.server.conns[conn].connected {
                self.server_handle(conn, frame);
            }
        }
        // Store confirmations.
        for index in 0..self.clients.len() {
            let (done, waiting): (Vec<_>, Vec<_>) = self.clients[index]
                .pending_persists
                .drain(..)
                .partition(|(at, _)| *at <= now);
            self.clients[index].pending_persists = waiting;
            for (_, id) in done {
                let t = now_at(now);
                self.clients[index]
                    .client
                    .handle_input(t, Input::Persisted(id));
                self.drain(index);
            }
        }
        // Timers.
        for index in 0..self.clients.len() {
            if self.clients[index].wake.is_some_and(|w| w <= now) {
                self.clients[index].wake = None;
                let t = now_at(now);
                self.clients[index].client.handle_input(t, Input::Timeout);
                self.drain(index);
            }
        }
        // Server heartbeat.
        if now >= self.next_ping {
            self.next_ping = now + self.server.ping_interval_ms;
            if self.server.up {
                for conn in 0..self.server.conns.len() {
                    let c = &self.server.conns[conn];
                    if c.connected && !c.blackholed {
                        self.send(
                            conn,
                            false,
                            FlightKind::ServerFrame(ServerFrame::Ping { id: None }),
                        );
                    }
                }
            }
        }
    }

    fn server_handle(&mut self, conn: usize, frame: ClientFrame) {
        let replies = self.server.handle(conn, frame, WALL_ORIGIN + self.now);
        for (to, frame) in replies {
            if self.server.conns[to].blackholed {
                continue;
            }
            let twice = matches!(frame, ServerFrame::Publication(_))
                && self.rng.u32(0..100) < self.duplicate_percent;
            if twice {
                self.send(to, false, FlightKind::ServerFrame(frame.clone()));
            }
            self.send(to, false, FlightKind::ServerFrame(frame));
        }
    }

    /// The network drops a live connection (both sides notice).
    pub fn cut(&mut self, index: usize) {
        let conns: Vec<usize> = self
            .server
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.client == index && c.connected)
            .map(|(i, _)| i)
            .collect();
        for conn in conns {
            self.server.conns[conn].connected = false;
            self.send(conn, false, FlightKind::Closed);
        }
    }

    /// A live connection goes silent without closing (half-open TCP).
    pub fn blackhole(&mut self, index: usize) {
        for c in self
            .server
            .conns
            .iter_mut()
            .filter(|c| c.client == index && c.connected)
        {
            c.blackholed = true;
            c.connected = false;
        }
    }

    /// Server crash: every connection closes; history survives (durable data dir) unless
    /// `new_epoch` is given.
    pub fn restart_server(&mut self, new_epoch: Option<&str>) {
        for conn in 0..self.server.conns.len() {
            if self.server.conns[conn].connected {
                self.server.conns[conn].connected = false;
                self.send(conn, false, FlightKind::Closed);
            }
        }
        // Frames in flight to the server are lost with it.
        self.flights.retain(|f| !f.to_server);
        self.deferred.clear();
        if let Some(epoch) = new_epoch {
            self.server.epoch = epoch.into();
            self.server.channels.clear();
            self.server.accepted.clear();
        }
    }

    pub fn server_back_up(&mut self) {
        self.server.up = true;
    }

    pub fn positions_of(&self, index: usize) -> BTreeMap<String, StreamPosition> {
        self.clients[index]
            .client
            .positions()
            .clone()
            .into_iter()
            .collect()
    }
}
