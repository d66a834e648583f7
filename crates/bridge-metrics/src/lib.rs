//! Prometheus metrics of mcp-bridge's long-running programs.
//!
//! * [`HubMetrics`]: what `bridge-mcp` counts as it serves (tool calls by
//!   tool and outcome, their latency, messages sent, failed
//!   authentications, rate-limited calls, waiters blocked), and at each
//!   scrape what the store holds ([`bridge_core::Census`]).
//! * [`WatchdogMetrics`]: `watchdog-monitor`'s scans, alerts and task moves.
//! * Both add the `process_*` basics ([`process`]).
//! * [`bind`] and [`serve`]: a `/metrics` server for a daemon without HTTP
//!   of its own.
//!
//! The exposition is the Prometheus text format (version 0.0.4), written by
//! `prometheus-client`; metric names start with `bridge_`.

mod hub;
pub mod process;
mod serve;
mod watchdog;

pub use hub::{HubMetrics, Outcome, Waiting};
pub use serve::{ServeError, bind, serve};
pub use watchdog::WatchdogMetrics;

/// The `Content-Type` of a `/metrics` answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry's exposition.
fn render(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a
    // metric, and an exposition without it is still worth serving.
    if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        tracing::error!(%error, "cannot encode the metrics");
    }
    text
}
