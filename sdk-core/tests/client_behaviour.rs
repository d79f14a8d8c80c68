//! Behaviour of the sans-IO client, one rule at a time, driven by hand on a virtual clock.

use base64::Engine as _;
use tidings::json::ToJson;
use tidings::protocol::{
    ClientFrame, ErrorBody, ErrorCode, Limits, ReconnectAdvice, ServerFrame, SubscribeResult,
};
use tidings::{
    Client, ClientError, ConnectionState, Event, Input, Lifecycle, MessageStatus, Now, Options,
    OutboxFullPolicy, Output, Payload, PersistKind,
};

const WALL: u64 = 1_800_000_000_000;

/// A client plus everything it asked for, on a virtual clock.
struct Harness {
    client: Client,
    mono: u64,
    outputs: Vec<Output>,
    events: Vec<Event>,
    wake: Option<u64>,
    transport: Option<u64>,
    auto_persist: bool,
}

fn token(sub: &str, exp: Option<u64>) -> String {
    let claims = match exp {
        Some(exp) => format!(r#"{{"sub":"{sub}","exp":{exp}}}"#),
        None => format!(r#"{{"sub":"{sub}"}}"#),
    };
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
    format!("eyJhbGciOiJIUzI1NiJ9.{body}.sig")
}

impl Harness {
    fn new(configure: impl FnOnce(&mut Options)) -> Self {
        let mut options = Options::new("ws://server/ws");
        options.token = Some(token("david", None));
        configure(&mut options);
        Self {
            client: Client::new(options, 1),
            mono: 1_000,
            outputs: Vec::new(),
            events: Vec::new(),
            wake: None,
            transport: None,
            auto_persist: true,
        }
    }

    fn now(&self) -> Now {
        Now::new(self.mono, WALL + self.mono)
    }

    fn drain(&mut self) {
        loop {
            match self.client.poll_output() {
                Output::Wake(at) => {
                    self.wake = at;
                    return;
                }
                Output::Events(batch) => self.events.extend(batch),
                Output::OpenTransport { transport, .. } => {
                    self.transport = Some(transport);
                    self.outputs.push(Output::OpenTransport {
                        transport,
                        url: String::new(),
                    });
                }
                Output::Persist(op) if self.auto_persist => {
                    self.outputs.push(Output::Persist(op.clone()));
                    let now = self.now();
                    self.client.handle_input(now, Input::Persisted(op.id));
                }
                other => self.outputs.push(other),
            }
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        self.client.handle_input(now, input);
        self.drain();
    }

    /// Advances the clock, firing timers on time.
    fn advance(&mut self, ms: u64) {
        let end = self.mono + ms;
        while let Some(wake) = self.wake.filter(|w| *w <= end) {
            self.mono = self.mono.max(wake);
            self.wake = None;
            self.input(Input::Timeout);
        }
        self.mono = end;
    }

    /// Advances time like a healthy server would: pings every 20 s and answers every
    /// client ping.
    fn keep_alive(&mut self, ms: u64) {
        let end = self.mono + ms;
        while self.mono < end {
            let step = (end - self.mono).min(20_000);
            self.advance(step);
            self.frame(ServerFrame::Ping { id: None });
            self.answer_pings();
        }
    }

    fn answer_pings(&mut self) {
        let answered: Vec<u64> = self
            .sent()
            .iter()
            .filter_map(|f| match f {
                ClientFrame::Ping { id } => Some(*id),
                _ => None,
            })
            .collect();
        for id in answered {
            self.frame(ServerFrame::Pong { id });
        }
    }

    fn connect(&mut self) {
        let now = self.now();
        self.client.connect(now);
        self.drain();
    }

    fn open(&mut self) {
        let transport = self.transport.expect("a transport was requested");
        self.input(Input::TransportOpened(transport));
    }

    fn frame(&mut self, frame: ServerFrame) {
        let transport = self.transport.expect("transport");
        self.input(Input::Frame { transport, frame });
    }

    fn close(&mut self) {
        let transport = self.transport.expect("transport");
        self.input(Input::TransportClosed {
            transport,
            reason: "test".into(),
        });
    }

    fn sent(&self) -> Vec<ClientFrame> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Transmit { frame, .. } => Some(frame.clone()),
                _ => None,
            })
            .collect()
    }

    fn last_connect_id(&self) -> u64 {
        self.sent()
            .iter()
            .rev()
            .find_map(|f| match f {
                ClientFrame::Connect { id, .. } => Some(*id),
                _ => None,
            })
            .expect("a connect was sent")
    }

    fn connected_frame(&self, subs: Vec<SubscribeResult>) -> ServerFrame {
        ServerFrame::Connected {
            id: self.last_connect_id(),
            client_id: "c1".into(),
            session_id: "s1".into(),
            server_time: WALL + self.mono,
            ping_interval_ms: 30_000,
            limits: Limits::default(),
            expires_at: None,
            subs,
        }
    }

    fn go_live(&mut self) {
        self.connect();
        self.open();
        let frame = self.connected_frame(Vec::new());
        self.frame(frame);
        assert_eq!(self.client.state(), &ConnectionState::Connected);
    }

    fn states(&self) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::State { new, reason, .. } => Some((new.name().to_string(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether an `Event::Error` with this code was reported.
    fn reported_error(&self, code: &str) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::Error { error } if error.code() == code))
    }

    fn statuses(&self, msg_id: &str) -> Vec<MessageStatus> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Message {
                    msg_id: m, status, ..
                } if m == msg_id => Some(status.clone()),
                _ => None,
            })
            .collect()
    }

    fn publish(&mut self, channel: &str, n: u64) -> Result<String, ClientError> {
        let now = self.now();
        let result = self.client.publish(
            now,
            channel,
            "goal.updated",
            Payload::from_json(&n.to_string()).expect("json"),
        );
        self.drain();
        result
    }
}

