//! The watchdog's metrics.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::process::ProcessCollector;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// What `watchdog-monitor` counts; cheap to clone.
#[derive(Clone)]
pub struct WatchdogMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    scans: Counter,
    failed_scans: Counter,
    alerts: Counter,
    recoveries: Counter,
    moves: Family<OutcomeLabel, Counter>,
}

impl Default for WatchdogMetrics {
    fn default() -> WatchdogMetrics {
        WatchdogMetrics::new()
    }
}

impl WatchdogMetrics {
    /// Every metric at zero, registered.
    pub fn new() -> WatchdogMetrics {
        let mut root = Registry::default();
        // The process_* metrics keep their usual names, without the prefix.
        root.register_collector(Box::new(ProcessCollector::new()));
        let registry = root.sub_registry_with_prefix("bridge_watchdog");
        let scans = Counter::default();
        registry.register("scans", "Scans of the workers done", scans.clone());
        let failed_scans = Counter::default();
        registry.register(
            "failed_scans",
            "Scans that could not read the store",
            failed_scans.clone(),
        );
        let alerts = Counter::default();
        registry.register(
            "alerts",
            "Silences found and alerted (once per silence)",
            alerts.clone(),
        );
        let recoveries = Counter::default();
        registry.register(
            "recoveries",
            "Workers found silent that were heard from again",
            recoveries.clone(),
        );
        let moves = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "task_moves",
            "Tasks of silent workers handled, by outcome (moved, marked unassigned, …)",
            moves.clone(),
        );
        WatchdogMetrics {
            inner: Arc::new(Inner {
                registry: root,
                scans,
                failed_scans,
                alerts,
                recoveries,
                moves,
            }),
        }
    }

    /// Counts a scan; `ok`: it read the store.
    pub fn scan(&self, ok: bool) {
        self.inner.scans.inc();
        if !ok {
            self.inner.failed_scans.inc();
        }
    }

    /// Counts a silence alerted.
    pub fn alert(&self) {
        self.inner.alerts.inc();
    }

    /// Counts a silent worker heard from again.
    pub fn recovery(&self) {
        self.inner.recoveries.inc();
    }

    /// Counts a task handled with `outcome` (a [`bridge_core::Reassignment`]'s).
    pub fn task_move(&self, outcome: &'static str) {
        self.inner
            .moves
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// The exposition.
    pub fn render(&self) -> String {
        crate::render(&self.inner.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_alerts_and_moves_are_exposed() {
        let metrics = WatchdogMetrics::new();
        metrics.scan(true);
        metrics.scan(false);
        metrics.alert();
        metrics.task_move("moved");
        metrics.task_move("moved");
        let text = metrics.render();
        for line in [
            "bridge_watchdog_scans_total 2",
            "bridge_watchdog_failed_scans_total 1",
            "bridge_watchdog_alerts_total 1",
            "bridge_watchdog_recoveries_total 0",
            "bridge_watchdog_task_moves_total{outcome=\"moved\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
