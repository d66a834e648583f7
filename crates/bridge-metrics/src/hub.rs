//! The hub's metrics.

use std::sync::Arc;
use std::time::Duration;

use bridge_core::{Census, Health, TaskState};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::process::ProcessCollector;

/// The upper bounds of the tool latency buckets, in seconds: a millisecond
/// to the five minutes of the longest `wait_for_messages`.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0,
    300.0,
];

/// How a tool call ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Refused with a sentence (bad arguments, a wrong token, not allowed…).
    Refused,
    /// Refused by a rate limit.
    RateLimited,
    /// Failed in the protocol (an unknown tool, an internal error).
    Failed,
}

impl Outcome {
    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::RateLimited => "rate_limited",
            Outcome::Failed => "failed",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: String,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabel {
    health: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// What the hub counts; cheap to clone (one registry, shared).
#[derive(Clone)]
pub struct HubMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<ToolLabel, Histogram, fn() -> Histogram>,
    messages_sent: Counter,
    auth_failures: Counter,
    rate_limited: Counter,
    waiters: Gauge,
    conversations: Family<StateLabel, Gauge>,
    workers: Family<HealthLabel, Gauge>,
    tasks: Family<StateLabel, Gauge>,
    reassignments: Gauge,
    audit_rows: Gauge,
}

impl Default for HubMetrics {
    fn default() -> HubMetrics {
        HubMetrics::new()
    }
}

impl HubMetrics {
    /// Every metric at zero, registered.
    pub fn new() -> HubMetrics {
        let mut root = Registry::default();
        // The process_* metrics keep their usual names, without the prefix.
        root.register_collector(Box::new(ProcessCollector::new()));
        let registry = root.sub_registry_with_prefix("bridge");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls, by tool and how they ended",
            calls.clone(),
        );
        let latency = Family::<ToolLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register_with_unit(
            "tool_duration",
            "How long tool calls took, by tool",
            Unit::Seconds,
            latency.clone(),
        );
        let messages_sent = Counter::default();
        registry.register("messages_sent", "Messages stored", messages_sent.clone());
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "HTTP requests and dashboard logins refused for a wrong, expired or revoked key",
            auth_failures.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited_calls",
            "Tool calls refused by a rate limit",
            rate_limited.clone(),
        );
        let waiters = Gauge::default();
        registry.register(
            "waiters",
            "wait_for_messages calls blocked now",
            waiters.clone(),
        );
        let conversations = Family::<StateLabel, Gauge>::default();
        registry.register(
            "conversations",
            "Conversations in the store, live or expired (awaiting cleanup)",
            conversations.clone(),
        );
        let workers = Family::<HealthLabel, Gauge>::default();
        registry.register(
            "workers",
            "Workers of live conversations: silent (found so by a watchdog, until seen back), \
             healthy (heard from within the liveness window), or quiet",
            workers.clone(),
        );
        let tasks = Family::<StateLabel, Gauge>::default();
        registry.register("tasks", "Tasks, by state", tasks.clone());
        let reassignments = Gauge::default();
        registry.register(
            "reassignments",
            "Task assignments ended because their worker went silent, in the store",
            reassignments.clone(),
        );
        let audit_rows = Gauge::default();
        registry.register("audit_rows", "Rows of the audit trail", audit_rows.clone());
        HubMetrics {
            inner: Arc::new(Inner {
                registry: root,
                calls,
                latency,
                messages_sent,
                auth_failures,
                rate_limited,
                waiters,
                conversations,
                workers,
                tasks,
                reassignments,
                audit_rows,
            }),
        }
    }

    /// Counts a call of `tool` that ended as `outcome` after `took`.
    pub fn tool_call(&self, tool: &str, outcome: Outcome, took: Duration) {
        let inner = &self.inner;
        inner
            .calls
            .get_or_create(&CallLabels {
                tool: tool.to_owned(),
                outcome,
            })
            .inc();
        inner
            .latency
            .get_or_create(&ToolLabel {
                tool: tool.to_owned(),
            })
            .observe(took.as_secs_f64());
        if outcome == Outcome::RateLimited {
            inner.rate_limited.inc();
        }
    }

    /// Counts a message stored.
    pub fn message_sent(&self) {
        self.inner.messages_sent.inc();
    }

    /// Counts a refused key.
    pub fn auth_failure(&self) {
        self.inner.auth_failures.inc();
    }

    /// Counts a waiter blocked until the guard is dropped.
    pub fn waiting(&self) -> Waiting {
        self.inner.waiters.inc();
        Waiting {
            gauge: self.inner.waiters.clone(),
        }
    }

    /// The exposition, with the store's counts from `census` (left as they
    /// were when the store could not be read).
    pub fn render(&self, census: Option<&Census>) -> String {
        let inner = &self.inner;
        if let Some(census) = census {
            let set = |family: &Family<StateLabel, Gauge>, state, count: u64| {
                family
                    .get_or_create(&StateLabel { state })
                    .set(gauge(count));
            };
            set(&inner.conversations, "live", census.live_conversations);
            set(
                &inner.conversations,
                "expired",
                census.expired_conversations,
            );
            for (state, count) in TaskState::ALL.iter().zip(census.tasks) {
                set(&inner.tasks, state.as_str(), count);
            }
            for (health, count) in Health::ALL.iter().zip(census.workers) {
                inner
                    .workers
                    .get_or_create(&HealthLabel {
                        health: health.as_str(),
                    })
                    .set(gauge(count));
            }
            inner.reassignments.set(gauge(census.reassignments));
            inner.audit_rows.set(gauge(census.audit_rows));
        }
        crate::render(&inner.registry)
    }
}

/// A store's count as a gauge's value (saturating; no store holds more).
fn gauge(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A waiter counted by [`HubMetrics::waiting`]; uncounted when dropped.
pub struct Waiting {
    gauge: Gauge,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_waiters_and_the_census_are_exposed() {
        let metrics = HubMetrics::new();
        metrics.tool_call("send_to_partner", Outcome::Ok, Duration::from_millis(2));
        metrics.tool_call("send_to_partner", Outcome::RateLimited, Duration::ZERO);
        metrics.message_sent();
        let waiting = metrics.waiting();
        let census = Census {
            live_conversations: 3,
            workers: [2, 0, 1],
            tasks: [4, 1, 0, 0, 0],
            audit_rows: 17,
            ..Census::default()
        };
        let text = metrics.render(Some(&census));
        for line in [
            "bridge_tool_calls_total{tool=\"send_to_partner\",outcome=\"ok\"} 1",
            "bridge_tool_calls_total{tool=\"send_to_partner\",outcome=\"rate_limited\"} 1",
            "bridge_rate_limited_calls_total 1",
            "bridge_tool_duration_seconds_count{tool=\"send_to_partner\"} 2",
            "bridge_messages_sent_total 1",
            "bridge_waiters 1",
            "bridge_conversations{state=\"live\"} 3",
            "bridge_workers{health=\"silent\"} 1",
            "bridge_tasks{state=\"open\"} 4",
            "bridge_audit_rows 17",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(
            text.lines()
                .any(|line| line.starts_with("process_resident_memory_bytes ")),
            "{text}"
        );
        drop(waiting);
        assert!(
            metrics
                .render(None)
                .lines()
                .any(|l| l == "bridge_waiters 0")
        );
    }
}