#[test]
fn reconnects_with_growing_jittered_delays_then_gives_up_and_online_restarts() {
    let mut h = Harness::new(|_| {});
    h.connect();
    let mut delays = Vec::new();
    for attempt in 1..=10u32 {
        h.close();
        match h.client.state().clone() {
            ConnectionState::Reconnecting {
                attempt: a,
                retry_in_ms: Some(delay),
            } => {
                assert_eq!(a, attempt);
                let ceiling = (1_000u64 << (attempt - 1)).min(30_000);
                assert!(delay <= ceiling, "attempt {attempt}: {delay} > {ceiling}");
                delays.push(delay);
                h.advance(delay);
                assert!(matches!(
                    h.outputs.last(),
                    Some(Output::OpenTransport { .. })
                ));
            }
            other => panic!("attempt {attempt}: unexpected state {other:?}"),
        }
    }
    assert!(
        delays
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 5,
        "jittered: {delays:?}"
    );
    h.close();
    assert!(matches!(h.client.state(), ConnectionState::Failed { code, .. } if code == "gave_up"));
    h.advance(120_000);
    assert!(
        matches!(h.client.state(), ConnectionState::Failed { .. }),
        "no retries after giving up"
    );

    h.input(Input::Lifecycle(Lifecycle::Online));
    assert_eq!(h.client.state(), &ConnectionState::Connecting);
    assert!(matches!(
        h.outputs.last(),
        Some(Output::OpenTransport { .. })
    ));
}

#[test]
fn a_connection_that_drops_quickly_does_not_reset_the_backoff() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    h.close();
    let first = h.client.state().clone();
    assert!(matches!(
        first,
        ConnectionState::Reconnecting { attempt: 1, .. }
    ));
    h.advance(1_000);
    h.open();
    let frame = h.connected_frame(Vec::new());
    h.frame(frame);
    h.advance(500);
    h.close();
    assert!(
        matches!(
            h.client.state(),
            ConnectionState::Reconnecting { attempt: 2, .. }
        ),
        "fast failure keeps backing off: {:?}",
        h.client.state()
    );
    h.advance(2_000);
    h.open();
    let frame = h.connected_frame(Vec::new());
    h.frame(frame);
    h.keep_alive(60_000);
    h.close();
    assert!(matches!(
        h.client.state(),
        ConnectionState::Reconnecting { attempt: 1, .. }
    ));
}

