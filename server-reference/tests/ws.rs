//! Integration tests over real sockets, speaking raw JSON frames.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use server_reference::{mint_token, Claims, Config, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SECRET: &str = "test-secret";
const API_KEY: &str = "test-key";

fn config() -> Config {
    Config {
        bind: "127.0.0.1:0".parse().expect("addr"),
        jwt_secret: SECRET.into(),
        api_key: API_KEY.into(),
        ..Config::default()
    }
}

fn start(config: Config) -> ServerHandle {
    ServerHandle::start(config).expect("server starts")
}

fn token(sub: &str) -> String {
    mint_token(
        SECRET,
        &Claims {
            sub: sub.into(),
            exp: None,
            channels: vec!["chat:*".into(), "news".into()],
            publish: vec!["chat:*".into()],
            info: Some(json!({"name": sub})),
        },
    )
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    async fn open(server: &ServerHandle) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("ws connects");
        Client { ws }
    }

    /// Opens and sends `connect`, returning the `connected` frame.
    async fn connected(server: &ServerHandle, sub: &str, subs: Value) -> (Client, Value) {
        let mut client = Client::open(server).await;
        client
            .send(json!({"type": "connect", "id": 1, "version": 1, "token": token(sub), "subs": subs}))
            .await;
        let frame = client.recv().await;
        assert_eq!(frame["type"], "connected", "{frame}");
        (client, frame)
    }

    async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Next text frame as JSON; `Value::Null` when the socket closed.
    async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("frame within 5 s");
            match msg {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str()).expect("server sends JSON")
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Value::Null,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Whether nothing arrives within `ms`.
    async fn quiet_for(&mut self, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), self.ws.next())
            .await
            .is_err()
    }
}

async fn http(server: &ServerHandle, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(server.addr()).await.expect("tcp");
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status: u16 = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn connect_subscribe_publish_receive() {
    let server = start(config());
    let (mut alice, connected) = Client::connected(
        &server,
        "alice",
        json!([{"channel": "chat:1"}, {"channel": "secret"}]),
    )
    .await;
    assert_eq!(connected["id"], 1);
    assert_eq!(connected["limits"]["max_frame_bytes"], 65536);
    assert_eq!(connected["subs"][0]["channel"], "chat:1");
    assert_eq!(connected["subs"][0]["recovered"], false);
    assert_eq!(connected["subs"][0]["offset"], 0);
    assert_eq!(connected["subs"][1]["error"]["code"], "forbidden");
    let epoch = connected["subs"][0]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();

    let (mut bob, _) = Client::connected(&server, "bob", json!([])).await;
    bob.send(json!({"type": "publish", "id": 2, "channel": "chat:1", "msg_id": "m1", "event": "said", "data": {"text": "hi"}}))
        .await;
    let ack = bob.recv().await;
    assert_eq!(
        ack,
        json!({"type": "ack", "id": 2, "msg_id": "m1", "epoch": epoch, "offset": 1, "duplicate": false})
    );

    let publication = alice.recv().await;
    assert_eq!(publication["type"], "publication");
    assert_eq!(publication["channel"], "chat:1");
    assert_eq!(publication["offset"], 1);
    assert_eq!(publication["id"], "m1");
    assert_eq!(publication["data"], json!({"text": "hi"}));
    assert_eq!(publication["publisher"]["user"], "bob");
    assert_eq!(publication["publisher"]["info"], json!({"name": "bob"}));
    assert!(publication["publisher"]["client"].is_string());

    // Recovery from offset 0, and a pattern subscription catching up with `since`.
    bob.send(json!({"type": "subscribe", "id": 3, "channel": "chat:1", "recover": {"epoch": epoch, "offset": 0}}))
        .await;
    let subscribed = bob.recv().await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["id"], 3);
    assert_eq!(subscribed["recovered"], true);
    assert_eq!(subscribed["publications"][0]["id"], "m1");
    bob.send(json!({"type": "subscribe", "id": 4, "channel": "chat:*", "since": 0}))
        .await;
    let subscribed = bob.recv().await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(subscribed["publications"][0]["id"], "m1");
    bob.send(json!({"type": "subscribe", "id": 5, "channel": "bad name"}))
        .await;
    let error = bob.recv().await;
    assert_eq!(
        (error["id"].clone(), error["code"].clone()),
        (json!(5), json!("bad_request"))
    );

    bob.send(json!({"type": "unsubscribe", "id": 6, "channel": "chat:1"}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "unsubscribed", "id": 6, "channel": "chat:1"})
    );
    server.shutdown();
}

