//! Fan-out load check: N subscribers on one channel, one publisher sending M messages
//! as fast as acks allow (pipelined up to a window). Prints deliveries per second.
//!
//! Run a server with a high rate limit, e.g.
//! `TIDINGS_MESSAGES_PER_SECOND=1000000 TIDINGS_MAX_CONNECTIONS_PER_USER=100000 cargo run --release -p server-reference`
//! then `cargo run --release -p server-reference --example fanout -- ws://127.0.0.1:8080/ws 1000 2000`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use server_reference::{mint_token, Claims, Config};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let subscribers: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let messages: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let secret = Config::default().jwt_secret;
    let token = mint_token(
        &secret,
        &Claims {
            sub: "bench".into(),
            channels: vec!["*".into()],
            publish: vec!["*".into()],
            ..Claims::default()
        },
    );
    let received = Arc::new(AtomicU64::new(0));
    let channel = format!("bench:{}", fastrand::u64(..));
    for _ in 0..subscribers {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect");
        let connect = serde_json::json!({"type": "connect", "id": 1, "version": 1, "token": token,
            "subs": [{"channel": channel}]});
        ws.send(Message::Text(connect.to_string().into()))
            .await
            .expect("send");
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(text) = msg {
                    if text.as_str().starts_with("{\"type\":\"publication\"") {
                        received.fetch_add(1, Ordering::Relaxed);
                    } else if text.as_str().starts_with("{\"type\":\"ping\"") {
                        let _ = ws.send(Message::Text("{\"type\":\"pong\"}".into())).await;
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut publisher, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect");
    let connect = serde_json::json!({"type": "connect", "id": 1, "version": 1, "token": token});
    publisher
        .send(Message::Text(connect.to_string().into()))
        .await
        .expect("send");
    let _ = publisher.next().await;
    let expected = messages * subscribers as u64;
    let start = Instant::now();
    let mut acked = 0;
    let mut sent = 0;
    while acked < messages {
        while sent < messages && sent - acked < 32 {
            sent += 1;
            let publish = serde_json::json!({"type": "publish", "id": sent + 1, "channel": channel,
                "msg_id": format!("m{sent}"), "event": "tick", "data": {"n": sent}});
            publisher
                .send(Message::Text(publish.to_string().into()))
                .await
                .expect("send");
        }
        match publisher.next().await {
            Some(Ok(Message::Text(text))) if text.as_str().contains("\"type\":\"ack\"") => {
                acked += 1
            }
            Some(Ok(_)) => {}
            _ => panic!("publisher connection lost"),
        }
    }
    while received.load(Ordering::Relaxed) < expected && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    println!(
        "{subscribers} subscribers x {messages} messages: {got}/{expected} delivered in {elapsed:.2} s = {:.0} deliveries/s",
        got as f64 / elapsed
    );
}
