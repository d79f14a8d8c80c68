//! End to end: native clients against a real reference server on a loopback port.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use tests::{
    client, config, eventually, http, start, tls_proxy, token, token_with, Recorder, API_KEY,
};
use tidings::native::{TidingsClient, TlsOptions};
use tidings::{ConnectionState, Event, Lifecycle, MemoryStore};

fn subscribed_events(recorder: &Recorder, channel: &str) -> Vec<(bool, bool)> {
    recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Subscribed {
                channel: c,
                recovered,
                needs_reload,
            } if c == channel => Some((recovered, needs_reload)),
            _ => None,
        })
        .collect()
}

fn numbers(values: &[serde_json::Value]) -> Vec<u64> {
    values.iter().filter_map(|v| v["n"].as_u64()).collect()
}

/// The README quickstart is this test.
#[tokio::test]
async fn quickstart_two_clients_publish_and_receive() {
    let server = start(config(None), None);
    let url = server.ws_url();

    // --- quickstart ---
    let david = TidingsClient::builder(&url).token(token("david")).build();
    david.connect().await.expect("connected");
    let recognitions = david.channel("recognitions");
    let mut incoming = recognitions.publications();
    recognitions.subscribe().await.expect("subscribed");

    let emily = TidingsClient::builder(&url).token(token("emily")).build();
    emily.connect().await.expect("connected");
    let ack = emily
        .channel("recognitions")
        .publish(
            "recognition.created",
            &json!({ "to": "david", "text": "Great demo!" }),
        )
        .await
        .expect("acked");

    let publication = incoming.next().await.expect("a publication");
    assert_eq!(publication.event, "recognition.created");
    assert_eq!(publication.data.value()["to"], "david");
    // --- end quickstart ---

    assert_eq!(publication.offset, ack.offset);
    assert_eq!(publication.publisher.user, "emily");
    assert_eq!(
        publication
            .publisher
            .info
            .as_ref()
            .map(|i| i.value()["name"].clone()),
        Some(json!("emily"))
    );
    assert_eq!(david.state(), ConnectionState::Connected);
    let stats = emily.stats().await.expect("stats");
    assert_eq!(stats.messages_acked, 1);
    assert!(stats.rtt_ms.is_some());
    assert!(stats.client_id.is_some() && stats.session_id.is_some());
}

