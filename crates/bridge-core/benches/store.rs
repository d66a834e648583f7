//! Benchmarks of the store, printing throughput and latency percentiles.
//!
//! Run with `cargo bench -p bridge-core`. Measures, on a database in the
//! system's temporary directory (or `$BENCH_DIR`):
//!
//! * the physical reference: a bare SQLite single-row insert+commit loop
//!   through the C API, with the store's pragmas (WAL, `synchronous=NORMAL`,
//!   and `FULL`: one sync per commit), and the same loop through `sqlx`, the
//!   driver the store uses;
//! * `send` (message, session update and audit row in one transaction)
//!   throughput and latency with 1 writer; with 10 writers sharing one store
//!   (one server process serving ten agents), each in its own conversation
//!   or all in one; and with 10 writer processes, each with a store of its
//!   own on one file (ten agents' servers over stdio); each with durability
//!   `full` (the default: a sync per commit, shared by a batch) and
//!   `normal`;
//! * latency percentiles of a consuming read of one message: confirmed at
//!   once (`check`), and handed out pending and confirmed by the next read
//!   (`deliver` with an ack, as `bridge-mcp` does for an agent); and of a
//!   read that finds nothing (a poll); with durability `normal`, whose
//!   numbers compare with wave 1's (it had no other);
//! * redaction of a 50 000-character message, without and with secrets.

#![allow(unsafe_code)] // Only the C-API reference loop, see `bare_sqlite_c`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use bridge_core::{
    Credentials, Durability, NewConversation, NewMessage, SessionId, Store, StoreOptions,
};
use bridge_testkit::report::{machine, rate, report_latency, report_rate};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Ok(job) = std::env::var(CHILD_ENV) {
        return writer_child(&job).await;
    }
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("create a temporary directory");
    println!("mcp-bridge store benchmarks");
    println!("database directory: {}", dir.path().display());
    println!("{}", machine());
    println!();

    let bare_c = bare_sqlite_c(&dir.path().join("bare-c.db"), 100_000, "NORMAL");
    report_rate("bare SQLite insert+commit (C API)", bare_c.0, bare_c.1);
    let bare_full = bare_sqlite_c(&dir.path().join("bare-c-full.db"), 2_000, "FULL");
    report_rate(
        "bare SQLite insert+commit (C API), synchronous=FULL",
        bare_full.0,
        bare_full.1,
    );
    let bare_sqlx = bare_sqlite_sqlx(&dir.path().join("bare-sqlx.db"), 20_000).await;
    report_rate("bare SQLite insert+commit (sqlx)", bare_sqlx.0, bare_sqlx.1);
    println!();

    for (durability, name, scale) in [
        (Durability::Full, "full", 1),
        (Durability::Normal, "normal", 10),
    ] {
        let file = |what: &str| dir.path().join(format!("{what}-{name}.db"));
        let at = |what: &str| format!("{what}, durability {name}");
        let one = sends(
            &file("one"),
            durability,
            1,
            Conversations::Own,
            2_000 * scale,
        )
        .await;
        report_rate(&at("send, 1 writer"), one.0, one.1);
        report_latency(&at("send latency, 1 writer"), &one.2);
        let shared = sends(
            &file("shared"),
            durability,
            10,
            Conversations::Own,
            500 * scale,
        )
        .await;
        report_rate(&at("send, 10 writers on 1 store"), shared.0, shared.1);
        report_latency(&at("send latency, 10 writers on 1 store"), &shared.2);
        let one_conversation = sends(
            &file("one-conversation"),
            durability,
            10,
            Conversations::Shared,
            500 * scale,
        )
        .await;
        report_rate(
            &at("send, 10 writers on 1 store, 1 conversation"),
            one_conversation.0,
            one_conversation.1,
        );
        let processes = writer_processes(&file("processes"), durability, 10, 200 * scale).await;
        report_rate(&at("send, 10 writer processes"), processes.0, processes.1);
        report_latency(&at("send latency, 10 writer processes"), &processes.2);
        if durability == Durability::Normal {
            let bare_rate = rate(bare_c.0, bare_c.1);
            println!(
                "    10 writers on 1 store: {:.2}x the bare C-API rate, {:.2}x the bare sqlx rate",
                rate(shared.0, shared.1) / bare_rate,
                rate(shared.0, shared.1) / rate(bare_sqlx.0, bare_sqlx.1)
            );
        } else {
            println!(
                "    10 writers on 1 store: {:.1}x the bare C-API rate with a sync per commit",
                rate(shared.0, shared.1) / rate(bare_full.0, bare_full.1)
            );
        }
        println!();
    }

    let reads = checks(&dir.path().join("check.db"), 5_000).await;
    report_latency(
        "check consuming 1 message (confirmed at once)",
        &reads.checked,
    );
    report_latency(
        "deliver consuming 1 message, confirmed by the next read",
        &reads.delivered,
    );
    report_latency("check finding nothing (poll)", &reads.polling);
    println!();

    redaction();
}

