//! Prometheus metrics, served as text at `GET /metrics`.

use std::fmt;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tidings::protocol::ErrorCode;

type CodeLabel = [(&'static str, &'static str); 1];

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections (`tidings_connections`).
    pub connections: Gauge,
    /// Frames received from clients (`tidings_messages_in_total`).
    pub messages_in: Counter,
    /// Frames written to clients (`tidings_messages_out_total`).
    pub messages_out: Counter,
    /// Publish accepted → publication written to a socket
    /// (`tidings_delivery_latency_seconds`).
    pub delivery_latency: Histogram,
    errors: Family<CodeLabel, Counter>,
    /// Publications accepted (not counting duplicates) (`tidings_publications_total`).
    pub publications: Counter,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers all metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let connections = Gauge::default();
        let messages_in = Counter::default();
        let messages_out = Counter::default();
        // 50 µs .. ~1.6 s
        let delivery_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let errors = Family::<CodeLabel, Counter>::default();
        let publications = Counter::default();
        registry.register(
            "tidings_connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "tidings_messages_in",
            "Frames received from clients",
            messages_in.clone(),
        );
        registry.register(
            "tidings_messages_out",
            "Frames written to clients",
            messages_out.clone(),
        );
        registry.register(
            "tidings_delivery_latency_seconds",
            "Time from publish accepted to publication written to a socket",
            delivery_latency.clone(),
        );
        registry.register(
            "tidings_errors",
            "Error frames sent, by code",
            errors.clone(),
        );
        registry.register(
            "tidings_publications",
            "Publications accepted (duplicates excluded)",
            publications.clone(),
        );
        Self {
            registry,
            connections,
            messages_in,
            messages_out,
            delivery_latency,
            errors,
            publications,
        }
    }

    /// Counts one error frame with `code`.
    pub fn error(&self, code: &ErrorCode) {
        self.errors.get_or_create(&[("code", code.as_str())]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = encode(&mut out, &self.registry) {
            tracing::error!(%err, "failed to encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let m = Metrics::new();
        m.error(&ErrorCode::RateLimited);
        m.delivery_latency.observe(0.001);
        let text = m.render();
        for name in [
            "tidings_connections ",
            "tidings_messages_in_total ",
            "tidings_messages_out_total ",
            "tidings_delivery_latency_seconds_bucket",
            "tidings_errors_total{code=\"rate_limited\"} 1",
            "tidings_publications_total ",
        ] {
            assert!(text.contains(name), "{name} missing in {text}");
        }
    }
}
