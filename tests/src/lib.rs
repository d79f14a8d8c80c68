//! Helpers shared by the end-to-end tests and the load generator: start a reference
//! server on a free loopback port, mint tokens, talk plain HTTP, wait for conditions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use server_reference::{Claims, Config, ServerHandle};
use tidings::native::TidingsClient;
use tidings::Event;

/// The secret test servers sign tokens with.
pub const SECRET: &str = "e2e-secret";
/// The HTTP publish API key of test servers.
pub const API_KEY: &str = "e2e-api-key";

/// A test server configuration on `127.0.0.1:0`.
pub fn config(data_dir: Option<PathBuf>) -> Config {
    Config {
        bind: "127.0.0.1:0".parse().expect("addr"),
        jwt_secret: SECRET.into(),
        api_key: API_KEY.into(),
        data_dir,
        ..Config::default()
    }
}

/// Starts a server; with `at`, on that exact address (a restart), retrying while the
/// old socket is still being released.
pub fn start(mut config: Config, at: Option<SocketAddr>) -> ServerHandle {
    if let Some(addr) = at {
        config.bind = addr;
    }
    let mut last = None;
    for _ in 0..100 {
        match ServerHandle::start(config.clone()) {
            Ok(server) => return server,
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    panic!("server did not start: {last:?}");
}

/// A token for `user` allowed to subscribe and publish everywhere, expiring in an hour.
pub fn token(user: &str) -> String {
    token_with(user, &["*"], &["*"], Some(3_600))
}

/// A token with explicit permissions and lifetime (seconds from now; negative = expired).
pub fn token_with(user: &str, channels: &[&str], publish: &[&str], ttl_s: Option<i64>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let claims = Claims {
        sub: user.into(),
        exp: ttl_s.map(|t| (now + t).max(0) as u64),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        publish: publish.iter().map(|c| c.to_string()).collect(),
        info: Some(serde_json::json!({ "name": user })),
    };
    server_reference::mint_token(SECRET, &claims)
}

/// A client of `server` for `user`.
pub fn client(server_url: &str, user: &str) -> TidingsClient {
    TidingsClient::builder(server_url)
        .token(token(user))
        .build()
}

/// Waits up to `secs` for `f` to hold, polling.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

/// Collects every event of a client in the background.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    events: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
}

impl Recorder {
    /// Starts recording `client`'s events.
    pub fn start(client: &TidingsClient) -> Self {
        let recorder = Self::default();
        let events = recorder.events.clone();
        let mut stream = client.events();
        tokio::spawn(async move {
            while let Some(batch) = stream.next_batch().await {
                events
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(batch.iter().cloned());
            }
        });
        recorder
    }

    /// Everything so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Data (as JSON values) of the publications of `channel`, in delivery order.
    pub fn data(&self, channel: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Publication(p) if p.channel == channel => Some(p.data.value().clone()),
                _ => None,
            })
            .collect()
    }

    /// `(channel, offset)` of every publication delivered.
    pub fn offsets(&self) -> Vec<(String, u64)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Publication(p) => Some((p.channel, p.offset)),
                _ => None,
            })
            .collect()
    }
}

/// A minimal HTTP/1.1 request (no client library needed for the publish API).
/// Returns `(status, body)`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = bearer
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// A self-signed certificate for `localhost`: (PEM, DER, private key).
pub fn self_signed() -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let pem = cert.pem();
    let der = cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    (pem, der, key)
}

/// A TLS terminator in front of a plain server: `wss://localhost:PORT` -> `ws://backend`.
/// Returns the port and the PEM of the self-signed CA to trust.
pub async fn tls_proxy(backend: std::net::SocketAddr) -> (u16, String) {
    let (pem, cert, key) = self_signed();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, pem)
}