#[tokio::test]
async fn server_crash_and_restart_with_data_dir_recovers_missed_messages_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(config(Some(dir.path().to_path_buf())), None);
    let addr = server.addr();
    let url = server.ws_url();

    let reader = client(&url, "reader");
    let recorder = Recorder::start(&reader);
    reader.connect().await.expect("connect");
    reader.channel("goals").subscribe().await.expect("sub");
    let writer = client(&url, "writer");
    writer.connect().await.expect("connect");
    for n in 0..5 {
        writer
            .publish("goals", "goal.updated", &json!({ "n": n }))
            .await
            .expect("ack");
    }
    eventually(5, "5 live messages", || async {
        recorder.data("goals").len() == 5
    })
    .await;

    // The reader's network "goes away" so it cannot reconnect before we publish.
    reader.lifecycle(Lifecycle::Offline);
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill();
    eventually(5, "reader notices", || async {
        matches!(
            reader.state(),
            ConnectionState::Reconnecting {
                retry_in_ms: None,
                ..
            }
        )
    })
    .await;

    let server = start(config(Some(dir.path().to_path_buf())), Some(addr));
    for n in 5..10 {
        let (status, body) = http(
            addr,
            "POST",
            "/api/publish",
            Some(API_KEY),
            Some(&json!({ "channel": "goals", "event": "goal.updated", "data": { "n": n } })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    reader.lifecycle(Lifecycle::Online);
    eventually(10, "recovered messages", || async {
        recorder.data("goals").len() >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        numbers(&recorder.data("goals")),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        subscribed_events(&recorder, "goals").last(),
        Some(&(true, false))
    );
    let stats = reader.stats().await.expect("stats");
    assert_eq!(stats.recoveries_succeeded, 1);
    assert_eq!(stats.recoveries_failed, 0);
    // The writer reconnected by itself too.
    eventually(10, "writer back", || async {
        writer.state() == ConnectionState::Connected
    })
    .await;
    drop(server);
}

#[tokio::test]
async fn restart_without_data_dir_starts_a_new_epoch_and_tells_apps_to_reload() {
    let server = start(config(None), None);
    let addr = server.addr();
    let url = server.ws_url();
    let reader = client(&url, "reader");
    let recorder = Recorder::start(&reader);
    reader.connect().await.expect("connect");
    reader.channel("goals").subscribe().await.expect("sub");
    reader
        .publish("goals", "goal.updated", &json!({ "n": 1 }))
        .await
        .expect("ack");
    eventually(5, "own message", || async {
        recorder.data("goals").len() == 1
    })
    .await;

    server.kill();
    let server = start(config(None), Some(addr));
    eventually(15, "resubscribed", || async {
        subscribed_events(&recorder, "goals").len() == 2
    })
    .await;
    assert_eq!(
        subscribed_events(&recorder, "goals")[1],
        (false, true),
        "recovered:false -> reload"
    );
    reader
        .publish("goals", "goal.updated", &json!({ "n": 2 }))
        .await
        .expect("ack");
    eventually(5, "new epoch message", || async {
        recorder.data("goals").len() == 2
    })
    .await;
    assert_eq!(reader.stats().await.expect("stats").recoveries_failed, 1);
    drop(server);
}

#[tokio::test]
async fn publishes_made_while_the_server_is_down_are_delivered_once_after_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(config(Some(dir.path().to_path_buf())), None);
    let addr = server.addr();
    let url = server.ws_url();
    let reader = client(&url, "reader");
    let recorder = Recorder::start(&reader);
    reader.connect().await.expect("connect");
    reader.channel("posts").subscribe().await.expect("sub");
    let writer = client(&url, "writer");
    let writer_events = Recorder::start(&writer);
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
                .publish_queued("posts", "post.created", &json!({ "n": n }))
                .await
                .expect("queued"),
        );
    }
    let outbox = writer.outbox().await.expect("outbox");
    assert_eq!(outbox.len(), 3);
    assert!(outbox
        .iter()
        .all(|m| m.status == tidings::MessageStatus::Queued));

    let server = start(config(Some(dir.path().to_path_buf())), Some(addr));
    eventually(20, "3 delivered", || async {
        recorder.data("posts").len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(numbers(&recorder.data("posts")), vec![0, 1, 2]);
    eventually(5, "outbox drained", || async {
        writer.outbox().await.map(|o| o.is_empty()).unwrap_or(false)
    })
    .await;
    let acked: BTreeSet<String> = writer_events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message {
                msg_id,
                status: tidings::MessageStatus::Acked { .. },
                ..
            } => Some(msg_id),
            _ => None,
        })
        .collect();
    assert_eq!(acked, ids.into_iter().collect());
    drop(server);
}

