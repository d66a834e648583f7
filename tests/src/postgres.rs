//! A throwaway PostgreSQL server per test: a cluster of its own (`initdb`
//! into a temporary directory), on a free loopback port with password
//! authentication, and its Unix socket in that directory. Run as an
//! unprivileged user when the tests run as root (PostgreSQL refuses root),
//! and stopped when dropped.
//!
//! [`rerun_on_postgres`] runs a whole test binary again on one such server,
//! each test on a database of its own ([`TestDatabase`]).
//!
//! The server programs are Debian's (`/usr/lib/postgresql/<version>/bin`),
//! or those of `pg_config --bindir`, or of `BRIDGE_PG_BINDIR`. Without them
//! [`PgServer::start`] returns `None` and says once per test process that
//! the PostgreSQL half did not run; with `BRIDGE_REQUIRE_POSTGRES=1` (set by
//! `.ci/run`, which installs them) their absence fails the test instead.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use bridge_core::{Location, Store, StoreOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tempfile::TempDir;

use crate::NOBODY;
use crate::tls::TestCa;

/// In a test process of the PostgreSQL run: the URL of its server, without
/// a database or password (`postgres://USER@HOST:PORT`; the password is in
/// `PGPASSWORD`).
pub const SERVER_ENV: &str = "BRIDGE_TEST_POSTGRES";

/// The server key file every store of the PostgreSQL run shares (the
/// variable every binary reads).
const KEY_FILE_ENV: &str = "BRIDGE_KEY_FILE";

/// The superuser of every test cluster.
pub const SUPERUSER: &str = "bridge";

/// Settings under which the server counts, per statement, the calls and
/// the time spent (`pg_stat_statements`, statements inside functions
/// included) and, per function, its time (`pg_stat_user_functions`): where
/// a benchmark's server time went. The extension must then be created in a
/// database (`CREATE EXTENSION pg_stat_statements`) to read the counts.
pub const STATEMENT_STATISTICS: &[&str] = &[
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=all",
    "track_functions=all",
];

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running PostgreSQL server of one test.
pub struct PgServer {
    /// Data directory, socket and log; removed after the server stopped.
    dir: TempDir,
    /// How it is started, again by [`PgServer::restart`].
    command: Command,
    child: Child,
    port: u16,
    password: String,
}

impl PgServer {
    /// Starts a new cluster; `None` if PostgreSQL is not installed (and not
    /// required). Panics if it is installed but does not start.
    pub async fn start() -> Option<PgServer> {
        PgServer::launch(None, false, &[]).await
    }

    /// Starts a new cluster as [`PgServer::start`] does, but durable as a
    /// production server is: PostgreSQL's defaults (`fsync`,
    /// `synchronous_commit` and `full_page_writes` on), so that every
    /// commit waits for its WAL to reach the disk. For the benchmarks.
    pub async fn start_durable() -> Option<PgServer> {
        PgServer::launch(None, true, &[]).await
    }

    /// Starts a new cluster as [`PgServer::start`] does (durable as
    /// [`PgServer::start_durable`] if `durable`), with `settings` added
    /// (`name=value`, as `postgres -c` takes them): [`STATEMENT_STATISTICS`],
    /// say.
    pub async fn start_with(durable: bool, settings: &[&str]) -> Option<PgServer> {
        PgServer::launch(None, durable, settings).await
    }

    /// Starts a new cluster as [`PgServer::start`] does, speaking TLS with a
    /// certificate for 127.0.0.1 signed by `ca`.
    pub async fn start_with_tls(ca: &TestCa) -> Option<PgServer> {
        PgServer::launch(Some(ca), false, &[]).await
    }

