//! Opens N idle, subscribed connections to a running server and holds them, to measure
//! the server's memory per connection.
//!
//! `cargo run -p server-reference --example idle_conns -- ws://127.0.0.1:8080/ws 5000`
//! (with the server's default dev secret), then compare the server's RSS before/after.

use futures::{SinkExt, StreamExt};
use server_reference::{mint_token, Claims, Config};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let secret = Config::default().jwt_secret;
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        let token = mint_token(
            &secret,
            &Claims {
                sub: format!("user-{i}"),
                channels: vec!["*".into()],
                ..Claims::default()
            },
        );
        let (mut ws, _) = match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok(ok) => ok,
            Err(err) => {
                eprintln!("connection {i} failed: {err}");
                break;
            }
        };
        let connect = serde_json::json!({"type": "connect", "id": 1, "version": 1, "token": token,
            "subs": [{"channel": "room:shared"}, {"channel": format!("user:{i}")}]});
        if ws
            .send(Message::Text(connect.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
        let _ = ws.next().await;
        sockets.push(ws);
    }
    println!("holding {} connections; ctrl-c to stop", sockets.len());
    let _ = tokio::signal::ctrl_c().await;
}