#[test]
fn server_advice_is_honoured() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    h.frame(ServerFrame::Disconnect {
        code: "shutdown".into(),
        reason: "restart".into(),
        advice: ReconnectAdvice {
            reconnect: true,
            not_before_ms: Some(7_000),
        },
    });
    match h.client.state() {
        ConnectionState::Reconnecting {
            retry_in_ms: Some(delay),
            ..
        } => assert!(*delay >= 7_000),
        other => panic!("{other:?}"),
    }
    let mut h = Harness::new(|_| {});
    h.go_live();
    h.frame(ServerFrame::Disconnect {
        code: "banned".into(),
        reason: "go away".into(),
        advice: ReconnectAdvice {
            reconnect: false,
            not_before_ms: None,
        },
    });
    assert!(
        matches!(h.client.state(), ConnectionState::Failed { code, .. } if code == "server_refused")
    );
    h.advance(100_000);
    assert!(!h
        .outputs
        .iter()
        .skip(1)
        .any(|o| matches!(o, Output::OpenTransport { transport, .. } if *transport > 1)));
}

#[test]
fn silence_beyond_ping_interval_plus_grace_means_dead() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    h.advance(30_000);
    h.frame(ServerFrame::Ping { id: None });
    assert!(h.sent().contains(&ClientFrame::Pong { id: None }));
    h.answer_pings();
    h.advance(34_000);
    assert_eq!(
        h.client.state(),
        &ConnectionState::Connected,
        "within interval + grace"
    );
    h.advance(1_500);
    assert_eq!(
        h.states().last(),
        Some(&("reconnecting".to_string(), "heartbeat_timeout".to_string()))
    );
}

#[test]
fn resume_checks_liveness_within_three_seconds() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    h.input(Input::Lifecycle(Lifecycle::Resumed));
    let ping_id = match h.sent().last() {
        Some(ClientFrame::Ping { id }) => *id,
        other => panic!("expected a liveness ping, got {other:?}"),
    };
    h.advance(1_000);
    h.frame(ServerFrame::Pong { id: ping_id });
    h.advance(5_000);
    assert_eq!(h.client.state(), &ConnectionState::Connected);

    h.input(Input::Lifecycle(Lifecycle::Online));
    assert!(matches!(h.sent().last(), Some(ClientFrame::Ping { .. })));
    h.advance(3_001);
    assert_eq!(
        h.states().last(),
        Some(&("reconnecting".to_string(), "liveness_timeout".to_string()))
    );
}

#[test]
fn a_late_timer_after_sleep_checks_liveness_instead_of_reconnecting() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    // The machine slept: the timer fires 10 minutes late (both clocks moved).
    h.mono += 600_000;
    h.wake = None;
    h.input(Input::Timeout);
    assert_eq!(h.client.state(), &ConnectionState::Connected);
    let ping_id = match h.sent().last() {
        Some(ClientFrame::Ping { id }) => *id,
        other => panic!("expected a liveness ping, got {other:?}"),
    };
    h.frame(ServerFrame::Pong { id: ping_id });
    h.advance(10_000);
    assert_eq!(h.client.state(), &ConnectionState::Connected);
}

#[test]
fn wall_clock_jump_triggers_liveness_check() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    // Monotonic time paused during sleep (some platforms) while wall time moved on.
    let now = Now::new(h.mono, WALL + h.mono + 3_600_000);
    h.client
        .handle_input(now, Input::Lifecycle(Lifecycle::Suspended));
    h.drain();
    assert!(matches!(h.sent().last(), Some(ClientFrame::Ping { .. })));
}

#[test]
fn offline_pauses_attempts_and_online_retries_at_once() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    h.input(Input::Lifecycle(Lifecycle::Offline));
    h.close();
    assert!(matches!(
        h.client.state(),
        ConnectionState::Reconnecting {
            retry_in_ms: None,
            ..
        }
    ));
    let opens_before = h
        .outputs
        .iter()
        .filter(|o| matches!(o, Output::OpenTransport { .. }))
        .count();
    h.advance(600_000);
    let opens_after = h
        .outputs
        .iter()
        .filter(|o| matches!(o, Output::OpenTransport { .. }))
        .count();
    assert_eq!(opens_before, opens_after, "no attempts while offline");
    h.input(Input::Lifecycle(Lifecycle::Online));
    assert!(matches!(
        h.outputs.last(),
        Some(Output::OpenTransport { .. })
    ));
    assert_eq!(
        h.states().last(),
        Some(&("connecting".to_string(), "online".to_string()))
    );
}