    async fn launch(tls: Option<&TestCa>, durable: bool, settings: &[&str]) -> Option<PgServer> {
        let Some(bin) = server_programs() else {
            static SAID: Once = Once::new();
            assert!(
                std::env::var_os("BRIDGE_REQUIRE_POSTGRES").is_none_or(|value| value != "1"),
                "BRIDGE_REQUIRE_POSTGRES=1 but no PostgreSQL server programs were found \
                 (initdb, postgres); install Debian's postgresql or set BRIDGE_PG_BINDIR"
            );
            SAID.call_once(|| {
                // Straight to stderr: the test harness hides what a passing
                // test prints with `eprintln!`.
                let _ = writeln!(
                    std::io::stderr(),
                    "note: PostgreSQL is not installed here, so the tests on a PostgreSQL store \
                     did not run (install Debian's postgresql to run them; .ci/run does)"
                );
            });
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("bridge-pg-")
            .tempdir()
            .expect("temporary directory");
        let mut secret = [0_u8; 16];
        getrandom::fill(&mut secret).expect("random bytes");
        let password = hex::encode(secret);
        let pwfile = dir.path().join("pwfile");
        fs::File::create(&pwfile)
            .and_then(|mut file| writeln!(file, "{password}"))
            .expect("write the password file");
        let data = dir.path().join("data");
        let as_root = rustix::process::geteuid().is_root();
        if as_root {
            // The unprivileged user owns the cluster; the directory around
            // it must let that user in.
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
                .expect("open the directory to the cluster's owner");
            chown(&pwfile, Some(NOBODY), None).expect("hand the password file over");
            fs::create_dir(&data).expect("data directory");
            chown(&data, Some(NOBODY), None).expect("hand the data directory over");
            chown(dir.path(), Some(NOBODY), None).expect("hand the directory over");
        }
        let initdb = run_as(as_root, &bin.join("initdb"))
            .arg("--pgdata")
            .arg(&data)
            .args(["--username", SUPERUSER, "--auth-local=trust"])
            .args(["--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C"])
            .arg("--pwfile")
            .arg(&pwfile)
            .arg("--no-sync")
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_port();
        fs::File::create(dir.path().join("server.log")).expect("server log");
        if as_root {
            chown(dir.path().join("server.log"), Some(NOBODY), None).expect("hand the log over");
        }
        let mut tls_settings = Vec::new();
        if let Some(ca) = tls {
            let files = ca.server_files(&["127.0.0.1"], dir.path());
            if as_root {
                for file in [&files.certificate, &files.key] {
                    chown(file, Some(NOBODY), None).expect("hand the TLS files over");
                }
            }
            tls_settings = vec![
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", files.certificate.display()),
                format!("ssl_key_file={}", files.key.display()),
            ];
        }
        let mut arguments: Vec<String> = tls_settings
            .into_iter()
            .flat_map(|setting| ["-c".to_owned(), setting])
            .collect();
        arguments.extend([
            "-D".to_owned(),
            data.display().to_string(),
            "-p".to_owned(),
            port.to_string(),
            "-c".to_owned(),
            "listen_addresses=127.0.0.1".to_owned(),
            "-k".to_owned(),
            dir.path().display().to_string(),
        ]);
        // Room for a whole test binary at once: each store has a pool. A
        // test's data need not survive a power cut: no syncs, unless asked.
        let no_syncs = [
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
        ];
        let no_syncs = if durable { &[][..] } else { &no_syncs[..] };
        for setting in no_syncs
            .iter()
            .chain(&["max_connections=400"])
            .chain(settings)
        {
            arguments.extend(["-c".to_owned(), (*setting).to_owned()]);
        }
        let mut command = run_as(as_root, &bin.join("postgres"));
        command.args(arguments);
        let child = spawn(&mut command, &dir);
        let server = PgServer {
            dir,
            command,
            child,
            port,
            password,
        };
        server.wait_until_ready().await;
        Some(server)
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The URL of `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.server_url())
    }

    /// The URL of the server as the superuser, without a database.
    fn server_url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}",
            self.password, self.port
        )
    }

    /// Creates an empty database named `name` (letters, digits and
    /// underscores); returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "a plain database name: {name}"
        );
        let mut connection = self.connect("postgres").await;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await
            .expect("create database");
        connection.close().await.expect("close");
        self.url(name)
    }

    /// A connection to `database` as the superuser.
    pub async fn connect(&self, database: &str) -> PgConnection {
        PgConnection::connect(&self.url(database))
            .await
            .expect("connect to the test server")
    }

    /// What the server wrote to its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    async fn wait_until_ready(&self) {
        let started = Instant::now();
        loop {
            match PgConnection::connect(&self.url("postgres")).await {
                Ok(connection) => {
                    let _ = connection.close().await;
                    return;
                }
                Err(error) => assert!(
                    started.elapsed() < START_TIMEOUT,
                    "postgres did not accept connections within {START_TIMEOUT:?}: {error}\n{}",
                    self.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl PgServer {
    /// Stops the server (fast shutdown: its clients are disconnected, what
    /// they had not committed is rolled back) and starts it again on the
    /// same data and port; returns once it accepts connections.
    pub async fn restart(&mut self) {
        self.stop();
        self.child = spawn(&mut self.command, &self.dir);
        self.wait_until_ready().await;
    }

    /// Fast shutdown (`SIGINT`: disconnect clients, stop), then waits;
    /// `SIGKILL` if it has not stopped within 10 s.
    fn stop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` (the server), its log appended to the directory's.
fn spawn(command: &mut Command, dir: &TempDir) -> Child {
    let log = fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("server.log"))
        .expect("open the server log");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start postgres")
}

/// The directory of `initdb` and `postgres` (and the other programs of the
/// same installation, `pgbench` say), if installed.
pub fn server_programs() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("BRIDGE_PG_BINDIR") {
        return Some(PathBuf::from(dir)).filter(|dir| has_both(dir));
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_both(&dir) {
            return Some(dir);
        }
    }
    // Debian's packages: the newest version installed.
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|dir| has_both(dir))
        .collect();
    versions.sort_by_key(|dir| {
        dir.parent()
            .and_then(Path::file_name)
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
    });
    versions.pop()
}

