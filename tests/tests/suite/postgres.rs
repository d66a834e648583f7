//! The throwaway PostgreSQL server the PostgreSQL half of the tests runs on
//! (it starts as an unprivileged user, takes only its password, and stops
//! with its test), and the PostgreSQL schema against the SQLite one.

use std::collections::BTreeSet;
use std::path::Path;

use bridge_core::{ChangeSubscription, Error, Location, NewMessage, Store, StoreOptions};
use bridge_tests::TempDb;
use bridge_tests::postgres::PgServer;
use bridge_tests::tls::TestCa;
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
         WHERE table_schema = 'public'
           AND table_name NOT IN ('_sqlx_migrations', 'head', 'writer_batch')",
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
        woken(&mut changes, "woken by the other store's commit").await;
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

/// What `bridgectl list` on `url` (with a key file in `dir`) exits with and
/// the last line it prints on stderr.
fn bridgectl_list(url: &str, dir: &Path) -> (Option<i32>, String) {
    let key = dir.join("server.key");
    let (code, _, stderr) = bridge_tests::daemon::run(
        "bridgectl",
        Path::new(url),
        &["list"],
        &[("BRIDGE_KEY_FILE", key.to_str().expect("a UTF-8 path"))],
    );
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    (code, last)
}

#[tokio::test]
async fn a_server_out_of_reach_a_wrong_password_or_a_missing_database_is_said_in_words() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let keys = tempfile::tempdir().expect("a directory for the key");
    let open = |url: String| {
        let mut options = StoreOptions::at(Location::parse(&url).expect("a PostgreSQL URL"));
        options.key_file = Some(keys.path().join("server.key"));
        options
    };

    // Nobody listens on that port: it may come back, so exit 1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://bridge:secret-pw@127.0.0.1:{closed}/bridge");
    let error = Store::open(open(url.clone()))
        .await
        .expect_err("unreachable");
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "cannot reach database postgres://bridge@127.0.0.1:{closed}/bridge: connection refused"
        )
    );
    assert_eq!(
        bridgectl_list(&url, keys.path()),
        (
            Some(1),
            format!(
                "bridgectl: cannot reach database postgres://bridge@127.0.0.1:{closed}/bridge: \
                 connection refused"
            )
        )
    );

    // A wrong password, a database the server does not have: refused, and
    // retrying cannot help, so exit 78.
    let wrong = server
        .url("postgres")
        .replace(server.password(), "not-the-password");
    let error = Store::open(open(wrong.clone()))
        .await
        .expect_err("wrong password")
        .to_string();
    let shown = format!("postgres://bridge@127.0.0.1:{}/postgres", server.port());
    assert_eq!(
        error,
        format!(
            "database {shown} refused the connection: wrong password for its user \
             (check the URL or its PGPASSWORD)"
        )
    );
    assert!(!error.contains("not-the-password"));
    assert_eq!(
        bridgectl_list(&wrong, keys.path()),
        (Some(78), format!("bridgectl: {error}"))
    );
    let error = Store::open(open(server.url("nowhere")))
        .await
        .expect_err("no such database")
        .to_string();
    assert_eq!(
        error,
        format!(
            "database postgres://bridge@127.0.0.1:{}/nowhere refused the connection: \
             database \"nowhere\" does not exist on the server; create it first (createdb)",
            server.port()
        )
    );
}

#[tokio::test]
async fn a_database_of_another_program_or_a_newer_schema_is_refused_and_left_alone() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let keys = tempfile::tempdir().expect("a directory for the key");
    let open = |url: &str| {
        let mut options = StoreOptions::at(Location::parse(url).expect("a PostgreSQL URL"));
        options.key_file = Some(keys.path().join("server.key"));
        Store::open(options)
    };

    let foreign = server.create_database("recipes").await;
    let mut connection = server.connect("recipes").await;
    sqlx::query("CREATE TABLE recipe (name TEXT)")
        .execute(&mut connection)
        .await
        .expect("create a table of another program");
    let error = open(&foreign).await.expect_err("foreign").to_string();
    assert_eq!(
        error,
        format!(
            "postgres://bridge@127.0.0.1:{}/recipes is a database of another program, \
             not an mcp-bridge store",
            server.port()
        )
    );
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut connection)
    .await
    .expect("count tables");
    assert_eq!(tables, 1, "nothing was added to a foreign database");
    connection.close().await.expect("close");

    let newer = server.create_database("newer").await;
    open(&newer).await.expect("make the store").close().await;
    let mut connection = server.connect("newer").await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (29990101000000, 'from the future', true, '\\x00', 0)",
    )
    .execute(&mut connection)
    .await
    .expect("pretend a newer binary migrated it");
    connection.close().await.expect("close");
    let error = open(&newer).await.expect_err("newer").to_string();
    assert!(
        error.ends_with("has schema version 29990101000000, newer than this mcp-bridge knows (20261130000000); upgrade mcp-bridge"),
        "{error}"
    );
}