#[test]
fn expired_token_is_refreshed_once_then_fails() {
    let mut h = Harness::new(|o| {
        o.token = None;
        o.token_provider = true;
    });
    h.connect();
    assert!(matches!(h.outputs.last(), Some(Output::FetchToken)));
    h.input(Input::Token(Ok(token("david", None))));
    h.open();
    let id = h.last_connect_id();
    h.frame(ServerFrame::Error {
        id: Some(id),
        error: ErrorBody::new(ErrorCode::TokenExpired, "expired"),
    });
    assert!(
        matches!(h.outputs.last(), Some(Output::FetchToken)),
        "one refresh"
    );
    h.input(Input::Token(Ok(token("david", None))));
    h.open();
    let id = h.last_connect_id();
    h.frame(ServerFrame::Error {
        id: Some(id),
        error: ErrorBody::new(ErrorCode::TokenExpired, "expired"),
    });
    assert!(
        matches!(h.client.state(), ConnectionState::Failed { code, .. } if code == "token_expired")
    );
}

#[test]
fn invalid_token_stops_retrying() {
    let mut h = Harness::new(|_| {});
    h.connect();
    h.open();
    let id = h.last_connect_id();
    h.frame(ServerFrame::Error {
        id: Some(id),
        error: ErrorBody::new(ErrorCode::Unauthorized, "bad signature"),
    });
    assert!(
        matches!(h.client.state(), ConnectionState::Failed { code, .. } if code == "unauthorized")
    );
    let opens = h
        .outputs
        .iter()
        .filter(|o| matches!(o, Output::OpenTransport { .. }))
        .count();
    h.advance(300_000);
    let later = h
        .outputs
        .iter()
        .filter(|o| matches!(o, Output::OpenTransport { .. }))
        .count();
    assert_eq!(opens, later);
}

#[test]
fn token_is_refreshed_on_the_live_connection_before_expiry() {
    let exp_s = (WALL + 1_000 + 120_000) / 1000;
    let mut h = Harness::new(|o| {
        o.token = Some(token("david", Some(exp_s)));
        o.token_provider = true;
    });
    h.go_live();
    h.keep_alive(85_000);
    assert!(!h.outputs.iter().any(|o| matches!(o, Output::FetchToken)));
    h.advance(10_000);
    assert!(
        matches!(h.outputs.last(), Some(Output::FetchToken)),
        "refresh ~30 s before exp"
    );
    h.input(Input::Token(Ok(token("david", Some(exp_s + 3600)))));
    assert!(matches!(h.sent().last(), Some(ClientFrame::Refresh { .. })));
}

#[test]
fn stale_token_after_sleep_is_replaced_before_connecting() {
    let exp_s = (WALL + 1_000 + 60_000) / 1000;
    let mut h = Harness::new(|o| {
        o.token = Some(token("david", Some(exp_s)));
        o.token_provider = true;
    });
    h.mono += 3_600_000;
    h.connect();
    assert!(matches!(h.outputs.last(), Some(Output::FetchToken)));
}

#[test]
fn outbox_persists_before_sending_and_resends_after_reconnect() {
    let mut h = Harness::new(|_| {});
    h.auto_persist = false;
    let id = h.publish("goals", 1).expect("accepted");
    assert_eq!(h.client.outbox()[0].status, MessageStatus::Persisting);
    let persist_id = match h.outputs.last() {
        Some(Output::Persist(op)) => {
            assert!(matches!(op.kind, PersistKind::PutMessage { .. }));
            op.id
        }
        other => panic!("{other:?}"),
    };
    h.go_live();
    assert!(
        !h.sent()
            .iter()
            .any(|f| matches!(f, ClientFrame::Publish { .. })),
        "not sent before durable"
    );
    h.input(Input::Persisted(persist_id));
    match h.sent().last() {
        Some(ClientFrame::Publish { msg_id, .. }) => assert_eq!(msg_id, &id),
        other => panic!("{other:?}"),
    }
    h.close();
    assert_eq!(h.client.outbox()[0].status, MessageStatus::Queued);
    h.advance(1_000);
    h.open();
    let frame = h.connected_frame(Vec::new());
    h.frame(frame);
    let resent: Vec<_> = h
        .sent()
        .into_iter()
        .filter_map(|f| match f {
            ClientFrame::Publish { id, msg_id, .. } => Some((id, msg_id)),
            _ => None,
        })
        .collect();
    assert_eq!(resent.len(), 2);
    assert_eq!(
        resent[0].1, resent[1].1,
        "same message id, so the server dedupes"
    );
    h.frame(ServerFrame::Ack {
        id: resent[1].0,
        msg_id: id.clone(),
        epoch: "e".into(),
        offset: 9,
        duplicate: true,
    });
    assert_eq!(
        h.statuses(&id),
        vec![
            MessageStatus::Persisting,
            MessageStatus::Queued,
            MessageStatus::Sent,
            MessageStatus::Queued,
            MessageStatus::Sent,
            MessageStatus::Acked {
                epoch: "e".into(),
                offset: 9
            }
        ]
    );
    assert!(h.client.outbox().is_empty());
}

