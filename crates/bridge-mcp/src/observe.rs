//! What the HTTP server serves besides MCP, for the operator: `/metrics`
//! (Prometheus), and the `Host` check those routes share with `/mcp`.
//!
//! `/metrics` is behind the same authentication as `/mcp` unless
//! `--metrics-public`: a request with a key needs an operator's access key
//! (a session token holder sees only its own conversation elsewhere, and
//! the metrics count the whole team). Each scrape reads the store's counts
//! ([`bridge_core::Store::census`]); if the store cannot be read, the
//! scrape still answers, with those gauges as last read, and says so in
//! the log.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bridge_core::Store;
use bridge_metrics::HubMetrics;
use http::{StatusCode, header};

use crate::http_auth::Identity;

/// The path of the metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The `Host` values a request may carry: `None`, any (the server listens
/// on every address and was given no public name).
#[derive(Clone, Debug)]
pub struct AllowedHosts(pub Option<Arc<Vec<String>>>);

impl AllowedHosts {
    /// Whether `host` (a `Host` header's value) is allowed: an entry with a
    /// port must match whole, one without matches any port.
    fn allows(&self, host: &str) -> bool {
        let Some(allowed) = &self.0 else {
            return true;
        };
        let host = host.to_ascii_lowercase();
        let name = match host.rsplit_once(':') {
            Some((name, port)) if !port.contains(']') => name,
            _ => host.as_str(),
        };
        allowed
            .iter()
            .any(|entry| *entry == host || (!has_port(entry) && entry == name))
    }
}

/// Whether an allowed-host entry names a port.
fn has_port(entry: &str) -> bool {
    entry
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'))
}

/// Refuses a request whose `Host` is not one of the server's names (a page
/// elsewhere that rebinds its DNS name to this server), as `rmcp` does for
/// `/mcp`.
pub async fn check_host(
    State(allowed): State<AllowedHosts>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !allowed.allows(host) {
        return (
            StatusCode::FORBIDDEN,
            "Forbidden: the Host header does not name this server (pass --public-host with the \
             name clients use)",
        )
            .into_response();
    }
    next.run(request).await
}

/// The state of [`metrics`].
#[derive(Clone)]
pub struct MetricsState {
    /// Read for the counts of each scrape.
    pub store: Store,
    /// What the server counted.
    pub metrics: HubMetrics,
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<MetricsState>, request: Request) -> Response {
    if let Some(Identity::Session(_)) = request.extensions().get::<Identity>() {
        return (
            StatusCode::FORBIDDEN,
            "Forbidden: the metrics need an operator's access key (bridgectl access create), not \
             a session token",
        )
            .into_response();
    }
    let census = match state.store.census().await {
        Ok(census) => Some(census),
        Err(error) => {
            tracing::warn!(%error, "cannot count the store for the metrics");
            None
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, bridge_metrics::CONTENT_TYPE)],
        state.metrics.render(census.as_ref()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_with_their_port_or_any() {
        let allowed = AllowedHosts(Some(Arc::new(vec![
            "127.0.0.1:8765".into(),
            "localhost:8765".into(),
            "hub.example.org".into(),
            "[::1]:9".into(),
        ])));
        assert!(allowed.allows("127.0.0.1:8765"));
        assert!(allowed.allows("LOCALHOST:8765"));
        assert!(allowed.allows("hub.example.org:443"));
        assert!(allowed.allows("hub.example.org"));
        assert!(allowed.allows("[::1]:9"));
        assert!(!allowed.allows("127.0.0.1:9999"));
        assert!(!allowed.allows("evil.example:8765"));
        assert!(!allowed.allows(""));
        assert!(AllowedHosts(None).allows("anything"));
    }
}