#[tokio::test]
async fn tls_to_the_server_is_verified_against_the_ca_the_url_names() {
    let ca = TestCa::new();
    let Some(server) = PgServer::start_with_tls(&ca).await else {
        return;
    };
    let url = server.create_database("secured").await;
    let dir = tempfile::tempdir().expect("a directory for the key and CAs");
    let trusted = dir.path().join("ca.pem");
    std::fs::write(&trusted, ca.pem()).expect("write the CA");
    let stranger = dir.path().join("stranger.pem");
    std::fs::write(&stranger, TestCa::new().pem()).expect("write another CA");
    let open = |root: &Path| {
        let with_tls = format!("{url}?sslmode=verify-full&sslrootcert={}", root.display());
        let mut options = StoreOptions::at(Location::parse(&with_tls).expect("a PostgreSQL URL"));
        options.key_file = Some(dir.path().join("server.key"));
        Store::open(options)
    };

    let store = open(&trusted).await.expect("open over TLS");
    let pair = bridge_tests::pair(&store).await;
    store
        .send(&pair.a, NewMessage::new("over TLS"))
        .await
        .expect("send");
    // Every connection of the store (reads, the writer, the change feed)
    // speaks TLS.
    let mut admin = server.connect("postgres").await;
    let (connections, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl)
         FROM pg_stat_activity AS a JOIN pg_stat_ssl AS s USING (pid)
         WHERE a.datname = 'secured'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("read the server's connections");
    assert!(connections >= 3, "{connections} connections");
    assert_eq!(encrypted, connections);
    admin.close().await.expect("close");
    store.close().await;

    // A server certificate the named CA did not sign: refused, retrying
    // cannot help.
    let error = open(&stranger).await.expect_err("an untrusted server");
    assert!(matches!(error, Error::Refused { .. }), "{error:?}");
    let error = error.to_string();
    assert!(error.contains("refused the connection: TLS"), "{error}");
    assert!(!error.contains(server.password()), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_in_the_middle_of_sending_loses_nothing_and_doubles_nothing() {
    const SENDERS: usize = 4;
    const EACH: usize = 150;
    let Some(mut server) = PgServer::start().await else {
        return;
    };
    let url = server.create_database("restarted").await;
    let keys = tempfile::tempdir().expect("a directory for the key");
    let mut options = StoreOptions::at(Location::parse(&url).expect("a PostgreSQL URL"));
    options.key_file = Some(keys.path().join("server.key"));
    options.rate_limit_per_minute = 0;
    let store = Store::open(options).await.expect("open");
    let mut pairs = Vec::new();
    for _ in 0..SENDERS {
        pairs.push(bridge_tests::pair(&store).await);
    }
    // Each sender sends its numbered messages one after another, noting
    // which were answered as sent and which as failed.
    let senders: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(n, pair)| {
            let (store, credentials) = (store.clone(), pair.a.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for m in 0..EACH {
                    let body = format!("s{n} m{m}");
                    let sent = store
                        .send(&credentials, NewMessage::new(body.clone()))
                        .await;
                    let answered = std::time::Instant::now();
                    outcomes.push((
                        body,
                        answered,
                        sent.map(|_| ()).map_err(|error| error.to_string()),
                    ));
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let stopping = std::time::Instant::now();
    server.restart().await;
    let restarted = std::time::Instant::now();
    let mut outcomes = Vec::new();
    for sender in senders {
        outcomes.extend(sender.await.expect("a sender"));
    }

    assert!(
        outcomes.iter().any(|(_, at, _)| *at < stopping)
            && outcomes.iter().any(|(_, at, _)| *at > restarted),
        "the restart came in the middle of the sends"
    );
    let mut stored: Vec<String> = Vec::new();
    for pair in &pairs {
        stored.extend(
            store
                .peek(&pair.b, 1000)
                .await
                .expect("peek after the restart")
                .into_iter()
                .map(|message| message.body),
        );
    }
    for (body, _, sent) in &outcomes {
        let copies = stored.iter().filter(|stored| *stored == body).count();
        match sent {
            Ok(()) => assert_eq!(copies, 1, "{body} was answered as sent"),
            Err(error) => assert_eq!(copies, 0, "{body} failed ({error}) yet is stored"),
        }
    }
    // The writer waits for the server as for a lock (the busy timeout), so
    // a restart of a second or two fails nothing.
    let failed: Vec<_> = outcomes
        .iter()
        .filter_map(|(body, _, sent)| sent.as_ref().err().map(|error| (body, error)))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    // The store works on, and its chain is whole.
    store
        .send(&pairs[0].a, NewMessage::new("after"))
        .await
        .expect("a send after the restart");
    let report = store.verify_audit().await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    store.close().await;
}

/// Two stores on one new database of `server`, the second one's poll every
/// `poll`; the first one's conversation; and the directory of their key
/// file, to keep until they are closed.
async fn two_stores(
    server: &PgServer,
    name: &str,
    poll: std::time::Duration,
) -> (Store, Store, bridge_tests::Pair, tempfile::TempDir) {
    let keys = tempfile::tempdir().expect("a directory for the key");
    let url = server.create_database(name).await;
    let mut options = StoreOptions::at(Location::parse(&url).expect("a PostgreSQL URL"));
    options.key_file = Some(keys.path().join("server.key"));
    let one = Store::open(options.clone()).await.expect("open one");
    options.poll_interval = poll;
    let two = Store::open(options).await.expect("open two");
    let pair = bridge_tests::pair(&one).await;
    (one, two, pair, keys)
}

/// Waits (up to 10 s) until `count` connections to `database` have last
/// run `LISTEN` (the server shows a statement once it has started).
async fn wait_for_listeners(admin: &mut PgConnection, database: &str, count: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(database)
        .fetch_one(&mut *admin)
        .await
        .expect("count the listeners");
        if listening == count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{listening} listeners, not {count}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_change_feed_whose_connection_is_cut_wakes_its_waiters_and_listens_again() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    // A poll far longer than the test: only the feed can wake the waiter.
    let hour = std::time::Duration::from_secs(3600);
    let (one, two, pair, _keys) = two_stores(&server, "cut", hour).await;
    let mut changes = two.subscribe();
    let mut admin = server.connect("postgres").await;
    wait_for_listeners(&mut admin, "cut", 2).await;
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = 'cut' AND query LIKE 'LISTEN%'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("cut the listeners");
    assert_eq!(cut, 2, "one listener per store");
    // What was committed while no one listened is looked at again.
    woken(&mut changes, "woken when the feed broke").await;
    // And it listens again: the next commit wakes it.
    wait_for_listeners(&mut admin, "cut", 2).await;
    one.send(&pair.a, NewMessage::new("after the cut"))
        .await
        .expect("send");
    woken(&mut changes, "woken by the next commit").await;
    assert_eq!(two.check(&pair.b, 10).await.expect("check").len(), 1);
    admin.close().await.expect("close");
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn a_commit_without_a_notification_is_noticed_by_the_periodic_check() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let poll = std::time::Duration::from_millis(200);
    let (one, two, _pair, _keys) = two_stores(&server, "silent", poll).await;
    let mut changes = two.subscribe();
    // A feed gone silent, as a half-open connection would be: a commit
    // that moves the heads and notifies no one.
    let mut raw = server.connect("silent").await;
    sqlx::query("UPDATE head SET last_id = last_id")
        .execute(&mut raw)
        .await
        .expect("commit without NOTIFY");
    woken(&mut changes, "woken by the periodic check").await;
    raw.close().await.expect("close");
    one.close().await;
    two.close().await;
}

/// Waits (up to 10 s) for `changes` to wake, `because` of what.
async fn woken(changes: &mut ChangeSubscription, because: &str) {
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.changed())
        .await
        .unwrap_or_else(|_| panic!("not {because} within 10 s"))
        .expect("the store is open");
}

/// The backend processes listening on `database`, in order.
async fn listeners(admin: &mut PgConnection, database: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%' ORDER BY pid",
    )
    .bind(database)
    .fetch_all(&mut *admin)
    .await
    .expect("list the listeners")
}

#[tokio::test]
async fn a_stores_own_commit_wakes_its_subscribers_once_and_another_stores_still_does() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    // A poll far longer than the test: no periodic check wakes anyone.
    let hour = std::time::Duration::from_secs(3600);
    let (one, two, pair, _keys) = two_stores(&server, "own", hour).await;
    // The second store's own commits, in the same conversation; first the
    // notifications of the first store's commits so far are let in.
    let mut mine = two.subscribe();
    while tokio::time::timeout(std::time::Duration::from_millis(300), mine.changed())
        .await
        .is_ok()
    {}
    two.send(&pair.b, NewMessage::new("from two"))
        .await
        .expect("send through two");
    woken(&mut mine, "woken by its own store's writer").await;
    // The same commit's notification reaches two's listener within
    // milliseconds; it must not wake anyone again. (A slower machine can
    // only make this pass without proving it, never fail it.)
    let again = tokio::time::timeout(std::time::Duration::from_millis(500), mine.changed()).await;
    assert!(again.is_err(), "woken again by its own notification");
    // Another store's commit still wakes it: the listener is alive.
    one.send(&pair.a, NewMessage::new("from one"))
        .await
        .expect("send through one");
    woken(&mut mine, "woken by the other store's commit").await;
    let bodies: Vec<String> = two
        .check(&pair.b, 10)
        .await
        .expect("check")
        .into_iter()
        .map(|message| message.body)
        .collect();
    assert_eq!(bodies, ["from one"]);
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn a_busy_change_feed_is_not_taken_for_a_silent_one() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    // Checks many times while the other store commits: many checks find
    // heads whose notification is still on its way.
    let poll = std::time::Duration::from_millis(20);
    let (one, two, pair, _keys) = two_stores(&server, "busy", poll).await;
    let mut admin = server.connect("postgres").await;
    wait_for_listeners(&mut admin, "busy", 2).await;
    let before = listeners(&mut admin, "busy").await;
    for n in 0..300 {
        one.send(&pair.a, NewMessage::new(format!("message {n}")))
            .await
            .expect("send");
    }
    // A feed taken for silent is cut and listens again on a new backend.
    assert_eq!(listeners(&mut admin, "busy").await, before);
    assert_eq!(two.check(&pair.b, 500).await.expect("check").len(), 300);
    admin.close().await.expect("close");
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn a_connection_cut_while_the_commit_is_on_its_way_is_resolved_and_the_send_goes_through() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.create_database("cut_commit").await;
    let keys = tempfile::tempdir().expect("a directory for the key");
    let mut options = StoreOptions::at(Location::parse(&url).expect("a PostgreSQL URL"));
    options.key_file = Some(keys.path().join("server.key"));
    let store = Store::open(options).await.expect("open");
    let pair = bridge_tests::pair(&store).await;
    // Another hub holds the heads: the writer's commit, once sent, waits.
    let mut other = server.connect("cut_commit").await;
    sqlx::query("BEGIN")
        .execute(&mut other)
        .await
        .expect("begin");
    sqlx::query("SELECT name FROM head FOR UPDATE")
        .execute(&mut other)
        .await
        .expect("hold the heads");
    let sending = {
        let (store, credentials) = (store.clone(), pair.a.clone());
        tokio::spawn(async move { store.send(&credentials, NewMessage::new("cut")).await })
    };
    // Its connection is cut while the commit waits in the server: whether
    // it went through is unknown to the writer until it asks.
    let mut admin = server.connect("postgres").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let cut: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = 'cut_commit' AND query LIKE '%mcp_bridge_commit%'
               AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut admin)
        .await
        .expect("cut the writer's connection");
        if cut == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the commit never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("let go of the heads");
    let sent = sending
        .await
        .expect("the sender")
        .expect("the send goes through");
    let stored = store.peek(&pair.b, 10).await.expect("peek");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].id, sent.id);
    let report = store.verify_audit().await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    other.close().await.expect("close");
    admin.close().await.expect("close");
    store.close().await;
}