#[test]
fn oversized_and_invalid_publishes_are_refused_at_once() {
    let mut h = Harness::new(|o| o.max_frame_bytes = 1_000);
    let big = "x".repeat(2_000);
    let err = h
        .client
        .publish(
            h.now(),
            "goals",
            "goal.updated",
            Payload::from_json(&format!("\"{big}\"")).expect("json"),
        )
        .expect_err("too large");
    assert_eq!(err.code(), "frame_too_large");
    assert_eq!(
        h.client
            .publish(h.now(), "goals:*", "e", Payload::null())
            .expect_err("pattern")
            .code(),
        "publish_to_pattern"
    );
    assert_eq!(
        h.client
            .publish(h.now(), "bad name", "e", Payload::null())
            .expect_err("name")
            .code(),
        "invalid_channel"
    );
    assert_eq!(
        h.client
            .publish(h.now(), "goals", "", Payload::null())
            .expect_err("event")
            .code(),
        "invalid_event"
    );
    assert!(h.client.outbox().is_empty());
}

#[test]
fn full_outbox_rejects_or_drops_oldest_by_policy() {
    let mut h = Harness::new(|o| o.outbox.max_messages = 2);
    h.publish("goals", 1).expect("1");
    h.publish("goals", 2).expect("2");
    assert_eq!(
        h.publish("goals", 3).expect_err("full").code(),
        "outbox_full"
    );

    let mut h = Harness::new(|o| {
        o.outbox.max_messages = 2;
        o.outbox.full_policy = OutboxFullPolicy::DropOldest;
    });
    let first = h.publish("goals", 1).expect("1");
    h.publish("goals", 2).expect("2");
    h.publish("goals", 3).expect("3");
    assert_eq!(h.client.outbox().len(), 2);
    assert!(matches!(
        h.statuses(&first).last(),
        Some(MessageStatus::Failed {
            error: ClientError::Overflow
        })
    ));
}

#[test]
fn messages_expire_cancel_and_clear() {
    let mut h = Harness::new(|o| o.outbox.ttl_ms = 30_000);
    let a = h.publish("goals", 1).expect("a");
    let b = h.publish("goals", 2).expect("b");
    h.client.cancel(h.now(), &b).expect("cancel queued");
    h.drain();
    assert!(matches!(
        h.statuses(&b).last(),
        Some(MessageStatus::Failed {
            error: ClientError::Cancelled
        })
    ));
    h.advance(30_001);
    assert!(matches!(
        h.statuses(&a).last(),
        Some(MessageStatus::Failed {
            error: ClientError::Expired { .. }
        })
    ));

    let c = h.publish("goals", 3).expect("c");
    let now = h.now();
    h.client.subscribe(now, "goals").expect("sub");
    h.client.clear(now);
    h.drain();
    assert!(matches!(
        h.statuses(&c).last(),
        Some(MessageStatus::Failed {
            error: ClientError::Cancelled
        })
    ));
    assert!(h
        .outputs
        .iter()
        .any(|o| matches!(o, Output::Persist(op) if op.kind == PersistKind::Clear)));
    assert!(h.client.outbox().is_empty() && h.client.positions().is_empty());
}

#[test]
fn rate_limited_publishes_wait_the_advised_time() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    let id = h.publish("goals", 1).expect("a");
    let cmd = match h.sent().last() {
        Some(ClientFrame::Publish { id, .. }) => *id,
        other => panic!("{other:?}"),
    };
    let mut error = ErrorBody::new(ErrorCode::RateLimited, "slow down");
    error.retry_after_ms = Some(400);
    h.frame(ServerFrame::Error {
        id: Some(cmd),
        error,
    });
    let count = |h: &Harness| {
        h.sent()
            .iter()
            .filter(|f| matches!(f, ClientFrame::Publish { .. }))
            .count()
    };
    assert_eq!(count(&h), 1);
    h.advance(399);
    assert_eq!(count(&h), 1, "waits retry_after_ms");
    h.advance(2);
    assert_eq!(count(&h), 2);
    assert_eq!(h.client.outbox()[0].entry.msg_id, id);
}

