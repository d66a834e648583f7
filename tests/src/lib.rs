//! Helpers shared by the end-to-end tests: stores on temporary databases,
//! ready-made conversations, raw access to the database file for tampering,
//! re-running a test in a child process (with other environment variables,
//! or as an unprivileged user), the workspace's binaries ([`bin`]) and MCP
//! clients of `bridge-mcp` ([`mcp`], and a raw HTTP one: [`http`]), and a
//! throwaway PostgreSQL server ([`postgres`]).

pub mod bin;
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
    CreatedConversation, Credentials, NewConversation, SessionId, Store, StoreOptions,
};
use sqlx::{Connection, SqliteConnection};
use tempfile::TempDir;

/// Set in the environment of a child started by [`rerun_in_child`].
pub const CHILD_ENV: &str = "BRIDGE_TEST_CHILD";

/// The user id of an unprivileged user (`nobody`).
pub const NOBODY: u32 = 65534;

/// A temporary directory with a database path inside it. The directory and
/// everything in it is removed when this is dropped.
pub struct TempDb {
    /// The directory, kept alive as long as the test needs it.
    pub dir: TempDir,
    /// `<dir>/bridge.db`.
    pub path: PathBuf,
}

impl TempDb {
    /// A new, empty temporary directory.
    pub fn new() -> TempDb {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("bridge.db");
        TempDb { dir, path }
    }

    /// A new, empty temporary directory for a benchmark: in `$BENCH_DIR`
    /// if set (another file system, say), else the system's.
    pub fn for_bench() -> TempDb {
        let Some(parent) = std::env::var_os("BENCH_DIR") else {
            return TempDb::new();
        };
        let dir = tempfile::tempdir_in(parent).expect("create a temporary directory");
        let path = dir.path().join("bridge.db");
        TempDb { dir, path }
    }

    /// Options for this database with the rate limit off (tests that need it
    /// turn it on).
    pub fn options(&self) -> StoreOptions {
        let mut options = StoreOptions::new(&self.path);
        options.rate_limit_per_minute = 0;
        options
    }

    /// Opens the store with [`TempDb::options`].
    pub async fn open(&self) -> Store {
        Store::open(self.options()).await.expect("open the store")
    }

    /// A raw connection to the database file, for reading or tampering.
    pub async fn raw(&self) -> SqliteConnection {
        raw_connection(&self.path).await
    }
}

impl Default for TempDb {
    fn default() -> TempDb {
        TempDb::new()
    }
}

/// A raw SQLite connection to `path`, outside the store.
pub async fn raw_connection(path: &Path) -> SqliteConnection {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(5));
    SqliteConnection::connect_with(&options)
        .await
        .expect("open a raw connection")
}

/// One integer from a raw query, e.g. a count.
pub async fn scalar(connection: &mut SqliteConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(connection)
        .await
        .expect("run a raw query")
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
