//! Helpers shared by the end-to-end tests: stores on temporary databases,
//! ready-made conversations, raw access to the database file for tampering,
//! re-running a test in a child process (with other environment variables,
//! or as an unprivileged user), the workspace's binaries ([`bin`]) and MCP
//! clients of `bridge-mcp` ([`mcp`], and a raw HTTP one: [`http`]), and a
//! throwaway PostgreSQL server ([`postgres`]), and headless Chromium
//! ([`browser`]).
//!
//! Every test binary runs its tests twice: on SQLite files, and again in a
//! child process on a throwaway PostgreSQL cluster
//! ([`postgres::rerun_on_postgres`]). In that child, [`TempDb`] is a fresh
//! database on the cluster instead of a file, so one test source covers both
//! stores.

pub mod bin;
pub mod browser;
pub mod daemon;
pub mod http;
pub mod mcp;
pub mod netns;
pub mod postgres;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bridge_core::{
    CreatedConversation, Credentials, Location, NewConversation, SessionId, Store, StoreOptions,
};
use sqlx::{AnyConnection, Connection, SqliteConnection};
use tempfile::TempDir;

use crate::postgres::TestDatabase;

/// Set in the environment of a child started by [`rerun_in_child`].
pub const CHILD_ENV: &str = "BRIDGE_TEST_CHILD";

/// The user id of an unprivileged user (`nobody`).
pub const NOBODY: u32 = 65534;

/// A test's store: a temporary directory with a database file inside it, or,
/// in the PostgreSQL run of the tests, a fresh database on the test cluster
/// (and the directory, for the test's other files). Everything is removed
/// when this is dropped.
pub struct TempDb {
    /// The directory, kept alive as long as the test needs it.
    pub dir: TempDir,
    /// The database, as every binary takes it (`--db`, `BRIDGE_DB`):
    /// `<dir>/bridge.db`, or the URL of this test's PostgreSQL database.
    pub path: PathBuf,
    /// The PostgreSQL database, dropped with this.
    postgres: Option<TestDatabase>,
}

impl TempDb {
    /// A new, empty store: a file path in a new temporary directory, or a
    /// new database in the PostgreSQL run.
    pub fn new() -> TempDb {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        TempDb::in_dir(dir)
    }

    /// A new, empty store for a benchmark: its directory in `$BENCH_DIR` if
    /// set (another file system, say), else the system's.
    pub fn for_bench() -> TempDb {
        let Some(parent) = std::env::var_os("BENCH_DIR") else {
            return TempDb::new();
        };
        TempDb::in_dir(tempfile::tempdir_in(parent).expect("create a temporary directory"))
    }

    fn in_dir(dir: TempDir) -> TempDb {
        match TestDatabase::create_if_on_postgres() {
            Some(database) => TempDb {
                path: PathBuf::from(database.url()),
                dir,
                postgres: Some(database),
            },
            None => TempDb {
                path: dir.path().join("bridge.db"),
                dir,
                postgres: None,
            },
        }
    }

    /// Whether this store is a PostgreSQL database (the tests' PostgreSQL
    /// run).
    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// Options for this database with the rate limit off (tests that need it
    /// turn it on); on PostgreSQL, with the run's shared key file.
    pub fn options(&self) -> StoreOptions {
        let mut options = match &self.postgres {
            Some(database) => {
                let location = Location::parse(&database.url()).expect("a PostgreSQL URL");
                let mut options = StoreOptions::at(location);
                options.key_file = postgres::key_file_of_run(&self.path);
                options
            }
            None => StoreOptions::new(&self.path),
        };
        options.rate_limit_per_minute = 0;
        options
    }

    /// Opens the store with [`TempDb::options`].
    pub async fn open(&self) -> Store {
        Store::open(self.options()).await.expect("open the store")
    }

    /// Whether the store was made: the file exists, or the PostgreSQL
    /// database has tables.
    pub fn exists(&self) -> bool {
        match &self.postgres {
            Some(database) => database.has_tables(),
            None => self.path.exists(),
        }
    }

    /// What opening this store says while it does not exist yet, and
    /// before anything made it.
    pub fn missing_error(&self) -> String {
        if self.is_postgres() {
            format!(
                "database {} holds no mcp-bridge store yet: bridge-mcp or bridgectl create makes it",
                self.path.display()
            )
        } else {
            format!("database {} does not exist", self.path.display())
        }
    }

    /// A raw connection to the database, outside the store: see
    /// [`raw_connection`].
    pub async fn raw(&self) -> AnyConnection {
        raw_connection(&self.path).await
    }

    /// What changes whenever any connection but `raw`'s own commits:
    /// SQLite's `data_version`, or the transaction that last wrote
    /// PostgreSQL's `head` rows (every batch of the store writes them).
    pub async fn commit_marker(&self, raw: &mut AnyConnection) -> String {
        let sql = if self.is_postgres() {
            "SELECT string_agg(xmin::text, ',' ORDER BY name) FROM head"
        } else {
            "SELECT CAST(data_version AS TEXT) FROM pragma_data_version"
        };
        sqlx::query_scalar(sql)
            .fetch_one(raw)
            .await
            .expect("read the commit marker")
    }

