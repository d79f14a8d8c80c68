//! The UniFFI-facing API (what Kotlin and Swift call), exercised from Rust against an
//! in-process reference server. Listeners are Rust implementations of the foreign traits.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tests::{config, eventually, http, start, tls_proxy, token, API_KEY};
use tidings_mobile::{
    ChannelListener, ClientConfig, ClientListener, ConnectionState, MessageStatus, Publication,
    SqliteStore, TidingsClient, TidingsError, TokenProvider,
};

fn client_config(url: &str, user: &str, database: Option<&std::path::Path>) -> ClientConfig {
    ClientConfig {
        url: url.into(),
        token: Some(token(user)),
        database_path: database.map(|p| p.to_string_lossy().into_owned()),
        ..ClientConfig::default()
    }
}

fn client(url: &str, user: &str, database: Option<&std::path::Path>) -> Arc<TidingsClient> {
    TidingsClient::new(client_config(url, user, database), None).expect("client")
}

/// `POST /api/publish` from the app's "back end".
async fn http_publish(addr: SocketAddr, channel: &str, event: &str, data: serde_json::Value) {
    let body = serde_json::json!({ "channel": channel, "event": event, "data": data });
    let (status, reply) = http(addr, "POST", "/api/publish", Some(API_KEY), Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
}

// ---------------------------------------------------------------- recording listeners

#[derive(Clone, Debug, PartialEq)]
enum Seen {
    State(ConnectionState, ConnectionState, String),
    Error(String),
    Status(String, MessageStatus),
}

#[derive(Clone, Default)]
struct ClientRecorder(Arc<Mutex<Vec<Seen>>>);

impl ClientRecorder {
    fn all(&self) -> Vec<Seen> {
        self.0.lock().expect("lock").clone()
    }
    fn states(&self) -> Vec<ConnectionState> {
        self.all()
            .into_iter()
            .filter_map(|s| match s {
                Seen::State(_, new, _) => Some(new),
                _ => None,
            })
            .collect()
    }
}

impl ClientListener for ClientRecorder {
    fn on_state_changed(&self, old: ConnectionState, new: ConnectionState, reason: String) {
        self.0
            .lock()
            .expect("lock")
            .push(Seen::State(old, new, reason));
    }
    fn on_error(&self, code: String, _message: String) {
        self.0.lock().expect("lock").push(Seen::Error(code));
    }
    fn on_message_status(&self, msg_id: String, _channel: String, status: MessageStatus) {
        self.0
            .lock()
            .expect("lock")
            .push(Seen::Status(msg_id, status));
    }
}

#[derive(Clone, Default)]
struct ChannelRecorder {
    publications: Arc<Mutex<Vec<Publication>>>,
    subscribed: Arc<Mutex<Vec<(bool, bool)>>>,
}

impl ChannelRecorder {
    fn numbers(&self) -> Vec<u64> {
        self.publications
            .lock()
            .expect("lock")
            .iter()
            .map(|p| {
                let v: serde_json::Value = serde_json::from_str(&p.data).expect("json data");
                v["n"].as_u64().expect("n")
            })
            .collect()
    }
    fn len(&self) -> usize {
        self.publications.lock().expect("lock").len()
    }
}

impl ChannelListener for ChannelRecorder {
    fn on_publications(&self, batch: Vec<Publication>) {
        self.publications.lock().expect("lock").extend(batch);
    }
    fn on_subscribed(&self, recovered: bool, needs_reload: bool) {
        self.subscribed
            .lock()
            .expect("lock")
            .push((recovered, needs_reload));
    }
}

// ---------------------------------------------------------------- tests

/// The Kotlin and Swift quickstarts mirror this test.
#[tokio::test]
async fn connect_subscribe_receive_and_publish() {
    let server = start(config(None), None);
    let url = server.ws_url();
    let dir = tempfile::tempdir().expect("tempdir");

    let david = client(&url, "david", Some(&dir.path().join("david.db")));
    let states = ClientRecorder::default();
    let _state_handle = david
        .add_listener(Box::new(states.clone()))
        .expect("listen");
    david.connect().await.expect("connected");
    let recognitions = david.channel("recognitions".into());
    let incoming = ChannelRecorder::default();
    let handle = recognitions
        .add_listener(Box::new(incoming.clone()))
        .expect("listen");
    recognitions.subscribe().await.expect("subscribed");
    // Listeners run on their own task: the callback may come just after `subscribe()`.
    eventually(5, "on_subscribed", || async {
        !incoming.subscribed.lock().expect("lock").is_empty()
    })
    .await;
    assert_eq!(
        *incoming.subscribed.lock().expect("lock"),
        vec![(false, false)],
        "a first subscription has nothing to recover"
    );

    let emily = client(&url, "emily", None);
    emily.connect().await.expect("connected");
    let ack = emily
        .channel("recognitions".into())
        .publish(
            "recognition.created".into(),
            r#"{"to":"david","text":"Great demo!","n":0}"#.into(),
        )
        .await
        .expect("acked");

    // And from the app's back end, through the HTTP publish API.
    http_publish(
        server.addr(),
        "recognitions",
        "recognition.created",
        serde_json::json!({ "to": "david", "n": 1 }),
    )
    .await;

    eventually(5, "two publications", || async { incoming.len() == 2 }).await;
    let got = incoming.publications.lock().expect("lock").clone();
    assert_eq!(got[0].event, "recognition.created");
    assert_eq!(got[0].offset, ack.offset);
    assert_eq!(got[0].publisher, "emily");
    assert_eq!(got[0].channel, "recognitions");
    let data: serde_json::Value = serde_json::from_str(&got[0].data).expect("json");
    assert_eq!(data["text"], "Great demo!");
    assert_eq!(got[1].publisher, "server");
    assert_eq!(incoming.numbers(), vec![0, 1]);

    assert_eq!(david.state(), ConnectionState::Connected);
    assert_eq!(
        states.states().first(),
        Some(&ConnectionState::Connecting),
        "{:?}",
        states.all()
    );
    assert!(states.states().contains(&ConnectionState::Connected));
    let stats = emily.stats().await.expect("stats");
    assert_eq!(stats.messages_acked, 1);
    assert!(stats.rtt_ms.is_some());
    let stats = david.stats().await.expect("stats");
    assert_eq!(stats.publications_delivered, 2);
    assert_eq!(stats.subscriptions, 1);

    // A cancelled listener gets nothing more; the other handles still work.
    handle.cancel();
    assert!(!handle.is_active());
    emily
        .publish(
            "recognitions".into(),
            "recognition.created".into(),
            r#"{"n":2}"#.into(),
        )
        .await
        .expect("ack");
    eventually(5, "n=2 reached david", || async {
        david.stats().await.map(|s| s.publications_delivered) == Ok(3)
    })
    .await;
    let more = ChannelRecorder::default();
    let _more_handle = recognitions
        .add_listener(Box::new(more.clone()))
        .expect("listen");
    emily
        .publish(
            "recognitions".into(),
            "recognition.created".into(),
            r#"{"n":3}"#.into(),
        )
        .await
        .expect("ack");
    eventually(5, "the new listener's publication", || async {
        more.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(incoming.numbers(), vec![0, 1]);
    assert_eq!(more.numbers(), vec![3]);

    david.close().await;
    emily.close().await;
    assert!(matches!(
        david.connect().await,
        Err(TidingsError::Connection { ref code, .. }) if code == "closed"
    ));
    drop(server);
}

/// Publishes made while the server is down wait in the SQLite outbox and are delivered
/// exactly once after it comes back on the same address with the same data dir.
#[tokio::test]
async fn publish_while_the_server_is_down_is_delivered_once_after_restart() {
    let data = tempfile::tempdir().expect("tempdir");
    let db = tempfile::tempdir().expect("tempdir");
    let server = start(config(Some(data.path().to_path_buf())), None);
    let addr = server.addr();
    let url = server.ws_url();

    let reader = client(&url, "reader", None);
    let posts = ChannelRecorder::default();
    let channel = reader.channel("posts".into());
    let _h = channel
        .add_listener(Box::new(posts.clone()))
        .expect("listen");
    reader.connect().await.expect("connect");
    channel.subscribe().await.expect("sub");

    let writer = client(&url, "writer", Some(&db.path().join("writer.db")));
    let seen = ClientRecorder::default();
    let _w = writer.add_listener(Box::new(seen.clone())).expect("listen");
    writer.connect().await.expect("connect");

    server.kill();
    eventually(5, "writer notices", || async {
        writer.state() != ConnectionState::Connected
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            writer
                .publish_queued(
                    "posts".into(),
                    "post.created".into(),
                    format!(r#"{{"n":{n}}}"#),
                )
                .await
                .expect("queued"),
        );
    }
    let outbox = writer.outbox().await.expect("outbox");
    assert_eq!(
        outbox.iter().map(|m| m.msg_id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert!(outbox.iter().all(|m| m.status == MessageStatus::Queued));
    assert_eq!(outbox[1].data, r#"{"n":1}"#);

    let server = start(config(Some(data.path().to_path_buf())), Some(addr));
    // Do not wait for the backoff: coming back to the foreground reconnects at once.
    writer.on_foreground();
    reader.on_foreground();
    eventually(20, "3 delivered", || async { posts.len() >= 3 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(posts.numbers(), vec![0, 1, 2]);
    eventually(5, "outbox drained", || async {
        writer.outbox().await.map(|o| o.is_empty()).unwrap_or(false)
    })
    .await;
    let acked: Vec<String> = seen
        .all()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Status(id, MessageStatus::Acked { .. }) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(acked, ids);
    // The listener saw the drop and the recovery: ... → Reconnecting → ... → Connected.
    let states = seen.states();
    let reconnecting = states
        .iter()
        .position(|s| matches!(s, ConnectionState::Reconnecting { .. }))
        .expect("reconnecting");
    assert!(
        states[reconnecting..].contains(&ConnectionState::Connected),
        "{states:?}"
    );
    writer.close().await;
    reader.close().await;
    drop(server);
}

/// An app killed with messages in its outbox resends them after a restart, and a
/// message the server already stored (the ack was lost with the app) is not duplicated.
#[tokio::test]
async fn app_kill_and_restart_resends_the_outbox_without_duplicates() {
    let server = start(config(None), None);
    let url = server.ws_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");

    let reader = client(&url, "reader", None);
    let notes = ChannelRecorder::default();
    let channel = reader.channel("notes".into());
    let _h = channel
        .add_listener(Box::new(notes.clone()))
        .expect("listen");
    reader.connect().await.expect("connect");
    channel.subscribe().await.expect("sub");

    // 1. Published and acked; then we pretend the app died before it removed the
    //    message from its outbox: the stored row is put back.
    let first = client(&url, "writer", Some(&db));
    first.connect().await.expect("connect");
    let ack = first
        .publish("notes".into(), "note.added".into(), r#"{"n":1}"#.into())
        .await
        .expect("ack");
    // 2. Queued while offline (never sent).
    first.on_network_changed(false);
    first.disconnect().await.expect("disconnect");
    let queued = first
        .publish_queued("notes".into(), "note.added".into(), r#"{"n":2}"#.into())
        .await
        .expect("durable");
    first.close().await;
    drop(first);

    let namespace = tidings::Options {
        url: url.clone(),
        token: Some(token("writer")),
        ..tidings::Options::default()
    }
    .storage_namespace();
    {
        let store = SqliteStore::open(&db).expect("open");
        let mut snapshot = store.snapshot(&namespace).await.expect("load");
        assert_eq!(
            snapshot.outbox.len(),
            1,
            "only the unsent message is stored"
        );
        let unsent = snapshot.outbox.remove(0);
        assert_eq!(unsent.msg_id, queued);
        let mut already_sent = unsent.clone();
        already_sent.msg_id = ack.msg_id.clone();
        already_sent.data = tidings::Payload::from(serde_json::json!({ "n": 1 }));
        // Rebuild the outbox as it was at the "kill": the acked message first.
        store
            .write(&namespace, &tidings::PersistKind::Clear)
            .await
            .expect("clear");
        for entry in [already_sent, unsent] {
            store
                .write(&namespace, &tidings::PersistKind::PutMessage { entry })
                .await
                .expect("put");
        }
    }

    // The app starts again with the same database.
    let second = client(&url, "writer", Some(&db));
    let seen = ClientRecorder::default();
    let _s = second.add_listener(Box::new(seen.clone())).expect("listen");
    let outbox = second.outbox().await.expect("outbox");
    assert_eq!(
        outbox.iter().map(|m| m.msg_id.clone()).collect::<Vec<_>>(),
        vec![ack.msg_id.clone(), queued.clone()]
    );
    second.connect().await.expect("connect");
    eventually(5, "outbox drained", || async {
        second.outbox().await.map(|o| o.is_empty()).unwrap_or(false)
    })
    .await;
    eventually(5, "two notes", || async { notes.len() >= 2 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(notes.numbers(), vec![1, 2], "each message exactly once");
    // The resent message got its original place back from the server's dedupe.
    let resent_offset = seen.all().into_iter().find_map(|s| match s {
        Seen::Status(id, MessageStatus::Acked { offset, .. }) if id == ack.msg_id => Some(offset),
        _ => None,
    });
    assert_eq!(resent_offset, Some(ack.offset));
    second.close().await;
    reader.close().await;
    drop(server);
}

/// `on_network_changed`, `on_background`, `on_foreground` drive the core's lifecycle.
#[tokio::test]
async fn lifecycle_calls_pause_and_resume_reconnecting() {
    let server = start(config(None), None);
    let addr = server.addr();
    let url = server.ws_url();
    let app = client(&url, "david", None);
    let seen = ClientRecorder::default();
    let _h = app.add_listener(Box::new(seen.clone())).expect("listen");
    app.connect().await.expect("connect");

    // Background then foreground on a healthy link: a liveness ping, still connected.
    app.on_background();
    app.on_foreground();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.state(), ConnectionState::Connected);

    // The network goes away and the server with it: the client waits, not retrying.
    app.on_network_changed(false);
    server.kill();
    eventually(5, "waiting for the network", || async {
        matches!(
            app.state(),
            ConnectionState::Reconnecting {
                retry_in_ms: None,
                ..
            }
        )
    })
    .await;
    let server = start(config(None), Some(addr));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        matches!(app.state(), ConnectionState::Reconnecting { .. }),
        "offline: no retry while the network is away"
    );

    // Back online: it reconnects at once.
    let before = std::time::Instant::now();
    app.on_network_changed(true);
    eventually(5, "reconnected", || async {
        app.state() == ConnectionState::Connected
    })
    .await;
    assert!(before.elapsed() < Duration::from_secs(3));
    assert!(seen.all().iter().any(
        |s| matches!(s, Seen::State(_, ConnectionState::Connected, reason) if reason == "online")
            || matches!(s, Seen::State(_, ConnectionState::Connecting, reason) if reason == "online")
    ) || seen.states().last() == Some(&ConnectionState::Connected));
    assert!(app.stats().await.expect("stats").reconnects >= 1);
    app.close().await;
    drop(server);
}

#[tokio::test]
async fn bad_input_and_bad_tokens_get_stable_codes() {
    let server = start(config(None), None);
    let url = server.ws_url();
    let app = client(&url, "david", None);
    app.connect().await.expect("connect");

    let err = app
        .publish("posts".into(), "post.created".into(), "{not json".into())
        .await
        .expect_err("invalid json");
    assert_eq!(err.code(), "invalid_json");
    let err = app
        .publish("posts:*".into(), "post.created".into(), "{}".into())
        .await
        .expect_err("pattern");
    assert!(
        matches!(err, TidingsError::InvalidArgument { .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), "publish_to_pattern");
    let err = app
        .cancel("no-such-message".into())
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), "unknown_message");
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(100_000));
    let err = app
        .publish("posts".into(), "post.created".into(), big)
        .await
        .expect_err("too large");
    assert_eq!(err.code(), "frame_too_large");

    let err = TidingsClient::new(
        ClientConfig {
            url: String::new(),
            ..ClientConfig::default()
        },
        None,
    )
    .expect_err("no url");
    assert_eq!(err.code(), "invalid_config");
    let err = TidingsClient::new(
        ClientConfig {
            url: url.clone(),
            options_json: Some(r#"{"reconnect": 5}"#.into()),
            ..ClientConfig::default()
        },
        None,
    )
    .expect_err("bad options");
    assert_eq!(err.code(), "invalid_config");
    let err = TidingsClient::new(
        ClientConfig {
            url: url.clone(),
            ca_pem: Some("not a certificate".into()),
            ..ClientConfig::default()
        },
        None,
    )
    .expect_err("bad CA");
    assert_eq!(err.code(), "invalid_config");

    let intruder = TidingsClient::new(
        ClientConfig {
            url: url.clone(),
            token: Some("not-a-jwt".into()),
            ..ClientConfig::default()
        },
        None,
    )
    .expect("client");
    let seen = ClientRecorder::default();
    let _h = intruder
        .add_listener(Box::new(seen.clone()))
        .expect("listen");
    let err = tokio::time::timeout(Duration::from_secs(10), intruder.connect())
        .await
        .expect("answered")
        .expect_err("refused");
    assert!(matches!(err, TidingsError::Auth { .. }), "{err:?}");
    assert_eq!(err.code(), "unauthorized");
    eventually(2, "failed state", || async {
        matches!(intruder.state(), ConnectionState::Failed { ref code, .. } if code == "unauthorized")
    })
    .await;
    app.close().await;
    intruder.close().await;
    drop(server);
}

struct Tokens {
    user: String,
    calls: Arc<Mutex<u32>>,
}

#[async_trait::async_trait]
impl TokenProvider for Tokens {
    async fn fetch_token(&self) -> Result<String, TidingsError> {
        *self.calls.lock().expect("lock") += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(token(&self.user))
    }
}

#[tokio::test]
async fn a_token_provider_alone_is_enough_and_options_json_is_applied() {
    let server = start(config(None), None);
    let url = server.ws_url();
    let calls = Arc::new(Mutex::new(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TidingsClient::new(
        ClientConfig {
            url: url.clone(),
            database_path: Some(dir.path().join("t.db").to_string_lossy().into_owned()),
            options_json: Some(r#"{"outbox": {"max_messages": 1}}"#.into()),
            ..ClientConfig::default()
        },
        Some(Arc::new(Tokens {
            user: "frank".into(),
            calls: calls.clone(),
        })),
    )
    .expect("client");
    app.connect().await.expect("connect with a fetched token");
    assert!(*calls.lock().expect("lock") >= 1);
    let ack = app
        .publish("chat".into(), "msg".into(), r#"{"hi":true}"#.into())
        .await
        .expect("ack");
    assert!(!ack.msg_id.is_empty());

    // max_messages = 1: a second queued message while offline is refused.
    app.on_network_changed(false);
    app.disconnect().await.expect("disconnect");
    app.publish_queued("chat".into(), "msg".into(), "1".into())
        .await
        .expect("first fits");
    let err = app
        .publish_queued("chat".into(), "msg".into(), "2".into())
        .await
        .expect_err("full");
    assert_eq!(err.code(), "outbox_full");
    assert!(matches!(err, TidingsError::Outbox { .. }));

    // Logout wipes the stored outbox.
    app.clear().await.expect("clear");
    assert!(app.outbox().await.expect("outbox").is_empty());
    app.close().await;
    drop(server);
}

// ---------------------------------------------------------------- TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_the_ca_pem_option() {
    let server = start(config(None), None);
    let (port, ca_pem) = tls_proxy(server.addr()).await;
    let url = format!("wss://localhost:{port}/ws");

    let trusted = TidingsClient::new(
        ClientConfig {
            ca_pem: Some(ca_pem),
            ..client_config(&url, "david", None)
        },
        None,
    )
    .expect("client");
    trusted.connect().await.expect("wss connect");
    trusted
        .publish("secure".into(), "x.y".into(), r#"{"n":1}"#.into())
        .await
        .expect("ack");

    let untrusted = TidingsClient::new(
        ClientConfig {
            options_json: Some(r#"{"reconnect": {"max_attempts": 1}}"#.into()),
            ..client_config(&url, "emily", None)
        },
        None,
    )
    .expect("client");
    let outcome = tokio::time::timeout(Duration::from_secs(10), untrusted.connect()).await;
    match outcome {
        Ok(Err(e)) => assert_eq!(e.code(), "connection_failed"),
        other => panic!("an unknown CA must not connect: {other:?}"),
    }
    trusted.close().await;
    untrusted.close().await;
    drop(server);
}

struct Unreachable;

#[async_trait::async_trait]
impl TokenProvider for Unreachable {
    async fn fetch_token(&self) -> Result<String, TidingsError> {
        Err(TidingsError::Auth {
            code: "token_provider".into(),
            detail: "offline".into(),
        })
    }
}

/// An app that starts offline with only a token provider cannot learn its user from a
/// token; with `user` set, its stored outbox is still loaded at start.
#[tokio::test]
async fn with_a_token_provider_offline_the_user_setting_finds_the_stored_outbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let url = "ws://127.0.0.1:9/ws".to_string(); // nothing listens: offline
    let config = || ClientConfig {
        url: url.clone(),
        user: Some("frank".into()),
        database_path: Some(db.to_string_lossy().into_owned()),
        ..ClientConfig::default()
    };
    let first = TidingsClient::new(config(), Some(Arc::new(Unreachable))).expect("client");
    let id = first
        .publish_queued("chat".into(), "msg".into(), r#"{"n":1}"#.into())
        .await
        .expect("durable");
    first.close().await;
    drop(first);

    let second = TidingsClient::new(config(), Some(Arc::new(Unreachable))).expect("client");
    let outbox = second.outbox().await.expect("outbox");
    assert_eq!(
        outbox.iter().map(|m| m.msg_id.clone()).collect::<Vec<_>>(),
        vec![id]
    );
    second.close().await;
}

/// Freeing the client object (Kotlin's `close()` / GC, Swift's deinit) stops it, but not
/// while one of its channels is still in use.
#[tokio::test]
async fn a_freed_client_stops_once_its_channels_are_freed_too() {
    let server = start(config(None), None);
    let app = client(&server.ws_url(), "david", None);
    let handle = app
        .add_listener(Box::new(ClientRecorder::default()))
        .expect("listen");
    app.connect().await.expect("connect");
    let channel = app.channel("kept".into());
    drop(app);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(handle.is_active(), "the channel keeps its client running");
    channel.subscribe().await.expect("still usable");
    channel
        .publish("e".into(), "1".into())
        .await
        .expect("still usable");
    drop(channel);
    eventually(5, "stopped", || async { !handle.is_active() }).await;
    drop(server);
}
