//! End-to-end tests of the orchestrator side: `watchdog-monitor` and
//! `reassign-tasks`, the real binaries on temporary databases, with the
//! agents' own `bridge-mcp` and `keepalive-daemon` processes where a test
//! plays a whole team.

mod hubs;
mod reassign;
mod watchdog;

use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// Every test of this binary again, on PostgreSQL.
#[tokio::test]
async fn every_test_on_postgres() {
    bridge_tests::postgres::rerun_on_postgres("every_test_on_postgres", &[]).await;
}