#[test]
fn messages_queued_by_another_user_are_never_sent_with_this_token() {
    let mut h = Harness::new(|_| {});
    let mut snapshot = tidings::Snapshot::default();
    snapshot.outbox.push(tidings::OutboxEntry {
        msg_id: "m-emily".into(),
        channel: "goals".into(),
        event: "goal.updated".into(),
        data: Payload::null(),
        created_at_ms: WALL,
        user: Some("emily".into()),
    });
    h.input(Input::Restore(snapshot));
    h.go_live();
    assert!(!h
        .sent()
        .iter()
        .any(|f| matches!(f, ClientFrame::Publish { .. })));
    assert!(matches!(
        h.statuses("m-emily").last(),
        Some(MessageStatus::Failed {
            error: ClientError::UserMismatch
        })
    ));
}

#[test]
fn restored_outbox_and_positions_are_used_after_a_restart() {
    let mut h = Harness::new(|_| {});
    let mut snapshot = tidings::Snapshot::default();
    snapshot.outbox.push(tidings::OutboxEntry {
        msg_id: "m1".into(),
        channel: "goals".into(),
        event: "goal.updated".into(),
        data: Payload::null(),
        created_at_ms: WALL,
        user: Some("david".into()),
    });
    snapshot.positions.insert(
        "goals".into(),
        tidings::StreamPosition {
            epoch: "e1".into(),
            offset: 41,
        },
    );
    h.input(Input::Restore(snapshot));
    let now = h.now();
    h.client.subscribe(now, "goals").expect("sub");
    h.connect();
    h.open();
    match h.sent().last() {
        Some(ClientFrame::Connect { subs, .. }) => {
            assert_eq!(subs[0].recover.as_ref().map(|p| p.offset), Some(41));
        }
        other => panic!("{other:?}"),
    }
    let frame = h.connected_frame(vec![SubscribeResult {
        channel: "goals".into(),
        epoch: "e1".into(),
        offset: 41,
        recovered: true,
        publications: Vec::new(),
        unrecovered: Vec::new(),
        server_time: 0,
        error: None,
    }]);
    h.frame(frame);
    assert!(h
        .sent()
        .iter()
        .any(|f| matches!(f, ClientFrame::Publish { msg_id, .. } if msg_id == "m1")));
}

#[test]
fn events_are_batched_within_the_window_in_order() {
    let mut h = Harness::new(|o| o.batch_window_ms = 16);
    let now = h.now();
    h.client.subscribe(now, "a").expect("a");
    h.client.subscribe(now, "b").expect("b");
    h.drain();
    assert!(h.events.is_empty(), "held for the window");
    h.advance(16);
    let names: Vec<_> = h
        .events
        .iter()
        .map(|e| match e {
            Event::Subscription { channel, .. } => channel.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(names, vec!["a", "b"]);
}

#[test]
fn frames_of_an_old_transport_are_ignored() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    let old = h.transport.expect("t");
    h.close();
    h.advance(1_000);
    h.input(Input::Frame {
        transport: old,
        frame: ServerFrame::Disconnect {
            code: "x".into(),
            reason: "late".into(),
            advice: ReconnectAdvice {
                reconnect: false,
                not_before_ms: None,
            },
        },
    });
    assert!(!matches!(h.client.state(), ConnectionState::Failed { .. }));
}

#[test]
fn refused_subscription_is_reported_with_its_code() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    let now = h.now();
    h.client.subscribe(now, "secret").expect("valid name");
    h.drain();
    let id = match h.sent().last() {
        Some(ClientFrame::Subscribe { id, .. }) => *id,
        other => panic!("{other:?}"),
    };
    h.frame(ServerFrame::Error {
        id: Some(id),
        error: ErrorBody::new(ErrorCode::Forbidden, "not allowed"),
    });
    assert!(h.reported_error("forbidden"));
    assert!(matches!(
        h.client.subscription_state("secret"),
        Some(tidings::SubscriptionState::Failed { .. })
    ));
}