/// The physical reference: one row inserted and committed per iteration,
/// straight through SQLite's C API, with the store's pragmas and
/// `synchronous` as given.
fn bare_sqlite_c(path: &Path, count: usize, synchronous: &str) -> (usize, Duration) {
    use libsqlite3_sys as ffi;
    use std::ffi::CString;

    let path = CString::new(path.to_str().expect("utf-8 path")).expect("no NUL");
    let mut db = std::ptr::null_mut();
    let mut insert = std::ptr::null_mut();
    // SAFETY: a single thread uses `db` and `insert`, both checked after
    // creation and finalized/closed at the end; every pointer passed to SQLite
    // is a valid NUL-terminated string or a buffer with its length.
    unsafe {
        assert_eq!(ffi::sqlite3_open(path.as_ptr(), &mut db), ffi::SQLITE_OK);
        for sql in [
            "PRAGMA journal_mode = WAL".to_owned(),
            format!("PRAGMA synchronous = {synchronous}"),
            "PRAGMA foreign_keys = ON".to_owned(),
            "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)".to_owned(),
        ] {
            let sql = CString::new(sql).expect("no NUL");
            let rc = ffi::sqlite3_exec(
                db,
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            assert_eq!(rc, ffi::SQLITE_OK);
        }
        let sql = CString::new("INSERT INTO t (body) VALUES (?1)").expect("no NUL");
        let rc = ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut insert, std::ptr::null_mut());
        assert_eq!(rc, ffi::SQLITE_OK);
        let started = Instant::now();
        for n in 0..count {
            let body = format!("message {n}");
            ffi::sqlite3_bind_text(
                insert,
                1,
                body.as_ptr().cast(),
                body.len() as i32,
                ffi::SQLITE_TRANSIENT(),
            );
            assert_eq!(ffi::sqlite3_step(insert), ffi::SQLITE_DONE);
            ffi::sqlite3_reset(insert);
        }
        let elapsed = started.elapsed();
        ffi::sqlite3_finalize(insert);
        ffi::sqlite3_close(db);
        (count, elapsed)
    }
}

/// The same loop through `sqlx`, which hands every statement to a worker
/// thread: the floor under anything the store does per round trip.
async fn bare_sqlite_sqlx(path: &Path, count: usize) -> (usize, Duration) {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("connect");
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&mut connection)
        .await
        .expect("create");
    let started = Instant::now();
    for n in 0..count {
        sqlx::query("INSERT INTO t (body) VALUES (?1)")
            .bind(format!("message {n}"))
            .execute(&mut connection)
            .await
            .expect("insert");
    }
    let elapsed = started.elapsed();
    connection.close().await.expect("close");
    (count, elapsed)
}

fn options(path: &Path, durability: Durability) -> StoreOptions {
    let mut options = StoreOptions::new(path);
    options.rate_limit_per_minute = 0;
    options.durability = durability;
    options
}