#[tokio::test]
async fn an_app_restart_resends_its_stored_outbox_and_resumes_from_stored_positions() {
    let server = start(config(None), None);
    let url = server.ws_url();
    let store = MemoryStore::new();
    let app = TidingsClient::builder(&url)
        .token(token("david"))
        .store(store.clone())
        .build();
    let recorder = Recorder::start(&app);
    app.connect().await.expect("connect");
    app.channel("feed").subscribe().await.expect("sub");
    let other = client(&url, "emily");
    other.connect().await.expect("connect");
    other
        .publish("feed", "post.created", &json!({ "n": 0 }))
        .await
        .expect("ack");
    eventually(5, "first", || async { recorder.data("feed").len() == 1 }).await;

    // The app goes offline, queues a message, and is closed (like a closed tab).
    app.lifecycle(Lifecycle::Offline);
    app.disconnect().await.expect("disconnect");
    app.publish_queued("feed", "post.created", &json!({ "n": 100 }))
        .await
        .expect("queued");
    app.close().await;
    other
        .publish("feed", "post.created", &json!({ "n": 1 }))
        .await
        .expect("ack");

    // Reopened with the same store: resubscribes from the stored position, sends the outbox.
    let reopened = TidingsClient::builder(&url)
        .token(token("david"))
        .store(store)
        .build();
    let after = Recorder::start(&reopened);
    reopened.connect().await.expect("connect");
    reopened.channel("feed").subscribe().await.expect("sub");
    eventually(5, "missed + own", || async {
        after.data("feed").len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = numbers(&after.data("feed"));
    assert_eq!(
        got,
        vec![1, 100],
        "the missed message once, then our queued one"
    );
    assert!(reopened.outbox().await.expect("outbox").is_empty());
}

#[tokio::test]
async fn bad_expired_and_forbidden_tokens_get_their_codes() {
    let server = start(config(None), None);
    let url = server.ws_url();

    let bad = TidingsClient::builder(&url).token("not-a-jwt").build();
    let err = bad.connect().await.expect_err("unauthorized");
    assert_eq!(err.code(), "unauthorized");
    assert!(matches!(bad.state(), ConnectionState::Failed { code, .. } if code == "unauthorized"));

    let expired = TidingsClient::builder(&url)
        .token(token_with("d", &["*"], &["*"], Some(-60)))
        .build();
    let err = expired.connect().await.expect_err("expired");
    assert_eq!(err.code(), "token_expired");

    // With a provider, an expired token is replaced once and the connect succeeds.
    let refreshed = TidingsClient::builder(&url)
        .token(token_with("d", &["*"], &["*"], Some(-60)))
        .token_provider(|| async { Ok(token("d")) })
        .build();
    refreshed
        .connect()
        .await
        .expect("connects with a fresh token");

    let limited = TidingsClient::builder(&url)
        .token(token_with("d2", &["public:*"], &["public:*"], Some(600)))
        .build();
    limited.connect().await.expect("connect");
    let err = limited
        .channel("private")
        .subscribe()
        .await
        .expect_err("forbidden");
    assert_eq!(err.code(), "forbidden");
    let err = limited
        .publish("private", "x.y", &json!(1))
        .await
        .expect_err("forbidden");
    assert_eq!(err.code(), "forbidden");
    // The connection keeps serving.
    limited
        .channel("public:news")
        .subscribe()
        .await
        .expect("allowed");
    limited
        .publish("public:news", "x.y", &json!(1))
        .await
        .expect("allowed");
    assert_eq!(limited.state(), ConnectionState::Connected);
}

#[tokio::test]
async fn oversized_messages_fail_loudly_and_the_connection_survives() {
    let server = start(config(None), None);
    let c = client(&server.ws_url(), "david");
    c.connect().await.expect("connect");
    let big = "x".repeat(70 * 1024);
    let err = c
        .publish("docs", "doc.saved", &json!({ "body": big }))
        .await
        .expect_err("too large");
    assert_eq!(err.code(), "frame_too_large");
    c.publish("docs", "doc.saved", &json!({ "body": "small" }))
        .await
        .expect("still works");

    // A raw client that ignores the limit gets the error frame from the server.
    use futures::{SinkExt, StreamExt};
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("raw");
    let connect = json!({"type":"connect","id":1,"version":1,"token":token("raw")});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        connect.to_string(),
    ))
    .await
    .expect("send");
    let _connected = ws.next().await;
    let publish =
        json!({"type":"publish","id":2,"channel":"docs","msg_id":"m","event":"e","data":big});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        publish.to_string(),
    ))
    .await
    .expect("send");
    let reply = ws.next().await.expect("reply").expect("frame");
    let reply: serde_json::Value =
        serde_json::from_str(reply.to_text().expect("text")).expect("json");
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "frame_too_large");
    assert_eq!(reply["id"], 2);
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"type":"ping","id":3}"#,
    ))
    .await
    .expect("send");
    let pong = ws.next().await.expect("reply").expect("frame");
    assert!(pong.to_text().expect("text").contains("pong"));
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_every_message_still_arrives_once_in_order() {
    let server = start(config(None), None);
    let url = server.ws_url();
    let reader = client(&url, "reader");
    let recorder = Recorder::start(&reader);
    reader.connect().await.expect("connect");
    reader.channel("flood").subscribe().await.expect("sub");
    let writer = client(&url, "writer");
    writer.connect().await.expect("connect");
    let count = 250;
    for n in 0..count {
        writer
            .publish_queued("flood", "tick", &json!({ "n": n }))
            .await
            .expect("queued");
    }
    eventually(20, "all delivered", || async {
        recorder.data("flood").len() >= count as usize
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        numbers(&recorder.data("flood")),
        (0..count).collect::<Vec<_>>()
    );
    let (status, metrics) = http(server.addr(), "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tidings_errors_total") && l.contains("rate_limited")),
        "the flood hit the rate limit:\n{metrics}"
    );
    assert_eq!(writer.state(), ConnectionState::Connected);
}