#[test]
fn storage_is_namespaced_by_server_and_user() {
    let a = Options {
        url: "wss://a/ws".into(),
        token: Some(token("david", None)),
        ..Options::default()
    };
    let b = Options {
        token: Some(token("emily", None)),
        ..a.clone()
    };
    assert_ne!(a.storage_namespace(), b.storage_namespace());
    assert!(a.storage_namespace().contains("david"));
}

#[test]
fn connect_while_offline_waits_for_the_network() {
    let mut h = Harness::new(|_| {});
    h.input(Input::Lifecycle(Lifecycle::Offline));
    h.connect();
    assert!(!h
        .outputs
        .iter()
        .any(|o| matches!(o, Output::OpenTransport { .. })));
    h.input(Input::Lifecycle(Lifecycle::Online));
    assert!(matches!(
        h.outputs.last(),
        Some(Output::OpenTransport { .. })
    ));
}

#[test]
fn a_pending_liveness_check_does_not_spin_on_past_deadlines() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    h.mono += 600_000;
    h.wake = None;
    h.input(Input::Timeout);
    assert!(matches!(h.sent().last(), Some(ClientFrame::Ping { .. })));
    let wake = h.wake.expect("a wake-up");
    assert!(
        wake > h.mono,
        "next wake {wake} must be in the future (now {})",
        h.mono
    );
}

#[test]
fn temporarily_refused_subscriptions_are_retried_after_the_advised_delay() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    let now = h.now();
    h.client.subscribe(now, "busy").expect("sub");
    h.drain();
    let count = |h: &Harness| {
        h.sent()
            .iter()
            .filter(|f| matches!(f, ClientFrame::Subscribe { .. }))
            .count()
    };
    let id = match h.sent().last() {
        Some(ClientFrame::Subscribe { id, .. }) => *id,
        other => panic!("{other:?}"),
    };
    let mut error = ErrorBody::new(ErrorCode::RateLimited, "later");
    error.retry_after_ms = Some(500);
    h.frame(ServerFrame::Error {
        id: Some(id),
        error,
    });
    assert_eq!(count(&h), 1);
    h.advance(499);
    assert_eq!(count(&h), 1);
    h.advance(2);
    assert_eq!(count(&h), 2, "resent after retry_after_ms");
}

/// Live with a token that expires in 2 minutes, kept alive until the refresh is due (it
/// has asked its provider once). Returns the harness and the token's `exp` (s).
fn live_until_refresh() -> (Harness, u64) {
    let exp_s = (WALL + 1_000 + 120_000) / 1000;
    let mut h = Harness::new(|o| {
        o.token = Some(token("david", Some(exp_s)));
        o.token_provider = true;
    });
    h.go_live();
    h.keep_alive(95_000);
    (h, exp_s)
}

fn fetches(h: &Harness) -> usize {
    h.outputs
        .iter()
        .filter(|o| matches!(o, Output::FetchToken))
        .count()
}

#[test]
fn a_failed_refresh_is_retried_before_the_token_expires() {
    let (mut h, _) = live_until_refresh();
    assert_eq!(fetches(&h), 1);
    h.input(Input::Token(Err("auth server down".into())));
    assert!(h.reported_error("token_provider"));
    h.keep_alive(6_000);
    assert_eq!(fetches(&h), 2, "asked again after 5 s");
    assert_eq!(h.client.state(), &ConnectionState::Connected);
}