/// Opens a store and creates one conversation; returns the orchestrator's
/// and the worker's credentials.
async fn conversation(store: &Store) -> (Credentials, Credentials) {
    let created = store
        .create_conversation(NewConversation::new("orchestrator", "worker"))
        .await
        .expect("create");
    (
        created.credentials(SessionId::A),
        created.credentials(SessionId::B),
    )
}

/// Whether each writer sends in a conversation of its own (a team of
/// workers) or all in one.
#[derive(Clone, Copy, PartialEq)]
enum Conversations {
    Own,
    Shared,
}

/// `writers` tasks sharing one store (one server process serving several
/// agents), each sending `per_writer` messages of about 80 characters.
/// Returns the total, the wall time and every send's latency.
async fn sends(
    path: &Path,
    durability: Durability,
    writers: usize,
    conversations: Conversations,
    per_writer: usize,
) -> (usize, Duration, Vec<Duration>) {
    let store = Store::open(options(path, durability)).await.expect("open");
    let mut credentials: Vec<Credentials> = Vec::new();
    for _ in 0..writers {
        let next = match (conversations, credentials.first()) {
            (Conversations::Shared, Some(first)) => first.clone(),
            _ => conversation(&store).await.0,
        };
        credentials.push(next);
    }
    let body = "Please review the changes in src/store.rs and run the tests; report anything odd."
        .to_owned();
    let started = Instant::now();
    let tasks: Vec<_> = credentials
        .into_iter()
        .map(|credentials| {
            let store = store.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_writer);
                for _ in 0..per_writer {
                    let sent = Instant::now();
                    store
                        .send(&credentials, NewMessage::new(body.clone()))
                        .await
                        .expect("send");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(writers * per_writer);
    for task in tasks {
        latencies.extend(task.await.expect("writer"));
    }
    let elapsed = started.elapsed();
    store.close().await;
    (writers * per_writer, elapsed, latencies)
}

/// Set in the environment of a writer child:
/// `database|conversation|count|start|durability` (start in Unix
/// milliseconds, durability `full` or `normal`); the token comes in
/// [`CHILD_TOKEN_ENV`].
const CHILD_ENV: &str = "BRIDGE_BENCH_WRITER";
const CHILD_TOKEN_ENV: &str = "BRIDGE_BENCH_TOKEN";

/// `processes` copies of this binary, each a store of its own on one database
/// file (as agents' servers are), each sending `per_process` messages in its
/// own conversation from a common start.
async fn writer_processes(
    path: &Path,
    durability: Durability,
    processes: usize,
    per_process: usize,
) -> (usize, Duration, Vec<Duration>) {
    let store = Store::open(options(path, durability)).await.expect("open");
    let durability = match durability {
        Durability::Normal => "normal",
        _ => "full",
    };
    let mut credentials = Vec::new();
    for _ in 0..processes {
        credentials.push(conversation(&store).await.0);
    }
    store.close().await;
    let start = bridge_core::Timestamp::now().as_millis() + 1_000;
    let children: Vec<_> = credentials
        .iter()
        .map(|credentials| {
            std::process::Command::new(std::env::current_exe().expect("this binary"))
                .env(
                    CHILD_ENV,
                    format!(
                        "{}|{}|{per_process}|{start}|{durability}",
                        path.display(),
                        credentials.conversation_id
                    ),
                )
                .env(CHILD_TOKEN_ENV, credentials.token.reveal())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start a writer process")
        })
        .collect();
    let mut latencies = Vec::new();
    for child in children {
        let output = child.wait_with_output().expect("writer process");
        assert!(output.status.success(), "a writer process failed");
        latencies.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| line.parse().ok())
                .map(Duration::from_nanos),
        );
    }
    let started = std::time::UNIX_EPOCH + Duration::from_millis(start as u64);
    let elapsed = std::time::SystemTime::now()
        .duration_since(started)
        .unwrap_or_default();
    (latencies.len(), elapsed, latencies)
}

