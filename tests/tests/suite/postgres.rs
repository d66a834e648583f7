//! The throwaway PostgreSQL server the PostgreSQL half of the tests runs on
//! (it starts as an unprivileged user, takes only its password, and stops
//! with its test), and the PostgreSQL schema against the SQLite one.

use std::collections::BTreeSet;
use std::path::Path;

use bridge_core::{Location, NewMessage, Store, StoreOptions};
use bridge_tests::TempDb;
use bridge_tests::postgres::PgServer;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn a_test_server_serves_its_own_databases_and_stops_when_dropped() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.create_database("first").await;
    let mut connection = PgConnection::connect(&url).await.expect("connect");
    let (user, database): (String, String) =
        sqlx::query_as("SELECT current_user::text, current_database()::text")
            .fetch_one(&mut connection)
            .await
            .expect("query");
    assert_eq!((user.as_str(), database.as_str()), ("bridge", "first"));
    connection.close().await.expect("close");

    let wrong = url.replace(server.password(), "not-the-password");
    let error = PgConnection::connect(&wrong)
        .await
        .expect_err("a wrong password is refused")
        .to_string();
    assert!(error.contains("password authentication failed"), "{error}");

    let port = server.port();
    drop(server);
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "the server still listens after its drop");
}

/// `(table, column)` of every column of the store's tables on SQLite,
/// generated columns included.
async fn sqlite_columns() -> BTreeSet<(String, String)> {
    let db = TempDb::new();
    let store = db.open().await;
    store.close().await;
    let mut raw = db.raw().await;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, p.name FROM sqlite_schema AS m, pragma_table_xinfo(m.name) AS p
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'
           AND m.name NOT IN ('_sqlx_migrations', 'writer_guard')",
    )
    .fetch_all(&mut raw)
    .await
    .expect("read SQLite's columns");
    rows.into_iter().collect()
}

#[tokio::test]
async fn the_postgresql_schema_has_every_table_and_column_of_the_sqlite_one() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.create_database("schema").await;
    let mut connection = PgConnection::connect(&url).await.expect("connect");
    let migrations =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/bridge-core/migrations/postgres");
    Migrator::new(migrations)
        .await
        .expect("read the PostgreSQL migrations")
        .run(&mut connection)
        .await
        .expect("apply the PostgreSQL migrations");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name NOT IN ('_sqlx_migrations', 'head')",
    )
    .fetch_all(&mut connection)
    .await
    .expect("read PostgreSQL's columns");
    let postgres: BTreeSet<(String, String)> = rows.into_iter().collect();
    let sqlite = sqlite_columns().await;
    for column in [
        ("message", "redacted"),
        ("session", "heard_at"),
        ("access_key", "digest"),
    ] {
        let column = (column.0.to_owned(), column.1.to_owned());
        assert!(sqlite.contains(&column), "{column:?} on SQLite");
    }
    assert_eq!(
        postgres.difference(&sqlite).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "columns only on PostgreSQL"
    );
    assert_eq!(
        sqlite.difference(&postgres).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "columns only on SQLite"
    );
    let heads: Vec<(String, i64)> = sqlx::query_as("SELECT name, last_id FROM head ORDER BY name")
        .fetch_all(&mut connection)
        .await
        .expect("read the heads");
    assert_eq!(
        heads,
        [
            ("audit".into(), 0),
            ("message".into(), 0),
            ("task".into(), 0)
        ]
    );
    connection.close().await.expect("close");
}

#[tokio::test]
async fn a_postgresql_store_carries_a_conversation_its_messages_and_its_audit_chain() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.create_database("store").await;
    let keys = tempfile::tempdir().expect("a directory for the key");
    let mut options = StoreOptions::at(Location::parse(&url).expect("a PostgreSQL URL"));
    options.key_file = Some(keys.path().join("server.key"));
    let store = Store::open(options.clone()).await.expect("open");
    let pair = bridge_tests::pair(&store).await;
    for body in ["one", "two", "three"] {
        store
            .send(&pair.a, NewMessage::new(body))
            .await
            .expect("send");
    }
    let bodies: Vec<String> = store
        .check(&pair.b, 10)
        .await
        .expect("check")
        .into_iter()
        .map(|message| message.body)
        .collect();
    assert_eq!(bodies, ["one", "two", "three"]);
    let report = store.verify_audit().await.expect("verify");
    assert!(report.first_bad.is_none(), "{report:?}");
    assert!(report.rows >= 4, "{report:?}");
    store.close().await;

    // Opened again, with the same key: everything is there, tokens work.
    let store = Store::open(options.clone()).await.expect("open again");
    assert_eq!(
        store.peek(&pair.b, 10).await.expect("peek").len(),
        0,
        "what was confirmed stays confirmed"
    );
    store.close().await;

    // Without its key file: refused, not replaced by a new key.
    let mut other = options;
    let other_key = keys.path().join("other.key");
    other.key_file = Some(other_key.clone());
    let error = Store::open(other.clone())
        .await
        .expect_err("no key")
        .to_string();
    assert!(
        error.contains("is missing, but database postgres://"),
        "{error}"
    );
    assert!(!other_key.exists(), "no key was made");

    // With another key (made by an SQLite store): refused.
    let sqlite = TempDb::new();
    let mut made = sqlite.options();
    made.key_file = Some(other_key);
    Store::open(made).await.expect("make a key").close().await;
    let error = Store::open(other)
        .await
        .expect_err("another key")
        .to_string();
    assert!(error.contains("does not match database"), "{error}");
    assert!(!error.contains(server.password()), "{error}");
}

#[tokio::test]
async fn a_commit_through_one_store_wakes_a_subscriber_of_another_on_the_same_database() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.create_database("two").await;
    let keys = tempfile::tempdir().expect("a directory for the key");
    let mut options = StoreOptions::at(Location::parse(&url).expect("a PostgreSQL URL"));
    options.key_file = Some(keys.path().join("server.key"));
    // A poll far longer than the test: only a notification can wake it.
    options.poll_interval = std::time::Duration::from_secs(3600);
    let one = Store::open(options.clone()).await.expect("open one");
    let two = Store::open(options).await.expect("open two");
    let pair = bridge_tests::pair(&one).await;
    // The listener listens from the store's open: a subscription needs no
    // start-up and sees the very next commit.
    let mut changes = two.subscribe();
    for body in ["one", "two"] {
        one.send(&pair.a, NewMessage::new(body))
            .await
            .expect("send");
        tokio::time::timeout(std::time::Duration::from_secs(10), changes.changed())
            .await
            .expect("woken by the other store's commit")
            .expect("open");
    }
    let bodies: Vec<String> = two
        .check(&pair.b, 10)
        .await
        .expect("check through the other store")
        .into_iter()
        .map(|message| message.body)
        .collect();
    assert_eq!(bodies, ["one", "two"]);
    one.close().await;
    two.close().await;
}