#[test]
fn a_chosen_message_id_is_sent_as_is_and_queued_once() {
    let mut h = Harness::new(|_| {});
    h.go_live();
    let data = || Payload::from_json(r#"{"n":1}"#).expect("json");
    let now = h.now();
    let id = h
        .client
        .publish_with_id(now, "goals", "goal.updated", data(), Some("tab-7:m1"))
        .expect("accepted");
    h.drain();
    assert_eq!(id, "tab-7:m1");
    let publishes = |h: &Harness| {
        h.sent()
            .into_iter()
            .filter(|f| matches!(f, ClientFrame::Publish { msg_id, .. } if msg_id == "tab-7:m1"))
            .count()
    };
    assert_eq!(publishes(&h), 1);
    // The same message handed over again (a tab retrying through this leader): not queued
    // twice, not sent twice, and its status is reported again.
    let reported = h.statuses("tab-7:m1").len();
    let now = h.now();
    let again = h
        .client
        .publish_with_id(now, "goals", "goal.updated", data(), Some("tab-7:m1"))
        .expect("same message");
    h.drain();
    assert_eq!(again, "tab-7:m1");
    assert_eq!(h.client.outbox().len(), 1);
    assert_eq!(publishes(&h), 1);
    assert_eq!(h.statuses("tab-7:m1").len(), reported + 1);
    assert_eq!(h.statuses("tab-7:m1").last(), Some(&MessageStatus::Sent));

    let now = h.now();
    let code = |r: Result<String, ClientError>| r.expect_err("refused").code();
    let other_channel =
        h.client
            .publish_with_id(now, "other", "goal.updated", data(), Some("tab-7:m1"));
    assert_eq!(code(other_channel), "invalid_message_id");
    for bad in ["", "has space", &"x".repeat(129)] {
        let r = h
            .client
            .publish_with_id(now, "goals", "goal.updated", data(), Some(bad));
        assert_eq!(code(r), "invalid_message_id", "{bad:?}");
    }
    assert_eq!(h.client.outbox().len(), 1);
}

#[test]
fn a_refresh_refused_as_expired_asks_the_provider_again() {
    let (mut h, exp_s) = live_until_refresh();
    let refresh_id = |h: &Harness| match h.sent().last() {
        Some(ClientFrame::Refresh { id, .. }) => *id,
        other => panic!("no refresh sent: {other:?}"),
    };
    assert_eq!(fetches(&h), 1);
    // The provider's token has expired by the time the server checks it.
    h.input(Input::Token(Ok(token("david", Some(exp_s + 3_600)))));
    let id = refresh_id(&h);
    h.frame(ServerFrame::Error {
        id: Some(id),
        error: ErrorBody::new(ErrorCode::TokenExpired, "expired"),
    });
    assert!(h.reported_error("token_expired"));
    h.keep_alive(6_000);
    assert_eq!(fetches(&h), 2, "asked again after 5 s");
    assert_eq!(h.client.state(), &ConnectionState::Connected);

    // A refresh refused as `unauthorized` is not retried (the server disconnects at `exp`).
    h.input(Input::Token(Ok(token("david", Some(exp_s + 3_600)))));
    let id = refresh_id(&h);
    h.frame(ServerFrame::Error {
        id: Some(id),
        error: ErrorBody::new(ErrorCode::Unauthorized, "revoked"),
    });
    h.keep_alive(6_000);
    assert_eq!(fetches(&h), 2, "not asked again");
}

#[test]
fn subscriptions_that_do_not_fit_in_connect_follow_as_subscribe_frames() {
    // 40 subscriptions with long names do not fit in one 2,000-byte connect frame.
    let mut h = Harness::new(|o| o.max_frame_bytes = 2_000);
    let names: Vec<String> = (0..40)
        .map(|i| format!("team:{i:02}:{}", "x".repeat(60)))
        .collect();
    for name in &names {
        let now = h.now();
        h.client.subscribe(now, name).expect("valid");
    }
    h.drain();
    h.connect();
    h.open();
    let sent = h.sent();
    let Some(ClientFrame::Connect { subs, .. }) = sent.last() else {
        panic!("no connect: {sent:?}")
    };
    let in_connect: Vec<String> = subs.iter().map(|r| r.channel.clone()).collect();
    assert!(
        !in_connect.is_empty() && in_connect.len() < names.len(),
        "{}",
        in_connect.len()
    );
    let size = sent.last().expect("connect").to_json().len();
    assert!(size <= 2_000, "connect frame is {size} bytes");
    // Once connected, the rest go out one by one; every name exactly once in all.
    let results = in_connect
        .iter()
        .map(|c| SubscribeResult {
            channel: c.clone(),
            epoch: "e".into(),
            offset: 0,
            recovered: true,
            publications: Vec::new(),
            unrecovered: Vec::new(),
            server_time: WALL,
            error: None,
        })
        .collect();
    let before = h.sent().len();
    let connected = h.connected_frame(results);
    h.frame(connected);
    let followed: Vec<String> = h.sent()[before..]
        .iter()
        .filter_map(|f| match f {
            ClientFrame::Subscribe { request, .. } => Some(request.channel.clone()),
            _ => None,
        })
        .collect();
    let mut all: Vec<String> = in_connect.into_iter().chain(followed).collect();
    all.sort();
    assert_eq!(all, names);
}
