//! The hand-written JSON of app-facing types (what the browser build hands to JavaScript
//! and the stores write) has exactly the shape of their serde derives, so the JS wrapper,
//! the mobile layer and Rust apps using serde all see one format.
#![cfg(feature = "serde")]

use serde_json::Value;
use tidings::json::ToJson;
use tidings::protocol::Publisher;
use tidings::{
    ClientError, ConnectionState, ErrorCode, Event, MessageStatus, Options, OutboxEntry, Payload,
    PendingMessage, PersistKind, Publication, Snapshot, Stats, StreamPosition, SubscriptionState,
};

fn same_shape<T: ToJson + serde::Serialize + std::fmt::Debug>(value: &T) {
    let ours: Value = serde_json::from_str(&value.to_json())
        .unwrap_or_else(|e| panic!("invalid JSON for {value:?}: {e}\n{}", value.to_json()));
    let serde = serde_json::to_value(value).expect("serde serializes");
    assert_eq!(ours, serde, "shapes differ for {value:?}");
}

fn publication(info: Option<&str>) -> Publication {
    Publication {
        channel: "team:1".into(),
        epoch: "e1".into(),
        offset: 7,
        id: "m-1".into(),
        event: "kudos.created".into(),
        data: Payload::from_json(r#"{"to":"david","n":[1,2.5,"x\"y"]}"#).expect("json"),
        ts: 1_700_000_000_123,
        publisher: Publisher {
            user: "ana".into(),
            client: info.map(|_| "c-9".into()),
            info: info.map(|i| Payload::from_json(i).expect("json")),
        },
    }
}

fn errors() -> Vec<ClientError> {
    vec![
        ClientError::InvalidChannel {
            name: "bad name".into(),
            reason: "no spaces".into(),
        },
        ClientError::Expired { waited_ms: 5 },
        ClientError::Server {
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            temporary: true,
            retry_after_ms: Some(250),
        },
        ClientError::Server {
            code: ErrorCode::Other,
            message: "?".into(),
            temporary: false,
            retry_after_ms: None,
        },
    ]
}

fn entry(user: Option<&str>) -> OutboxEntry {
    OutboxEntry {
        msg_id: "m-2".into(),
        channel: "room".into(),
        event: "post".into(),
        data: Payload::from_json("\"héllo ✓\\n\"").expect("json"),
        created_at_ms: 42,
        user: user.map(str::to_owned),
    }
}

fn statuses() -> Vec<MessageStatus> {
    let mut all = vec![
        MessageStatus::Persisting,
        MessageStatus::Queued,
        MessageStatus::Sent,
        MessageStatus::Acked {
            epoch: "e".into(),
            offset: 3,
        },
    ];
    all.extend(
        errors()
            .into_iter()
            .map(|error| MessageStatus::Failed { error }),
    );
    all
}

fn states() -> Vec<ConnectionState> {
    vec![
        ConnectionState::Disconnected,
        ConnectionState::Connecting,
        ConnectionState::Connected,
        ConnectionState::Reconnecting {
            attempt: 2,
            retry_in_ms: Some(1500),
        },
        ConnectionState::Reconnecting {
            attempt: 1,
            retry_in_ms: None,
        },
        ConnectionState::Failed {
            code: "gave_up".into(),
            message: "no luck".into(),
        },
    ]
}

#[test]
fn events_match_their_serde_shape() {
    let mut events = vec![
        Event::Publication(publication(None)),
        Event::Publication(publication(Some(r#"{"name":"Ana"}"#))),
        Event::Subscribed {
            channel: "c".into(),
            recovered: false,
            needs_reload: true,
        },
        Event::StoreWarning {
            message: "quota".into(),
        },
    ];
    for (old, new) in states().into_iter().zip(states().into_iter().rev()) {
        events.push(Event::State {
            old,
            new,
            reason: "because".into(),
        });
    }
    let mut subscription_states = vec![
        SubscriptionState::Subscribing,
        SubscriptionState::Subscribed,
        SubscriptionState::Unsubscribed,
    ];
    subscription_states.extend(
        errors()
            .into_iter()
            .map(|error| SubscriptionState::Failed { error }),
    );
    for state in subscription_states {
        events.push(Event::Subscription {
            channel: "c".into(),
            state,
        });
    }
    for status in statuses() {
        events.push(Event::Message {
            msg_id: "m".into(),
            channel: "c".into(),
            status,
        });
    }
    for error in errors() {
        events.push(Event::Error { error });
    }
    for event in &events {
        same_shape(event);
    }
    same_shape(&events);
}

#[test]
fn outbox_stats_and_snapshots_match_their_serde_shape() {
    for user in [None, Some("ana")] {
        same_shape(&entry(user));
        for status in statuses() {
            same_shape(&PendingMessage {
                entry: entry(user),
                status,
            });
        }
    }
    same_shape(&Stats::default());
    same_shape(&Stats {
        state: "connected".into(),
        rtt_ms: Some(12),
        reconnects: 1,
        queue_depth: 2,
        subscriptions: 3,
        recoveries_succeeded: 4,
        recoveries_failed: 5,
        publications_delivered: 6,
        duplicates_dropped: 7,
        messages_acked: 8,
        client_id: Some("c".into()),
        session_id: Some("s".into()),
    });
    let position = StreamPosition {
        epoch: "e".into(),
        offset: 4,
    };
    for kind in [
        PersistKind::PutMessage { entry: entry(None) },
        PersistKind::RemoveMessage { msg_id: "m".into() },
        PersistKind::PutPosition {
            channel: "c".into(),
            position,
        },
        PersistKind::RemovePosition {
            channel: "c".into(),
        },
        PersistKind::PutPatternSince {
            pattern: "p:*".into(),
            since: 5,
        },
        PersistKind::Clear,
    ] {
        same_shape(&kind);
    }
    let mut snapshot = Snapshot::default();
    same_shape(&snapshot);
    snapshot.outbox = vec![entry(None), entry(Some("ana"))];
    snapshot.positions.insert(
        "b".into(),
        StreamPosition {
            epoch: "e".into(),
            offset: 9,
        },
    );
    snapshot.positions.insert(
        "a".into(),
        StreamPosition {
            epoch: "f".into(),
            offset: 0,
        },
    );
    snapshot.pattern_since.insert("p:*".into(), 77);
    same_shape(&snapshot);
    // And both readers read it back.
    assert_eq!(
        Snapshot::from_json(&snapshot.to_json()),
        Ok(snapshot.clone())
    );
    let via_serde: Snapshot = serde_json::from_str(&snapshot.to_json()).expect("serde reads it");
    assert_eq!(via_serde, snapshot);
}

#[test]
fn options_read_the_same_as_with_serde() {
    let text = r#"{"url":"wss://x/ws","token":"t","token_provider":true,"user":"ana",
        "client_name":"n","client_version":"v","connect_timeout_ms":1,"command_timeout_ms":2,
        "ping_interval_ms":3,"heartbeat_grace_ms":4,"liveness_timeout_ms":5,"clock_jump_ms":6,
        "token_refresh_margin_ms":7,"batch_window_ms":8,"max_frame_bytes":9,"max_channels":10,
        "reconnect":{"base_delay_ms":11,"max_delay_ms":12,"factor":1.25,"max_attempts":13,"reset_after_ms":14},
        "outbox":{"max_messages":15,"ttl_ms":16,"full_policy":"drop_oldest","max_in_flight":17}}"#;
    let ours = Options::from_json(text).expect("ours");
    let theirs: Options = serde_json::from_str(text).expect("serde");
    assert_eq!(ours, theirs);
    assert_ne!(ours, Options::default());
    let partial = r#"{"url":"ws://y","reconnect":{"max_attempts":null}}"#;
    assert_eq!(
        Options::from_json(partial).expect("ours"),
        serde_json::from_str::<Options>(partial).expect("serde")
    );
}
