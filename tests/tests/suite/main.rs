//! End-to-end tests of the `bridge-core` store: real SQLite files in
//! temporary directories, several stores (separate pools and writers) on one
//! file where a test needs other processes' view, raw SQL only to inspect or
//! tamper with the file.

mod access;
mod audit;
mod concurrency;
mod conversation;
mod delivery;
mod idempotency;
mod limit;
mod message;
mod open;
mod postgres;
mod status;
mod task;
mod watch;
mod yolo;

/// The whole suite again, on PostgreSQL.
#[tokio::test]
async fn every_test_on_postgres() {
    bridge_tests::postgres::rerun_on_postgres(
        "every_test_on_postgres",
        &[
            ("open::", "opening and locking a database file"),
            (
                "postgres::",
                "already on PostgreSQL, with servers of their own",
            ),
            (
                "conversation::cleanup_leaves_no_trace_of_a_message_in_the_files",
                "SQLite's secure_delete; PostgreSQL keeps deleted rows until VACUUM",
            ),
        ],
    )
    .await;
}