/// `program`, run as the unprivileged user when `as_root`.
fn run_as(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid",
                &NOBODY.to_string(),
                "--regid",
                &NOBODY.to_string(),
            ])
            .arg("--clear-groups")
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Runs every test of this test binary again, on PostgreSQL: starts a
/// server, makes the server key the run shares, and runs the binary in a
/// child process with [`SERVER_ENV`], `PGPASSWORD` and `BRIDGE_KEY_FILE` set, so that
/// each [`crate::TempDb`] there is a fresh database on that server. The
/// child skips `this` (the test calling it) and `not_on_postgres`: `(name
/// filter, why)` of the tests that are about the SQLite file itself. Asserts
/// that every test passed, showing the child's output if not; says once and
/// returns if PostgreSQL is not installed.
pub async fn rerun_on_postgres(this: &str, not_on_postgres: &[(&str, &str)]) {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let keys = tempfile::tempdir().expect("temporary directory");
    let key_file = keys.path().join("server.key");
    let mut options = StoreOptions::at(
        Location::parse(&server.create_database("bridge_setup").await).expect("a URL"),
    );
    options.key_file = Some(key_file.clone());
    Store::open(options)
        .await
        .expect("make the run's server key")
        .close()
        .await;

    let mut command =
        tokio::process::Command::new(std::env::current_exe().expect("find the test binary"));
    command.args(["--skip", this]);
    for (filter, _) in not_on_postgres {
        command.args(["--skip", filter]);
    }
    // The password travels as PGPASSWORD, as an operator's would: URLs
    // without it are what every message shows.
    let output = command
        .env(
            SERVER_ENV,
            format!("postgres://{SUPERUSER}@127.0.0.1:{}", server.port),
        )
        .env("PGPASSWORD", server.password())
        .env(KEY_FILE_ENV, &key_file)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the tests failed on PostgreSQL:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log()
    );
    let summary = stdout
        .lines()
        .find(|line| line.starts_with("test result:"))
        .unwrap_or("no summary");
    eprintln!("on PostgreSQL: {summary}");
    for (filter, why) in not_on_postgres {
        eprintln!("not run on PostgreSQL: {filter} ({why})");
    }
}

/// The server key file of the PostgreSQL run for `database`, if this
/// process is that run and `database` one of its databases.
pub fn key_file_of_run(database: &Path) -> Option<PathBuf> {
    let server = std::env::var(SERVER_ENV).ok()?;
    database
        .to_str()
        .is_some_and(|url| url.starts_with(&format!("{server}/")))
        .then(|| std::env::var_os(KEY_FILE_ENV).map(PathBuf::from))
        .flatten()
}

/// A test's own database on the server of the PostgreSQL run, dropped (and
/// its connections ended) when this is dropped.
pub struct TestDatabase {
    server: String,
    name: String,
}

impl TestDatabase {
    /// A new, empty database if this process is the PostgreSQL run of its
    /// tests ([`SERVER_ENV`] is set); `None` otherwise.
    pub fn create_if_on_postgres() -> Option<TestDatabase> {
        let server = std::env::var(SERVER_ENV).ok()?;
        let mut suffix = [0_u8; 8];
        getrandom::fill(&mut suffix).expect("random bytes");
        let database = TestDatabase {
            server,
            name: format!("test_{}", hex::encode(suffix)),
        };
        database
            .administer(format!("CREATE DATABASE {}", database.name))
            .expect("create a test database");
        Some(database)
    }

    /// Its URL, as the superuser.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// Whether anything made tables in it.
    pub fn has_tables(&self) -> bool {
        let url = self.url();
        on_a_thread(async move {
            let mut connection = PgConnection::connect(&url)
                .await
                .map_err(|error| error.to_string())?;
            let tables: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_one(&mut connection)
            .await
            .map_err(|error| error.to_string())?;
            let _ = connection.close().await;
            Ok(tables > 0)
        })
        .expect("count the tables of a test database")
    }

    /// Runs `statement` on the server's `postgres` database.
    fn administer(&self, statement: String) -> Result<(), String> {
        let url = format!("{}/postgres", self.server);
        on_a_thread(async move {
            let mut connection = PgConnection::connect(&url)
                .await
                .map_err(|error| error.to_string())?;
            let result = sqlx::raw_sql(AssertSqlSafe(statement))
                .execute(&mut connection)
                .await;
            let _ = connection.close().await;
            result.map(drop).map_err(|error| error.to_string())
        })
    }
}

/// Runs `work` to its end on a thread and runtime of its own (callers may be
/// inside a runtime or not).
fn on_a_thread<T: Send + 'static>(
    work: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?
            .block_on(work)
    })
    .join()
    .unwrap_or_else(|_| Err("the thread panicked".to_owned()))
}

impl Drop for TestDatabase {
    /// Drops the database; a failure only leaves it to the server's own
    /// removal at the end of the run (a drop must not panic).
    fn drop(&mut self) {
        let _ = self.administer(format!("DROP DATABASE {} WITH (FORCE)", self.name));
    }
}