#[tokio::test]
async fn unsupported_version_is_refused() {
    let server = start(config());
    let mut client = Client::open(&server).await;
    client
        .send(json!({"type": "connect", "id": 7, "version": 2, "token": token("a")}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], 7);
    assert_eq!(error["code"], "unsupported_version");
    let disconnect = client.recv().await;
    assert_eq!(disconnect["type"], "disconnect");
    assert_eq!(disconnect["code"], "unsupported_version");
    assert_eq!(disconnect["advice"]["reconnect"], false);
    assert_eq!(client.recv().await, Value::Null);
    server.kill();
}

#[tokio::test]
async fn bad_and_expired_tokens_and_frames_before_connect() {
    let server = start(config());
    let mut client = Client::open(&server).await;
    client.send(json!({"type": "ping", "id": 1})).await;
    let error = client.recv().await;
    assert_eq!(
        (error["id"].clone(), error["code"].clone()),
        (json!(1), json!("not_connected"))
    );
    client
        .send(json!({"type": "connect", "id": 2, "version": 1, "token": mint_token("wrong", &Claims { sub: "a".into(), ..Claims::default() })}))
        .await;
    assert_eq!(client.recv().await["code"], "unauthorized");
    let disconnect = client.recv().await;
    assert_eq!(
        (
            disconnect["code"].clone(),
            disconnect["advice"]["reconnect"].clone()
        ),
        (json!("unauthorized"), json!(false))
    );

    let mut client = Client::open(&server).await;
    let expired = mint_token(
        SECRET,
        &Claims {
            sub: "a".into(),
            exp: Some(1),
            ..Claims::default()
        },
    );
    client
        .send(json!({"type": "connect", "id": 3, "version": 1, "token": expired}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["code"], "token_expired");
    assert_eq!(error["temporary"], false);
    let disconnect = client.recv().await;
    assert_eq!(
        (
            disconnect["code"].clone(),
            disconnect["advice"]["reconnect"].clone()
        ),
        (json!("token_expired"), json!(true))
    );
    server.kill();
}

#[tokio::test]
async fn forbidden_publish() {
    let server = start(config());
    let (mut client, _) = Client::connected(&server, "a", json!([])).await;
    client
        .send(json!({"type": "publish", "id": 9, "channel": "news", "msg_id": "x", "event": "e", "data": 1}))
        .await;
    let error = client.recv().await;
    assert_eq!(
        (error["id"].clone(), error["code"].clone()),
        (json!(9), json!("forbidden"))
    );
    client
        .send(json!({"type": "publish", "id": 10, "channel": "chat:1", "msg_id": "", "event": "e", "data": 1}))
        .await;
    let error = client.recv().await;
    assert_eq!(
        (error["id"].clone(), error["code"].clone()),
        (json!(10), json!("bad_request"))
    );
    server.kill();
}

#[tokio::test]
async fn oversized_frame_gets_frame_too_large_and_connection_stays() {
    let server = start(Config {
        max_frame_bytes: 1024,
        ..config()
    });
    let (mut client, _) = Client::connected(&server, "a", json!([])).await;
    let big = "x".repeat(2000);
    client
        .send(json!({"type": "publish", "id": 11, "channel": "chat:1", "msg_id": "m", "event": "e", "data": big}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], 11);
    assert_eq!(error["code"], "frame_too_large");
    client.send(json!({"type": "ping", "id": 12})).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "id": 12}));
    server.kill();
}

#[tokio::test]
async fn flood_gets_rate_limited() {
    let server = start(Config {
        messages_per_second: 5,
        ..config()
    });
    let (mut client, _) = Client::connected(&server, "a", json!([])).await;
    for id in 100..120 {
        client.send(json!({"type": "ping", "id": id})).await;
    }
    let mut limited = 0;
    for _ in 100..120 {
        let frame = client.recv().await;
        if frame["type"] == "error" {
            assert_eq!(frame["code"], "rate_limited");
            assert_eq!(frame["temporary"], true);
            assert!(frame["retry_after_ms"].as_u64().expect("retry_after_ms") > 0);
            assert!(frame["id"].as_u64().is_some());
            limited += 1;
        } else {
            assert_eq!(frame["type"], "pong");
        }
    }
    assert!(limited >= 10, "only {limited} limited");
    server.kill();
}

