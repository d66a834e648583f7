//! End-to-end tests of `bridge-mcp`: the real binary, started by the test,
//! spoken to with the `rmcp` client over stdio and over Streamable HTTP.

mod auth;
mod contract;
mod dashboard;
mod delivery;
mod durability;
mod flow;
mod http;
mod malformed;
mod metrics;
mod sessions;
mod tasks;
mod team;
mod tls;
mod watching;
mod yolo;

/// Every test of this binary again, on PostgreSQL.
#[tokio::test]
async fn every_test_on_postgres() {
    bridge_tests::postgres::rerun_on_postgres(
        "every_test_on_postgres",
        &[(
            "durability::the_wal_is_synced",
            "the SQLite WAL's fsync; PostgreSQL's durability is the server's",
        )],
    )
    .await;
}
