//! Server configuration: command-line flags, each also settable through a `TIDINGS_*`
//! environment variable. [`Config::default`] equals the CLI defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default HS256 secret; only for development (a warning is logged when it is used).
pub const DEFAULT_JWT_SECRET: &str = "tidings-dev-secret";
/// Default API key of the HTTP publish API; only for development.
pub const DEFAULT_API_KEY: &str = "tidings-dev-api-key";

/// Configuration of the reference server.
///
/// Every flag can also be set through the environment variable named in its help text;
/// the log filter is read from `RUST_LOG` (default `info`).
#[derive(clap::Parser, Clone)]
#[command(
    name = "server-reference",
    version,
    about = "Reference server for the Tidings real-time protocol"
)]
pub struct Config {
    /// Address to listen on (HTTP and WebSocket).
    #[arg(long, env = "TIDINGS_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// HS256 secret that connection tokens (JWT) are signed with.
    #[arg(long, env = "TIDINGS_JWT_SECRET", default_value = DEFAULT_JWT_SECRET, hide_env_values = true)]
    pub jwt_secret: String,

    /// API key for the HTTP publish API (`Authorization: Bearer <key>`).
    #[arg(long, env = "TIDINGS_API_KEY", default_value = DEFAULT_API_KEY, hide_env_values = true)]
    pub api_key: String,

    /// Directory for durable history (append-only log); in-memory only when absent.
    #[arg(long, env = "TIDINGS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Publications kept per channel for recovery.
    #[arg(long, env = "TIDINGS_HISTORY_SIZE", default_value_t = 1000)]
    pub history_size: usize,

    /// How long publications are kept for recovery (s); publish idempotency records are
    /// kept at least this long.
    #[arg(long, env = "TIDINGS_HISTORY_TTL_SECS", default_value_t = 86_400)]
    pub history_ttl_secs: u64,

    /// Largest client frame accepted (bytes); larger frames get `frame_too_large`.
    #[arg(long, env = "TIDINGS_MAX_FRAME_BYTES", default_value_t = 65_536)]
    pub max_frame_bytes: usize,

    /// Most channels and patterns one connection may subscribe to.
    #[arg(long, env = "TIDINGS_MAX_CHANNELS", default_value_t = 256)]
    pub max_channels: usize,

    /// Client frames per second per connection (token bucket, burst = rate).
    #[arg(long, env = "TIDINGS_MESSAGES_PER_SECOND", default_value_t = 100)]
    pub messages_per_second: u32,

    /// Most simultaneous connections of one user (token `sub`).
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS_PER_USER", default_value_t = 5)]
    pub max_connections_per_user: usize,

    /// Most simultaneous connections from one IP address.
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// The server pings every connection this often (ms).
    #[arg(long, env = "TIDINGS_PING_INTERVAL_MS", default_value_t = 30_000)]
    pub ping_interval_ms: u64,

    /// A connection silent for ping interval + this (ms) is closed as `stale`.
    #[arg(long, env = "TIDINGS_PONG_TIMEOUT_MS", default_value_t = 5_000)]
    pub pong_timeout_ms: u64,

    /// Sockets that send no `connect` within this time (ms) are closed.
    #[arg(long, env = "TIDINGS_CONNECT_TIMEOUT_MS", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,

    /// Frames queued per connection; a connection whose queue is full is disconnected
    /// as `slow_consumer` (it recovers from history when it comes back).
    #[arg(long, env = "TIDINGS_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// On graceful shutdown clients are told to reconnect after a random delay in
    /// `[0, this]` ms, to spread the reconnect storm.
    #[arg(long, env = "TIDINGS_SHUTDOWN_SPREAD_MS", default_value_t = 5_000)]
    pub shutdown_spread_ms: u64,

    /// Serve this directory at `/` (the web demo app: `js/demo` after the web build);
    /// without it `/` is a small page listing the endpoints.
    #[arg(long, env = "TIDINGS_DEMO_DIR")]
    pub demo_dir: Option<PathBuf>,

    /// Enable `GET /api/dev/token?user=NAME`, which mints a one-hour token for any user
    /// with every permission. For demos and tests only: never in production.
    #[arg(long, env = "TIDINGS_DEV_TOKENS")]
    pub dev_tokens: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            jwt_secret: DEFAULT_JWT_SECRET.to_owned(),
            api_key: DEFAULT_API_KEY.to_owned(),
            data_dir: None,
            history_size: 1000,
            history_ttl_secs: 86_400,
            max_frame_bytes: 65_536,
            max_channels: 256,
            messages_per_second: 100,
            max_connections_per_user: 5,
            max_connections_per_ip: 1000,
            ping_interval_ms: 30_000,
            pong_timeout_ms: 5_000,
            connect_timeout_ms: 10_000,
            outbound_queue: 1024,
            shutdown_spread_ms: 5_000,
            demo_dir: None,
            dev_tokens: false,
        }
    }
}

impl Config {
    /// History retention as a duration.
    pub fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history_ttl_secs)
    }
}

/// Prints everything except the secrets.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("jwt_secret", &"***")
            .field("api_key", &"***")
            .field("data_dir", &self.data_dir)
            .field("history_size", &self.history_size)
            .field("history_ttl_secs", &self.history_ttl_secs)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_channels", &self.max_channels)
            .field("messages_per_second", &self.messages_per_second)
            .field("max_connections_per_user", &self.max_connections_per_user)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("ping_interval_ms", &self.ping_interval_ms)
            .field("pong_timeout_ms", &self.pong_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("outbound_queue", &self.outbound_queue)
            .field("shutdown_spread_ms", &self.shutdown_spread_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn default_matches_cli_defaults() {
        let parsed = Config::try_parse_from(["server-reference"]).expect("parses");
        let default = Config::default();
        // Environment variables may override the CLI values; compare only when unset.
        if std::env::vars().all(|(k, _)| !k.starts_with("TIDINGS_")) {
            assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
            assert_eq!(parsed.jwt_secret, default.jwt_secret);
            assert_eq!(parsed.api_key, default.api_key);
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let config = Config::default();
        let text = format!("{config:?}");
        assert!(!text.contains(DEFAULT_JWT_SECRET));
        assert!(!text.contains(DEFAULT_API_KEY));
    }
}