#[tokio::test]
async fn malformed_frames_get_bad_request() {
    let server = start(config());
    let (mut client, _) = Client::connected(&server, "a", json!([])).await;
    client.send_text("{not json".into()).await;
    let error = client.recv().await;
    assert_eq!(error["code"], "bad_request");
    assert!(error.get("id").is_none());
    client.send(json!({"type": "hologram", "id": 13})).await;
    let error = client.recv().await;
    assert_eq!(
        (error["id"].clone(), error["code"].clone()),
        (json!(13), json!("bad_request"))
    );
    client
        .ws
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .expect("send");
    assert_eq!(client.recv().await["code"], "bad_request");
    client.send(json!({"type": "ping", "id": 14})).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "id": 14}));
    server.kill();
}

#[tokio::test]
async fn http_publish_reaches_subscriber() {
    let server = start(config());
    let (mut client, _) = Client::connected(&server, "a", json!([{"channel": "chat:*"}])).await;
    let (status, body) = http(&server, "/api/publish", Some("nope"), "{}").await;
    assert_eq!((status, body["code"].clone()), (401, json!("unauthorized")));
    let (status, body) = http(&server, "/api/publish", Some(API_KEY), "{\"channel\": 5}").await;
    assert_eq!((status, body["code"].clone()), (400, json!("bad_request")));
    let (status, body) = http(
        &server,
        "/api/publish",
        Some(API_KEY),
        r#"{"channel": "chat:7", "event": "news", "data": {"n": 1}, "id": "h1"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["offset"].clone(), body["duplicate"].clone()),
        (json!(1), json!(false))
    );
    let publication = client.recv().await;
    assert_eq!(publication["channel"], "chat:7");
    assert_eq!(publication["publisher"]["user"], "server");
    assert_eq!(publication["data"], json!({"n": 1}));

    let (status, body) = http(
        &server,
        "/api/broadcast",
        Some(API_KEY),
        r#"{"channels": ["chat:7", "bad*x"], "event": "news", "data": 2}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["offset"], 2);
    assert_eq!(body["results"][1]["error"]["code"], "bad_request");
    assert_eq!(client.recv().await["offset"], 2);
    server.shutdown();
}

#[tokio::test]
async fn duplicate_msg_id_is_acked_and_delivered_once() {
    let server = start(config());
    let (mut sub, _) = Client::connected(&server, "s", json!([{"channel": "chat:d"}])).await;
    let (mut publisher, _) = Client::connected(&server, "p", json!([])).await;
    for id in [1, 2] {
        publisher
            .send(json!({"type": "publish", "id": id, "channel": "chat:d", "msg_id": "same", "event": "e", "data": null}))
            .await;
        let ack = publisher.recv().await;
        assert_eq!(ack["offset"], 1);
        assert_eq!(ack["duplicate"], id == 2);
    }
    assert_eq!(sub.recv().await["offset"], 1);
    assert!(sub.quiet_for(200).await);
    server.kill();
}

#[tokio::test]
async fn graceful_shutdown_advises_reconnect() {
    let server = start(Config {
        shutdown_spread_ms: 100,
        ..config()
    });
    let (mut client, _) = Client::connected(&server, "a", json!([])).await;
    let handle = std::thread::spawn(move || server.shutdown());
    let frame = client.recv().await;
    assert_eq!(frame["type"], "disconnect");
    assert_eq!(frame["code"], "shutdown");
    assert_eq!(frame["advice"]["reconnect"], true);
    assert!(
        frame["advice"]["not_before_ms"]
            .as_u64()
            .expect("not_before_ms")
            <= 100
    );
    handle.join().expect("shutdown");
}

#[tokio::test]
async fn history_survives_kill_with_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..config()
    });
    let (mut client, connected) =
        Client::connected(&server, "a", json!([{"channel": "chat:k"}])).await;
    let epoch = connected["subs"][0]["epoch"].clone();
    client
        .send(json!({"type": "publish", "id": 2, "channel": "chat:k", "msg_id": "k1", "event": "e", "data": 1}))
        .await;
    // The publication (we are subscribed) and the ack, in either order.
    let frames = [client.recv().await, client.recv().await];
    assert!(frames.iter().any(|f| f["type"] == "ack"));
    server.kill();

    let server = start(Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..config()
    });
    let (mut client, connected) = Client::connected(
        &server,
        "a",
        json!([{"channel": "chat:k", "recover": {"epoch": epoch, "offset": 0}}]),
    )
    .await;
    let sub = &connected["subs"][0];
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(sub["publications"][0]["id"], "k1");
    client
        .send(json!({"type": "publish", "id": 3, "channel": "chat:k", "msg_id": "k1", "event": "e", "data": 1}))
        .await;
    let ack = client.recv().await;
    assert_eq!(
        (ack["offset"].clone(), ack["duplicate"].clone()),
        (json!(1), json!(true))
    );
    server.kill();
}

