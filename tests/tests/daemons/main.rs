//! End-to-end tests of the worker daemons: `keepalive-daemon`, `fs-watcher`
//! and `check-messages`, the real binaries on temporary databases.
//!
//! Each scenario runs twice: with the daemon opening the database itself
//! (`--db`), and with it speaking MCP over HTTPS to a `bridge-mcp --http`
//! that serves the database, as on a worker machine (`--url`, a CA made for
//! the test, keys required). The same assertions hold in both; where the
//! words of a refusal differ, the scenario says which it expects.

mod check_messages;
mod fs_watcher;
mod keepalive;
mod remote;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bridge_core::Token;
use bridge_tests::TempDb;
use bridge_tests::mcp::HttpServer;
use bridge_tests::tls::{ServerFiles, TestCa};

/// Writes `token` to a file of mode 0600 in `dir`; returns its path.
fn token_file(dir: &Path, token: &Token) -> PathBuf {
    let path = dir.join(format!("{}.token", token.reveal().get(..8).unwrap_or("t")));
    std::fs::write(&path, format!("{}\n", token.reveal())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Where a scenario's daemons find the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The database file itself.
    Db,
    /// `bridge-mcp --http` over HTTPS, serving the database.
    Https,
}

/// The hub of one scenario.
struct Hub {
    /// In `Https` mode, the server, and the CA file that trusts it.
    server: Option<(HttpServer, String)>,
}

impl Hub {
    /// The hub for `mode` on `db` (a server started for `Https`).
    fn start(mode: Mode, db: &TempDb) -> Hub {
        let server = (mode == Mode::Https).then(|| serve(db));
        Hub { server }
    }

    /// `more`, with what points a daemon at this hub.
    fn env<'a>(&'a self, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = more.to_vec();
        if let Some((server, ca_file)) = &self.server {
            env.push(("BRIDGE_URL", server.url.as_str()));
            env.push(("BRIDGE_CA_FILE", ca_file.as_str()));
        }
        env
    }
}

/// `bridge-mcp --http --require-auth` with TLS on `db`, and the path of
/// the PEM file of the CA that signed its certificate.
fn serve(db: &TempDb) -> (HttpServer, String) {
    let (files, ca_file) = tls(db);
    let server = HttpServer::start_tls(&db.path, &files, &["--require-auth"]);
    (server, ca_file)
}

/// A CA, its PEM file, and a server certificate for 127.0.0.1, in `db`'s
/// directory.
fn tls(db: &TempDb) -> (ServerFiles, String) {
    let ca = TestCa::new();
    let dir = db.dir.path().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let files = ca.server_files(&["127.0.0.1"], &dir);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (files, ca_file.to_str().unwrap().to_owned())
}

/// Declares a scenario `async fn NAME(mode: Mode)` and two tests that run
/// it: `NAME::over_db` and `NAME::over_https`.
macro_rules! in_both_modes {
    ($(#[$meta:meta])* async fn $name:ident($mode:ident: Mode) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn scenario($mode: Mode) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_db() {
                scenario(Mode::Db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_https() {
                scenario(Mode::Https).await;
            }
        }
    };
}

pub(crate) use in_both_modes;

/// Every test of this binary again, on PostgreSQL.
#[tokio::test]
async fn every_test_on_postgres() {
    bridge_tests::postgres::rerun_on_postgres(
        "every_test_on_postgres",
        &[(
            "keepalive::it_waits_for_a_database_created_after_it_started",
            "moves a database file into place (waiting for a PostgreSQL store: \
             orchestrator's watchdog::bad_arguments_and_a_missing_database_are_clear_errors)",
        )],
    )
    .await;
}