#[tokio::test]
async fn pattern_subscriptions_receive_matching_channels_and_recover_per_channel() {
    let server = start(config(None), None);
    let url = server.ws_url();
    let reader = client(&url, "reader");
    let recorder = Recorder::start(&reader);
    reader.connect().await.expect("connect");
    reader
        .channel("specs:E13-*")
        .subscribe()
        .await
        .expect("pattern");
    let writer = client(&url, "writer");
    writer.connect().await.expect("connect");
    writer
        .publish("specs:E13-1", "spec.updated", &json!({"n": 1}))
        .await
        .expect("ack");
    writer
        .publish("specs:E14-1", "spec.updated", &json!({"n": 99}))
        .await
        .expect("ack");
    writer
        .publish("specs:E13-2", "spec.updated", &json!({"n": 2}))
        .await
        .expect("ack");
    eventually(5, "two matching", || async {
        recorder.offsets().len() == 2
    })
    .await;

    reader.lifecycle(Lifecycle::Offline);
    reader.disconnect().await.expect("disconnect");
    writer
        .publish("specs:E13-1", "spec.updated", &json!({"n": 3}))
        .await
        .expect("ack");
    writer
        .publish("specs:E13-3", "spec.updated", &json!({"n": 4}))
        .await
        .expect("ack");
    reader.lifecycle(Lifecycle::Online);
    reader.connect().await.expect("reconnect");
    eventually(5, "recovered", || async { recorder.offsets().len() == 4 }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got = recorder.offsets();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("specs:E13-1".to_string(), 1),
            ("specs:E13-1".to_string(), 2),
            ("specs:E13-2".to_string(), 1),
            ("specs:E13-3".to_string(), 1)
        ]
    );
}