#[tokio::test]
async fn heartbeat_pings_and_closes_stale_connections() {
    let server = start(Config {
        ping_interval_ms: 100,
        pong_timeout_ms: 100,
        ..config()
    });
    let (mut client, connected) = Client::connected(&server, "a", json!([])).await;
    assert_eq!(connected["ping_interval_ms"], 100);
    let ping = client.recv().await;
    assert_eq!(ping, json!({"type": "ping"}));
    // Stay silent: the server gives up after ping interval + pong timeout.
    loop {
        let frame = client.recv().await;
        if frame["type"] == "disconnect" {
            assert_eq!(frame["code"], "stale");
            assert_eq!(frame["advice"]["reconnect"], true);
            break;
        }
        assert_eq!(frame["type"], "ping");
    }
    server.kill();
}

#[tokio::test]
async fn too_many_connections_per_user() {
    let server = start(Config {
        max_connections_per_user: 1,
        ..config()
    });
    let (_first, _) = Client::connected(&server, "u", json!([])).await;
    let mut second = Client::open(&server).await;
    second
        .send(json!({"type": "connect", "id": 1, "version": 1, "token": token("u")}))
        .await;
    let error = second.recv().await;
    assert_eq!(
        (error["id"].clone(), error["code"].clone()),
        (json!(1), json!("too_many_connections"))
    );
    let disconnect = second.recv().await;
    assert_eq!(disconnect["code"], "too_many_connections");
    assert_eq!(
        disconnect["advice"],
        json!({"reconnect": true, "not_before_ms": 5000})
    );
    // Another user is fine.
    let (_other, _) = Client::connected(&server, "v", json!([])).await;
    server.kill();
}

#[tokio::test]
async fn refresh_and_live_token_expiry() {
    let server = start(config());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let short = |sub: &str, exp: u64| {
        mint_token(
            SECRET,
            &Claims {
                sub: sub.into(),
                exp: Some(exp),
                ..Claims::default()
            },
        )
    };
    let mut client = Client::open(&server).await;
    client
        .send(json!({"type": "connect", "id": 1, "version": 1, "token": short("a", now + 3)}))
        .await;
    let connected = client.recv().await;
    assert_eq!(connected["expires_at"], now + 3);
    client
        .send(json!({"type": "refresh", "id": 2, "token": short("b", now + 60)}))
        .await;
    let error = client.recv().await;
    assert_eq!(
        (error["id"].clone(), error["code"].clone()),
        (json!(2), json!("unauthorized"))
    );
    client
        .send(json!({"type": "refresh", "id": 3, "token": short("a", now + 2)}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "refreshed", "id": 3, "expires_at": now + 2})
    );
    // The shared ticker notices the expiry (within ~1 s of `exp`).
    let disconnect = client.recv().await;
    assert_eq!(disconnect["type"], "disconnect");
    assert_eq!(disconnect["code"], "token_expired");
    assert_eq!(disconnect["advice"]["reconnect"], true);
    server.kill();
}

#[tokio::test]
async fn sockets_without_connect_are_closed() {
    let server = start(Config {
        connect_timeout_ms: 100,
        ..config()
    });
    let mut client = Client::open(&server).await;
    let frame = client.recv().await;
    assert_eq!(frame["type"], "disconnect", "{frame}");
    assert_eq!(client.recv().await, Value::Null);
    server.kill();
}