    /// Whether `needle` is stored anywhere in plain text: in the bytes of
    /// the SQLite file and its WAL, or in the text of any row of any table
    /// on PostgreSQL.
    pub async fn stores_text(&self, needle: &str) -> bool {
        if !self.is_postgres() {
            return [self.path.clone(), self.path.with_extension("db-wal")]
                .iter()
                .filter_map(|file| std::fs::read(file).ok())
                .any(|bytes| {
                    bytes
                        .windows(needle.len())
                        .any(|window| window == needle.as_bytes())
                });
        }
        let mut raw = self.raw().await;
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                .fetch_all(&mut raw)
                .await
                .expect("list the tables");
        for table in tables {
            let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} AS r WHERE strpos(r::text, $1) > 0"
            )))
            .bind(needle)
            .fetch_one(&mut raw)
            .await
            .expect("search a table");
            if rows > 0 {
                return true;
            }
        }
        false
    }
}

impl Default for TempDb {
    fn default() -> TempDb {
        TempDb::new()
    }
}

/// A raw connection to `database` (a file, or a PostgreSQL URL as in
/// [`TempDb::path`]), outside the store, for reading or tampering: in SQL
/// both databases accept, with `$n` parameters.
pub async fn raw_connection(database: &Path) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let text = database.to_string_lossy();
    let url = if text.starts_with("postgres://") {
        text.into_owned()
    } else {
        format!("sqlite://{text}")
    };
    AnyConnection::connect(&url)
        .await
        .expect("open a raw connection")
}

/// A raw SQLite connection to the file `path`, for what only SQLite has.
pub async fn raw_sqlite(path: &Path) -> SqliteConnection {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(5));
    SqliteConnection::connect_with(&options)
        .await
        .expect("open a raw connection")
}

/// One integer from a raw query, e.g. a count.
pub async fn scalar(connection: &mut AnyConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(connection)
        .await
        .expect("run a raw query")
}

/// Runs `bridgectl --json access ARGS` on `db`; its JSON answer.
pub fn access(db: &TempDb, args: &[&str]) -> serde_json::Value {
    let output = Command::new(bin::path("bridgectl"))
        .args(["--json", "access"])
        .args(args)
        .env("BRIDGE_DB", &db.path)
        .output()
        .expect("run bridgectl");
    assert!(
        output.status.success(),
        "bridgectl access {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from bridgectl")
}

/// A new access key named `name` on `db` (`bridgectl access create`).
pub fn access_key(db: &TempDb, name: &str) -> String {
    access(db, &["create", name])["key"]
        .as_str()
        .expect("the key")
        .to_owned()
}

/// A conversation and the credentials of both its sessions.
pub struct Pair {
    /// What `create_conversation` returned.
    pub created: CreatedConversation,
    /// Session `a` (the creator).
    pub a: Credentials,
    /// Session `b` (the partner).
    pub b: Credentials,
}

/// Creates a conversation between an orchestrator and a worker.
pub async fn pair(store: &Store) -> Pair {
    let created = store
        .create_conversation(NewConversation::new("orchestrator", "worker"))
        .await
        .expect("create a conversation");
    pair_of(created)
}

/// An orchestrator's conversations with `workers` workers (roles `worker
/// 0`, `worker 1`, ...), all in `team`.
pub async fn team(store: &Store, team: &str, workers: usize) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for n in 0..workers {
        let mut new = NewConversation::new("orchestrator", format!("worker {n}"));
        new.team = Some(team.into());
        let created = store
            .create_conversation(new)
            .await
            .expect("create a conversation");
        pairs.push(pair_of(created));
    }
    pairs
}

/// The credentials of both sessions of `created`.
pub fn pair_of(created: CreatedConversation) -> Pair {
    Pair {
        a: created.credentials(SessionId::A),
        b: created.credentials(SessionId::B),
        created,
    }
}

/// Whether this process runs with root's privileges (which ignore file
/// permissions).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// Whether this process is the child of [`rerun_in_child`].
pub fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs the test `name` (its full path, e.g. `open::read_only_directory`)
/// again in a child process of this test binary, with `env` added and,
/// if `uid` is given, as that user (needs root). Returns the child's output.
pub fn rerun_in_child(name: &str, env: &[(&str, &str)], uid: Option<u32>) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(std::env::current_exe().expect("find the test binary"));
    command
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1");
    for (key, value) in env {
        command.env(key, value);
    }
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    command.output().expect("run the test binary as a child")
}

/// Asserts that a child from [`rerun_in_child`] ran exactly its one test and
/// passed.
pub fn assert_child_passed(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
}