#[tokio::test]
async fn http_publish_api_reaches_subscribers_and_checks_its_key() {
    let server = start(config(None), None);
    let reader = client(&server.ws_url(), "reader");
    let recorder = Recorder::start(&reader);
    reader.connect().await.expect("connect");
    reader.channel("alerts").subscribe().await.expect("sub");
    let body = json!({ "channel": "alerts", "event": "metric.alert", "data": { "n": 7 }, "id": "alert-7" });
    let (status, reply) = http(
        server.addr(),
        "POST",
        "/api/publish",
        Some(API_KEY),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = http(
        server.addr(),
        "POST",
        "/api/publish",
        Some(API_KEY),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200);
    assert!(reply.contains("\"duplicate\":true"), "{reply}");
    let (status, _) = http(
        server.addr(),
        "POST",
        "/api/publish",
        Some("wrong"),
        Some(&body),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = http(
        server.addr(),
        "POST",
        "/api/publish",
        Some(API_KEY),
        Some(&json!({"channel": 5})),
    )
    .await;
    assert_eq!(status, 400);
    eventually(5, "delivered", || async {
        recorder.data("alerts").len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        numbers(&recorder.data("alerts")),
        vec![7],
        "idempotent: delivered once"
    );
    let (status, health) = http(server.addr(), "GET", "/healthz", None, None).await;
    assert_eq!((status, health.trim()), (200, "ok"));
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_on_the_live_connection() {
    let server = start(config(None), None);
    let provided = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = provided.clone();
    let c = TidingsClient::builder(server.ws_url())
        .token(token_with("david", &["*"], &["*"], Some(3)))
        .token_provider(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok(token_with("david", &["*"], &["*"], Some(3_600))) }
        })
        .build();
    c.connect().await.expect("connect");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(c.state(), ConnectionState::Connected);
    let stats = c.stats().await.expect("stats");
    assert_eq!(stats.reconnects, 0, "refreshed in place, never dropped");
    assert!(provided.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn graceful_shutdown_advises_clients_to_come_back() {
    let server = start(config(None), None);
    let c = client(&server.ws_url(), "david");
    let recorder = Recorder::start(&c);
    c.connect().await.expect("connect");
    tokio::task::spawn_blocking(move || server.shutdown())
        .await
        .expect("shutdown");
    eventually(5, "reconnecting", || async {
        matches!(c.state(), ConnectionState::Reconnecting { .. })
    })
    .await;
    assert!(recorder.events().iter().any(
        |e| matches!(e, Event::State { reason, .. } if reason == "server_disconnect:shutdown")
    ));
}

#[tokio::test]
async fn wss_with_a_custom_ca_works_and_an_unknown_ca_is_refused() {
    let server = start(config(None), None);
    let (port, ca_pem) = tls_proxy(server.addr()).await;
    let url = format!("wss://localhost:{port}/ws");

    let trusted = TidingsClient::builder(&url)
        .token(token("david"))
        .tls(TlsOptions::default().with_ca_pem(ca_pem))
        .build();
    trusted.connect().await.expect("wss connect");
    trusted.channel("secure").subscribe().await.expect("sub");
    trusted
        .publish("secure", "x.y", &json!({"n": 1}))
        .await
        .expect("ack");

    let untrusted = TidingsClient::builder(&url)
        .token(token("emily"))
        .configure(|o| o.reconnect.max_attempts = Some(1))
        .build();
    let outcome = tokio::time::timeout(Duration::from_secs(10), untrusted.connect()).await;
    match outcome {
        Ok(Err(e)) => assert_eq!(e.code(), "connection_failed"),
        other => panic!("an unknown CA must not connect: {other:?}"),
    }
}

#[tokio::test]
async fn the_file_store_keeps_the_outbox_across_a_process_restart() {
    let server = start(config(None), None);
    let url = server.ws_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let reader = client(&url, "reader");
    let recorder = Recorder::start(&reader);
    reader.connect().await.expect("connect");
    reader.channel("notes").subscribe().await.expect("sub");

    let first = TidingsClient::builder(&url)
        .token(token("writer"))
        .store(tidings::native::FileStore::new(dir.path()))
        .build();
    // Never connected: the message waits in the file store.
    let id = first
        .publish_queued("notes", "note.added", &json!({ "n": 1 }))
        .await
        .expect("durable");
    first.close().await;
    assert!(std::fs::read_dir(dir.path()).expect("dir").count() >= 1);

    let second = TidingsClient::builder(&url)
        .token(token("writer"))
        .store(tidings::native::FileStore::new(dir.path()))
        .build();
    assert_eq!(second.outbox().await.expect("outbox")[0].entry.msg_id, id);
    second.connect().await.expect("connect");
    eventually(5, "delivered", || async {
        recorder.data("notes").len() == 1
    })
    .await;
    eventually(5, "acked and removed", || async {
        second.outbox().await.map(|o| o.is_empty()).unwrap_or(false)
    })
    .await;
}

#[tokio::test]
async fn demo_dir_and_dev_tokens_serve_the_demo_app() {
    let demo = tempfile::tempdir().expect("tempdir");
    std::fs::write(demo.path().join("index.html"), "<h1>demo</h1>").expect("write");
    let mut cfg = config(None);
    cfg.demo_dir = Some(demo.path().to_path_buf());
    cfg.dev_tokens = true;
    let server = start(cfg, None);
    let (status, body) = http(server.addr(), "GET", "/", None, None).await;
    assert_eq!((status, body.as_str()), (200, "<h1>demo</h1>"));

    let (status, body) = http(
        server.addr(),
        "GET",
        "/api/dev/token?user=alice",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(reply["url"], server.ws_url());
    let alice = TidingsClient::builder(reply["url"].as_str().expect("url"))
        .token(reply["token"].as_str().expect("token"))
        .build();
    alice.connect().await.expect("the dev token works");
    let (status, _) = http(
        server.addr(),
        "GET",
        "/api/dev/token?user=bad%20name",
        None,
        None,
    )
    .await;
    assert_eq!(status, 400);

    // Off by default.
    let plain = start(config(None), None);
    let (status, _) = http(plain.addr(), "GET", "/api/dev/token?user=alice", None, None).await;
    assert_eq!(status, 404);
    let (status, index) = http(plain.addr(), "GET", "/", None, None).await;
    assert!(status == 200 && index.contains("/ws"));
}
