//! # Tidings reference server
//!
//! A small but real server for the Tidings protocol v1: JWT (HS256) auth, channels with
//! history and recovery, pattern subscriptions, idempotent publishes, an HTTP publish
//! API, heartbeats, limits and Prometheus metrics.
//!
//! ```no_run
//! use server_reference::{Config, ServerHandle};
//! let server = ServerHandle::start(Config {
//!     bind: "127.0.0.1:0".parse().expect("addr"),
//!     ..Config::default()
//! })?;
//! println!("{}", server.ws_url());
//! server.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```

// The workspace names the core `sdk-core`; its library is `tidings`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings::protocol::ServerFrame;

pub mod auth;
pub mod config;
mod connection;
pub mod engine;
mod http;
pub mod hub;
pub mod metrics;
mod util;

pub use auth::Claims;
pub use config::Config;

use engine::memory::{MemoryEngine, MemoryOptions};
use engine::{Engine, EngineError, PublishOutcome, PublishRequest};
use hub::{CloseReason, Hub, TickRules};
use metrics::Metrics;

/// How long a graceful shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding, accepting or the data dir failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything the routes and connections share.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) config: Config,
    pub(crate) hub: Arc<Hub>,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) metrics: Arc<Metrics>,
    /// Random per server start.
    pub(crate) session_id: String,
}

impl AppState {
    fn build(config: Config) -> Result<Arc<Self>, ServerError> {
        if config.jwt_secret == config::DEFAULT_JWT_SECRET {
            tracing::warn!(
                "using the default development JWT secret; set --jwt-secret / TIDINGS_JWT_SECRET"
            );
        }
        if config.api_key == config::DEFAULT_API_KEY {
            tracing::warn!(
                "using the default development API key; set --api-key / TIDINGS_API_KEY"
            );
        }
        let hub = Arc::new(Hub::new(config.outbound_queue));
        let opts = MemoryOptions {
            history_size: config.history_size,
            history_ttl_ms: config.history_ttl_secs.saturating_mul(1000),
        };
        let engine: Arc<dyn Engine> = match &config.data_dir {
            Some(dir) => Arc::new(MemoryEngine::open(dir, opts, hub.clone())?),
            None => Arc::new(MemoryEngine::new(opts, hub.clone())),
        };
        Ok(Arc::new(Self {
            config,
            hub,
            engine,
            metrics: Arc::new(Metrics::new()),
            session_id: util::random_id(),
        }))
    }

    /// Publishes through the engine (which fans out through the hub).
    pub(crate) async fn publish(
        &self,
        request: PublishRequest,
    ) -> Result<PublishOutcome, EngineError> {
        let outcome = self.engine.publish(request).await?;
        if !outcome.duplicate {
            self.metrics.publications.inc();
        }
        Ok(outcome)
    }
}

/// Runs the server on `listener` until `shutdown` completes, then closes every
/// connection with `disconnect{code:"shutdown"}` (reconnect advised after a random delay
/// up to `shutdown_spread_ms`) and returns.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = AppState::build(config)?;
    serve(app, listener, shutdown).await
}

async fn serve(
    app: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    let ticker = tokio::spawn(ticker(app.hub.clone(), app.config.clone()));
    let hub = app.hub.clone();
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down");
        hub.close_all(CloseReason::Shutdown);
    };
    let router = http::router(app.clone());
    let result = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(graceful)
    .await;
    // WebSockets are not tracked by axum's graceful shutdown; wait for them here.
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while !app.hub.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ticker.abort();
    result?;
    Ok(())
}

/// The one shared heartbeat task: pings, staleness, token expiry and connect timeouts.
async fn ticker(hub: Arc<Hub>, config: Config) {
    let ping_interval = config.ping_interval_ms;
    let rules = TickRules {
        stale_after_ms: if ping_interval == 0 {
            u64::MAX
        } else {
            ping_interval.saturating_add(config.pong_timeout_ms)
        },
        connect_timeout_ms: config.connect_timeout_ms,
    };
    let mut finest = config.connect_timeout_ms.max(1);
    if ping_interval > 0 {
        finest = finest.min(ping_interval).min(config.pong_timeout_ms.max(1));
    }
    let period = Duration::from_millis((finest / 4).clamp(10, 1000));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ping = hub::encode(&ServerFrame::Ping { id: None }, None);
    let mut last_ping = Instant::now();
    loop {
        interval.tick().await;
        let due = ping_interval > 0 && last_ping.elapsed() >= Duration::from_millis(ping_interval);
        if due {
            last_ping = Instant::now();
        }
        hub.tick(rules, if due { ping.as_ref() } else { None });
    }
}

/// Mints an HS256 token for tests and development.
pub fn mint_token(secret: &str, claims: &Claims) -> String {
    auth::mint_token(secret, claims)
}

/// A server running on its own multi-thread tokio runtime (for tests and embedding).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl ServerHandle {
    /// Starts the server on its own multi-thread tokio runtime (its own OS threads);
    /// binds `config.bind` (use `127.0.0.1:0` in tests). Returns once listening.
    pub fn start(config: Config) -> std::io::Result<ServerHandle> {
        let listener = std::net::TcpListener::bind(config.bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let app = AppState::build(config).map_err(|ServerError::Io(e)| e)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tidings-server")
            .enable_all()
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.await;
            };
            if let Err(err) = serve(app, listener, shutdown).await {
                tracing::error!(%err, "server stopped with an error");
            }
            let _ = done_tx.send(());
        });
        Ok(ServerHandle {
            addr,
            runtime: Some(runtime),
            stop: Some(stop_tx),
            done: done_rx,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `http://ADDR`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Hard kill: drops the runtime so every socket just closes, like a crashed process.
    /// Data already written to the data dir stays.
    pub fn kill(mut self) {
        self.stop.take();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Graceful: every connection gets `disconnect{code:"shutdown"}` with reconnect advice
    /// (`not_before_ms` random in `[0, shutdown_spread_ms]`), then the server stops.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            let _ = self
                .done
                .recv_timeout(SHUTDOWN_GRACE + Duration::from_secs(2));
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