#[tokio::test]
async fn two_stores_writing_at_once_keep_every_message_once_in_order_and_one_audit_chain() {
    const EACH: usize = 60;
    let Some(server) = PgServer::start().await else {
        return;
    };
    let hour = std::time::Duration::from_secs(3600);
    let (one, two, _, _keys) = two_stores(&server, "both_write", hour).await;
    // Three conversations on each store, all sending at once: the stores'
    // batches come in between each other's read and commit, so both ways
    // of committing run (without the lock, and with it after a conflict).
    let mut pairs = Vec::new();
    for store in [&one, &two, &one, &two, &one, &two] {
        pairs.push((store.clone(), bridge_tests::pair(store).await));
    }
    let senders: Vec<_> = pairs
        .iter()
        .map(|(store, pair)| {
            let (store, credentials) = (store.clone(), pair.a.clone());
            tokio::spawn(async move {
                for m in 0..EACH {
                    store
                        .send(&credentials, NewMessage::new(format!("m{m}")))
                        .await
                        .expect("send");
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("a sender");
    }
    for (store, pair) in &pairs {
        let messages = store.peek(&pair.b, 1000).await.expect("peek");
        let bodies: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
        let expected: Vec<String> = (0..EACH).map(|m| format!("m{m}")).collect();
        assert_eq!(bodies, expected, "each message once, in the order sent");
        assert!(messages.windows(2).all(|two| two[0].id < two[1].id));
    }
    let report = two.verify_audit().await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert!(report.rows >= (6 * EACH) as u64, "{report:?}");
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn a_key_another_store_used_is_replayed_by_a_writer_that_remembers_its_state() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let hour = std::time::Duration::from_secs(3600);
    let (one, two, pair, _keys) = two_stores(&server, "remembered_key", hour).await;
    let mut keyed = NewMessage::new("deploy");
    keyed.idempotency_key = Some("k-1".parse().expect("a key"));
    let first = two
        .send(&pair.a, keyed.clone())
        .await
        .expect("send through two");
    // Store one reads once, after that, and remembers what its batch left:
    // a state in which the key is unknown.
    one.send(&pair.a, NewMessage::new("unkeyed"))
        .await
        .expect("send through one");
    // Its next batch starts from that state; the key's row refuses it, and
    // the batch reads again and replays.
    let again = one.send(&pair.a, keyed).await.expect("the same send again");
    assert!(again.replayed);
    assert_eq!(again.id, first.id);
    let bodies: Vec<String> = one
        .peek(&pair.b, 10)
        .await
        .expect("peek")
        .into_iter()
        .map(|message| message.body)
        .collect();
    assert_eq!(bodies, ["deploy", "unkeyed"]);
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn a_batch_another_store_overtook_commits_on_what_its_call_answered_without_a_read() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let hour = std::time::Duration::from_secs(3600);
    let (one, two, pair, _keys) = two_stores(&server, "overtaken", hour).await;
    // Both stores commit once, so that each keeps the state its batch left.
    one.send(&pair.a, NewMessage::new("one 0"))
        .await
        .expect("send through one");
    two.send(&pair.b, NewMessage::new("two 0"))
        .await
        .expect("send through two");
    let mut admin = server.connect("postgres").await;
    sqlx::query("ALTER DATABASE overtaken SET log_statement = 'all'")
        .execute(&mut admin)
        .await
        .expect("log the statements");
    // The setting reaches new connections only: cut the writers' (each
    // opens its connection again, and forgets its state, on its next batch)
    // and let one batch of each run on the new ones.
    sqlx::query(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = 'overtaken' AND query NOT LIKE 'LISTEN%'",
    )
    .execute(&mut admin)
    .await
    .expect("cut the writers' connections");
    for (store, credentials, body) in [(&one, &pair.a, "one 1"), (&two, &pair.b, "two 1")] {
        while store
            .send(credentials, NewMessage::new(body))
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let logged = server.log().len();
    // Each send now finds the other store's commit after its own: its
    // kept state is stale, and its first call is overtaken.
    for round in 2..5 {
        for (store, credentials, name) in [(&one, &pair.a, "one"), (&two, &pair.b, "two")] {
            store
                .send(credentials, NewMessage::new(format!("{name} {round}")))
                .await
                .expect("a send after the other store's");
        }
    }
    let log = server.log();
    let since = &log[logged..];
    let calls = since.matches("FROM mcp_bridge_commit(").count();
    let reads = since.matches("SELECT mcp_bridge_read(").count();
    assert_eq!(reads, 0, "no batch read; the log since:\n{since}");
    assert_eq!(
        calls, 12,
        "six sends, each overtaken once; the log since:\n{since}"
    );
    let bodies: Vec<String> = one
        .peek(&pair.b, 20)
        .await
        .expect("peek")
        .into_iter()
        .map(|message| message.body)
        .collect();
    assert_eq!(bodies, ["one 0", "one 1", "one 2", "one 3", "one 4"]);
    one.close().await;
    two.close().await;
}