/// The child side of [`writer_processes`]: prints one latency (ns) per line.
async fn writer_child(job: &str) {
    let fields: Vec<&str> = job.split('|').collect();
    let [path, conversation, count, start, durability] = fields[..] else {
        panic!("bad {CHILD_ENV}");
    };
    let durability = match durability {
        "normal" => Durability::Normal,
        _ => Durability::Full,
    };
    let token = std::env::var(CHILD_TOKEN_ENV).expect("token");
    let credentials = Credentials::parse(conversation, "a", &token).expect("credentials");
    let store = Store::open(options(Path::new(path), durability))
        .await
        .expect("open");
    let start: i64 = start.parse().expect("start");
    let wait = start - bridge_core::Timestamp::now().as_millis();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let body = "Please review the changes in src/store.rs and run the tests; report anything odd.";
    let mut out = String::new();
    for _ in 0..count.parse::<usize>().expect("count") {
        let sent = Instant::now();
        store
            .send(&credentials, NewMessage::new(body))
            .await
            .expect("send");
        out.push_str(&format!("{}\n", sent.elapsed().as_nanos()));
    }
    store.close().await;
    print!("{out}");
}

/// Latencies of consuming reads, with durability `normal`.
struct Reads {
    /// `check` consuming one message, confirmed in the same transaction.
    checked: Vec<Duration>,
    /// `deliver` of one message, acknowledging the one before (what
    /// `bridge-mcp` does for an agent that calls again).
    delivered: Vec<Duration>,
    /// `check` finding nothing.
    polling: Vec<Duration>,
}

/// Latency of consuming reads that find one message, and of a read that
/// finds nothing.
async fn checks(path: &Path, count: usize) -> Reads {
    let store = Store::open(options(path, Durability::Normal))
        .await
        .expect("open");
    let (a, b) = conversation(&store).await;
    for n in 0..2 * count {
        store
            .send(&a, NewMessage::new(format!("message {n}")))
            .await
            .expect("send");
    }
    let mut checked = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let messages = store.check(&b, 1).await.expect("check");
        checked.push(started.elapsed());
        assert_eq!(messages.len(), 1);
    }
    let mut delivered = Vec::with_capacity(count);
    let mut ack = None;
    for _ in 0..count {
        let started = Instant::now();
        let messages = store.deliver(&b, ack, 1).await.expect("deliver");
        delivered.push(started.elapsed());
        assert_eq!(messages.len(), 1);
        assert!(!messages[0].redelivered);
        ack = Some(messages[0].id);
    }
    let mut polling = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let messages = store.deliver(&b, ack, 1).await.expect("deliver");
        polling.push(started.elapsed());
        assert!(messages.is_empty());
    }
    store.close().await;
    Reads {
        checked,
        delivered,
        polling,
    }
}

/// Redaction of a 50 000-character message.
fn redaction() {
    let sentence = "The build passed; please review src/lib.rs and the migration. ";
    let clean: String = sentence
        .repeat(50_000 / sentence.len() + 1)
        .chars()
        .take(50_000)
        .collect();
    let mut dirty = clean.clone();
    for (at, secret) in [
        (1_000, "AKIAIOSFODNN7EXAMPLE"),
        (20_000, "password=hunter2"),
        (40_000, "ghp_0123456789abcdefghijABCDEFGHIJ012345"),
    ] {
        dirty.replace_range(at..at + secret.len(), secret);
    }
    for (what, text) in [("clean", &clean), ("3 secrets", &dirty)] {
        let mut samples = Vec::new();
        for _ in 0..300 {
            let started = Instant::now();
            black_box(bridge_core::redact::redact(black_box(text)));
            samples.push(started.elapsed());
        }
        report_latency(&format!("redact 50 000 characters, {what}"), &samples);
    }
}
